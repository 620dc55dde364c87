"""Recordings as heard: the caller left as sent, the bot right as the phone played it."""

import asyncio
import base64
import io
import json
import os
import random
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import phone_call
from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.audio import BYTES_PER_MS, ULAW_SILENCE, ulaw_to_pcm16
from pipecat_realtime_twilio.phone.output import CHUNK_MS
from pipecat_realtime_twilio.phone.recording import CallRecorder, Placement, wav_size
from pipecat_realtime_twilio.phone.serializer import TwilioSerializer
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.sounds import silence, tone

MS = BYTES_PER_MS
SILENT = bytes([ULAW_SILENCE])
T0 = 1000.0  # loop time the stream started at, in the unit tests
DELAY = 0.001  # Twilio -> runner, the quickest


def noise(ms: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(ms * MS)


def read_wav(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A recording's channels as int16 arrays, after checking its format."""
    with wave.open(io.BytesIO(data)) as file:
        assert (file.getnchannels(), file.getframerate(), file.getsampwidth()) == (2, 8000, 2)
        frames = np.frombuffer(file.readframes(file.getnframes()), "<i2").reshape(-1, 2)
    return frames[:, 0], frames[:, 1]


def pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(ulaw), "<i2")


def stream_caller(recorder: CallRecorder, packets: int, jitter_seed: int = 7) -> bytes:
    """Feed ``packets`` 20 ms caller packets, as Twilio sends them, with arrival jitter."""
    jitter = random.Random(jitter_seed)
    sent = bytearray()
    for k in range(packets):
        audio = noise(20, 1000 + k)
        delay = DELAY if k == 3 else DELAY + jitter.uniform(0, 0.008)
        recorder.caller_audio(audio, k * 20, T0 + k * 0.020 + delay)
        sent += audio
    return bytes(sent)


class Phone:
    """Plays bot chunks the way the runner's output reports them to the recorder."""

    def __init__(self, recorder: CallRecorder):
        self.recorder = recorder
        self.marks = 0

    def mark(self) -> str:
        self.marks += 1
        return f"m{self.marks}"

    def run(self, chunks: list[bytes], *, sent: float, plays: list[float | None]) -> list[str]:
        """Send a run of chunks at stream time ``sent``; echo chunk k when it ended at plays[k]."""
        start = self.mark()
        names = []
        for index, chunk in enumerate(chunks):
            name = self.mark()
            self.recorder.bot_sent(chunk, name, T0 + sent, start_mark=start if index == 0 else None)
            names.append(name)
        self.recorder.bot_echoed(start, T0 + sent + 2 * DELAY)
        for name, ended in zip(names, plays, strict=True):
            if ended is not None:
                self.recorder.bot_echoed(name, T0 + ended + DELAY)
        return names


def test_the_caller_channel_is_what_was_sent_placed_by_timestamp():
    recorder = CallRecorder()
    a, b, c, d, e = (noise(20, seed) for seed in range(5))
    recorder.caller_audio(a, 0, T0)
    recorder.caller_audio(b, 20, T0 + 0.02)
    recorder.caller_audio(c, 100, T0 + 0.10)  # 60 ms never came: silence there
    recorder.caller_audio(d, 60, T0 + 0.12)  # late (behind what was written): goes after
    recorder.caller_audio(e, None, T0 + 0.14)  # no timestamp: after the last
    recorder.caller_audio(a, 10**9, T0 + 0.16)  # a timestamp from nowhere: not believed
    assert recorder.frames == 6 * 20 * MS + 60 * MS
    left, right = recorder.channels()
    assert left == a + b + SILENT * (60 * MS) + c + d + e + a
    assert right == SILENT * recorder.frames  # the bot never spoke


def test_the_bot_channel_is_placed_by_the_mark_echoes_with_gaps_and_a_cut():
    recorder = CallRecorder()
    caller = stream_caller(recorder, 150)  # 3 s
    phone = Phone(recorder)
    chunk = [noise(40, 100 + k) for k in range(20)]

    # Run 1: plays from 120 ms; two echoes late (the least delayed ones place it: the
    # phone did not run dry, as the next echo shows), none for the last chunk (the call
    # went on: it is placed right after the others).
    ends = [0.120 + 0.040 * (k + 1) for k in range(5)]
    ends[1] += 0.015
    ends[2] += 0.045
    ends[4] = None
    phone.run(chunk[0:5], sent=0.100, plays=ends)

    # Run 2: the phone ran dry for 60 ms before its third chunk.
    ends = [1.040, 1.080, 1.180, 1.220, 1.260]
    phone.run(chunk[5:10], sent=1.000, plays=ends)

    # Run 3: cut by a clear 150 ms into it; the clock says 2000 bytes were not played.
    phone.run(chunk[10:20], sent=2.000, plays=[2.060, 2.100, 2.140, None, None, *[None] * 5])
    recorder.bot_cleared(10 * 40 * MS - 150 * MS, T0 + 2.170)
    recorder.bot_echoed("m20", T0 + 2.171)  # a flushed mark's echo: ignored

    assert recorder.placements() == [
        Placement(960, 0, 5 * 320),
        Placement(1000 * MS, 5 * 320, 7 * 320),
        Placement(1140 * MS, 7 * 320, 10 * 320),
        Placement(2020 * MS, 10 * 320, 10 * 320 + 150 * MS),
    ]
    expected = bytearray(SILENT * len(caller))
    bot = b"".join(chunk)
    for piece in recorder.placements():
        expected[piece.sample : piece.sample + piece.stop - piece.start] = bot[
            piece.start : piece.stop
        ]
    left, right = recorder.channels()
    assert (left, right) == (caller, bytes(expected))

    wav = recorder.wav()
    assert len(wav) == wav_size(len(caller)) == recorder.wav_bytes
    left_pcm, right_pcm = read_wav(wav)
    assert np.array_equal(left_pcm, pcm(caller))
    assert np.array_equal(right_pcm, pcm(bytes(expected)))
    assert recorder.duration_s == 3.0


def test_a_run_that_starts_within_a_packet_of_the_last_one_follows_it_on():
    """Two runs whose echoes put them a few samples apart (or overlapping) were one stretch
    on the phone, which plays whole 20 ms packets: no hole, no overlap between them."""
    recorder = CallRecorder()
    caller = stream_caller(recorder, 50)  # 1 s
    phone = Phone(recorder)
    first, second, third, fourth = (noise(40, seed) for seed in range(4))
    phone.run([first], sent=0.100, plays=[0.160])  # played 0.120 to 0.160
    phone.run([second], sent=0.150, plays=[0.2004])  # echoes say from 0.1604: 3 samples on
    phone.run([third], sent=0.190, plays=[0.2396])  # from 0.1996: 3 samples too early
    phone.run([fourth], sent=0.290, plays=[0.340])  # 60 ms of silence before it: real
    assert recorder.placements() == [
        Placement(120 * MS, 0, 320),
        Placement(160 * MS, 320, 640),
        Placement(200 * MS, 640, 960),
        Placement(300 * MS, 960, 1280),
    ]
    _, right = recorder.channels()
    assert right[120 * MS : 340 * MS] == first + second + third + SILENT * (60 * MS) + fourth
    assert len(right) == len(caller)


def test_echoes_read_late_with_the_caller_audio_are_placed_where_they_played():
    # From 1 s on, everything the runner reads comes 100 ms late (a busy loop, a slower
    # route): the caller's packets tell, and the echoes read then are placed as played.
    recorder = CallRecorder()
    for k in range(106):  # to 2.1 s; the rest comes after the echoes
        lag = 0.1 if k >= 50 else 0.0
        recorder.caller_audio(noise(20, k), k * 20, T0 + k * 0.020 + DELAY + lag)
    phone = Phone(recorder)
    chunks = [noise(40, 200 + k) for k in range(5)]
    start = phone.mark()
    for index, chunk in enumerate(chunks):
        name = phone.mark()
        recorder.bot_sent(chunk, name, T0 + 2.0, start_mark=start if index == 0 else None)
        recorder.bot_echoed(name, T0 + 2.02 + 0.04 * (index + 1) + DELAY + 0.1)
    assert recorder.placements() == [Placement(2020 * MS, 0, 5 * 320)]


def test_bot_audio_after_the_stream_or_before_it_is_not_in_the_recording():
    recorder = CallRecorder()
    phone = Phone(recorder)
    early = noise(40, 1)
    phone.run([early], sent=-0.030, plays=[0.010])  # 30 ms of it before the stream began
    caller = stream_caller(recorder, 10)  # 200 ms
    late = noise(200, 2)
    phone.run([late], sent=0.100, plays=[0.300])  # half of it after the caller's last packet
    left, right = recorder.channels()
    assert left == caller
    assert right[: 10 * MS] == early[30 * MS :]
    assert right[100 * MS :] == late[: 100 * MS]


def test_a_recording_keeps_at_most_its_length_and_says_so():
    warnings: list[str] = []
    sink = logger.add(warnings.append, level="WARNING", format="{message}")
    try:
        recorder = CallRecorder(max_secs=0.1)
        stream_caller(recorder, 10)
        phone = Phone(recorder)
        phone.run([noise(300, 3)], sent=0.0, plays=[0.3])
    finally:
        logger.remove(sink)
    assert [w for w in warnings if "Recording full" in w] != []
    assert len(warnings) == 1  # once per call
    assert recorder.frames == 100 * MS
    left, right = recorder.channels()
    assert len(left) == len(right) == 100 * MS
    assert len(recorder.wav()) == wav_size(100 * MS)


def test_with_no_caller_audio_the_recording_is_empty():
    recorder = CallRecorder()
    Phone(recorder).run([noise(40, 4)], sent=0.0, plays=[0.04])
    assert recorder.frames == 0
    assert read_wav(recorder.wav())[0].size == 0


async def test_the_serializer_records_every_packet_of_the_caller_by_its_timestamp():
    serializer = TwilioSerializer("MZ" + "0" * 32, "CA" + "0" * 32)
    serializer.recorder = recorder = CallRecorder()
    a, b, c = noise(20, 1), noise(20, 2), noise(20, 3)

    def media(audio: bytes, timestamp) -> str:
        payload = base64.b64encode(audio).decode()
        return json.dumps({"event": "media", "media": {"payload": payload, "timestamp": timestamp}})

    frames = [
        await serializer.deserialize(media(a, "0")),
        await serializer.deserialize(media(b, "40")),  # 20 ms lost on the way: silence
        await serializer.deserialize(media(c, {"odd": True})),  # not a time: right after
    ]
    assert all(isinstance(frame, InputAudioRawFrame) for frame in frames)  # none dropped
    assert recorder.channels()[0] == a + SILENT * (20 * MS) + b + c


# --- a real call ------------------------------------------------------------------------------


def played_before(caller, when: float) -> int:
    """Bytes the simulated phone had played by loop time ``when`` (whole frames at their tick)."""
    return sum(played for at, played, _ in caller.playback if at <= when)


def find(haystack: np.ndarray, needle: np.ndarray, near: int, within: int) -> int | None:
    """Where ``needle`` starts in ``haystack`` within ``within`` samples of ``near``."""
    for offset in sorted(range(-within, within + 1), key=abs):
        at = near + offset
        if 0 <= at and np.array_equal(haystack[at : at + len(needle)], needle):
            return at
    return None


@pytest.mark.call
async def test_a_call_is_recorded_as_heard_with_the_barge_in_cut(tmp_path: Path):
    tolerance = CHUNK_MS * MS  # the cut: the playback clock's own bound (one chunk)
    placing = 30 * MS  # where a run starts: the phone's 20 ms frames, and loop jitter
    long_answer, short_answer = os.urandom(4000 * MS), os.urandom(1200 * MS)
    clears: list[float] = []

    def pipeline(call):
        output = call.output()
        send = output._client.send

        async def note_clears(data):
            if '"event":"clear"' in data:
                clears.append(asyncio.get_running_loop().time())
            await send(data)

        output._client.send = note_clears
        return [call.input(), RealtimeAgent(instructions="You are a test bot."), output]

    settings = {"record_calls": True, "recordings_dir": str(tmp_path)}
    replies = [Reply(audio=long_answer), Reply(audio=short_answer)]
    async with phone_call(pipeline=pipeline, settings=settings, replies=replies) as (
        _,
        runner,
        caller,
    ):
        await caller.call()
        await caller.say(tone(600) + silence(700))
        await caller.wait_heard(1500, timeout=10)
        await caller.say(tone(800) + silence(800))
        await caller.wait_until(lambda: caller.clears, timeout=5, message="a clear")
        await caller.wait_quiet(after=len(caller.heard), quiet_ms=800, timeout=10)
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        recording = record.recording
        assert recording is not None
        wav = await runner.recordings.read(recording["location"])

    assert wav is not None and Path(recording["location"]).is_relative_to(tmp_path)
    assert recording["location"].endswith(f"/{caller.call_sid}.wav")
    assert recording["bytes"] == len(wav)
    assert (recording["sample_rate"], recording["channels"]) == (8000, 2)
    left, right = read_wav(wav)
    assert recording["duration_s"] == pytest.approx(len(left) / 8000, abs=0.001)

    # Left: the caller's audio, sample for sample, as the simulator sent it.
    assert np.array_equal(left, pcm(bytes(caller.sent_audio)))

    # Right: each run the phone played, where it played it: the answer up to the barge-in,
    # then the answer to it, byte for byte; nothing of the cleared tail.
    runs = caller.played_runs()
    assert len(runs) == 2, [(at, len(audio)) for at, audio in runs]
    (cut_at, cut_run), (answer_at, answer_run) = runs
    assert long_answer.startswith(cut_run) and answer_run == short_answer

    head = pcm(cut_run[: 100 * MS])
    found = find(right, head, cut_at, placing)
    assert found is not None, "the cut answer is not where the phone played it"
    recorded = right[found : found + len(cut_run) + tolerance]
    played = pcm(long_answer[: len(recorded)])
    same = int(np.argmin(recorded == played)) if not np.all(recorded == played) else len(played)
    # Heard as played up to the cut. The cut is the runner's estimate of where the phone
    # was when the clear reached it: within the tolerance of what the phone had played
    # when the clear left the runner (the simulated phone plays in whole 20 ms frames, and
    # the loopback alone sometimes takes 20 ms to deliver the clear, which is not the
    # runner's doing), and never beyond what it played (4 samples: silence is a μ-law code
    # random audio has too).
    [clear_sent_at] = clears
    played_at_clear = played_before(caller, clear_sent_at)
    assert abs(same - played_at_clear) <= tolerance, (same, played_at_clear, len(cut_run))
    assert same <= len(cut_run) + 4, (same, len(cut_run))
    assert np.all(right[found + same : found + len(cut_run) + tolerance] == 0)

    found = find(right, pcm(answer_run[: 100 * MS]), answer_at, placing)
    assert found is not None, "the answer is not where the phone played it"
    assert np.array_equal(right[found : found + len(answer_run)], pcm(answer_run))
    # Nothing else was played: silence around the two runs.
    rest = right.copy()
    rest[found : found + len(answer_run)] = 0
    cut_start = find(right, head, cut_at, placing)
    assert cut_start is not None
    rest[cut_start : cut_start + same] = 0
    assert not np.any(rest)
