#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The call as heard: a two-channel 8 kHz WAV, the caller left and the bot right, on one clock.

:class:`CallRecorder` listens to the phone's two sides while the call goes on
(the serializer tells it what the caller sent, the output what went to the
phone and what the phone said it played) and renders the recording once the
call is over (:meth:`CallRecorder.wav`). The runner gives every call one when
``RECORD_CALLS`` is on; elsewhere, before the call runs::

    recorder = CallRecorder()
    call.serializer.recorder = call.output().recorder = recorder
    await call.run([...])
    wav = recorder.wav()  # off the event loop for a long call: asyncio.to_thread

**The clock** is the stream's own: 8 kHz samples since it started, Twilio's
``media`` ``timestamp`` (milliseconds since the stream started).

**Left, the caller**: the μ-law bytes of every ``media`` message exactly as
received (caller audio the inbound budget drops is recorded too: the caller said
it), at its ``timestamp`` when that is ahead of what was written (the gap is
silence), else right after it. A timestamp that leads the wall clock by more than
:data:`MAX_TIMESTAMP_LEAD_SECS` is not believed (the packet goes right after the
last one).

**Right, the bot as the phone played it.** Twilio says only when the phone has
played up to a mark, so this is the best estimate the marks allow:

- Twilio's messages to the runner (caller audio, mark echoes) travel the same way
  and are read in turn, so the caller's packets tie the runner's clock to the
  stream's: an echo read at loop time ``t`` happened at stream time ``t - origin``,
  ``origin`` from the quickest of the last :data:`ORIGIN_WINDOW_PACKETS` packets
  (a slower network, or a busy event loop, delays both alike).
- Audio sent to an idle phone starts a *run*; the phone plays a run without a
  break. Each chunk's mark echo says where the chunk ended, hence where the run
  started; of these the earliest (the least delayed echo) places the run. Echoes
  more than :data:`GAP_MS` later than the run so far mean the phone ran dry
  before that chunk: the rest of the run starts later (unless later echoes show
  it was only a late echo).
- A ``clear`` cuts the run where the output's playback clock says the phone was
  when the clear reached it (the same estimate the model's memory is truncated
  at); none of the dropped audio is in the recording. Twilio tells nothing finer
  than marks: the cut is right within the clock's error (a chunk, at most), not to
  the sample.
- Nothing is placed before the end of the previous run, nor after the caller's
  last packet (the stream was over).

**Memory**: both sides are kept as μ-law bytes, 16 KB per second of call (about
57 MB an hour), at most :data:`MAX_RECORDING_SECS` (what comes after is not
recorded, and a warning says so). The hot path only appends bytes (no decoding
per packet); decoding and the WAV happen once, in :meth:`CallRecorder.wav`.
"""

import io
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from loguru import logger

from pipecat_realtime_twilio.audio import (
    BYTES_PER_MS,
    FRAME_MS,
    SAMPLE_RATE,
    ULAW_SILENCE,
    ulaw_to_pcm16,
)

MAX_RECORDING_SECS = 2 * 3600
"""The most of a call a recording holds, in seconds."""

GAP_MS = FRAME_MS
"""A chunk's echo this much later than its run so far: the phone ran dry before it."""

MAX_TIMESTAMP_LEAD_SECS = 5.0
"""A caller packet's timestamp may lead the stream's time by the wall clock this much."""

ORIGIN_WINDOW_PACKETS = 50
"""Caller packets (a second's) whose quickest ties the runner's clock to the stream's."""

WAV_HEADER_BYTES = 44
"""The header of a PCM WAV file as the ``wave`` module writes it."""

CHANNELS = 2
SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
_RENDER_BLOCK = SAMPLE_RATE * 60  # samples decoded and interleaved at once


def wav_size(frames: int) -> int:
    """The size in bytes of the recording WAV of ``frames`` samples per channel.

    Args:
        frames: Samples per channel.

    Returns:
        Header and data.
    """
    return WAV_HEADER_BYTES + frames * CHANNELS * SAMPLE_WIDTH


_When = tuple[float, float | None]  # loop time, and the loop time of sample 0 then (if known)


@dataclass(slots=True)
class _Chunk:
    end: int  # position in the bot's bytes after the chunk
    echoed: _When | None = None


@dataclass(slots=True)
class _Run:
    start: int  # position in the bot's bytes where the run begins
    first_chunk: int
    sent: _When
    start_echoed: _When | None = None
    cut: int | None = None  # position after the last byte the phone played (a clear)


@dataclass(frozen=True, slots=True)
class Placement:
    """Bot audio where the phone played it: ``bot[start:stop]`` from stream sample ``sample``."""

    sample: int
    start: int
    stop: int


class CallRecorder:
    """What the caller sent and what the phone played, on the stream's clock.

    The serializer and the phone output call the ``caller_audio``, ``bot_sent``,
    ``bot_echoed`` and ``bot_cleared`` hooks with ``loop.time()``; each appends
    to a buffer or notes a time. :meth:`wav` renders the recording.
    """

    def __init__(self, *, max_secs: float = MAX_RECORDING_SECS):
        """Initialize an empty recording.

        Args:
            max_secs: The most of the call recorded, in seconds.
        """
        self._max_bytes = int(max_secs * SAMPLE_RATE)
        self._caller = bytearray()
        self._origin: float | None = None  # loop time of the stream's sample 0 (earliest)
        self._recent: deque[float] = deque(maxlen=ORIGIN_WINDOW_PACKETS)  # the same, lately
        self._bot = bytearray()  # every byte sent to the phone, in order
        self._chunks: list[_Chunk] = []
        self._runs: list[_Run] = []
        self._marks: dict[str, int] = {}  # pending mark -> chunk index (a run's: -1 - run index)
        self._full_warned = False

    @property
    def frames(self) -> int:
        """Samples per channel the recording has: the caller's stream, as it came."""
        return len(self._caller)

    @property
    def duration_s(self) -> float:
        """Seconds the recording lasts."""
        return self.frames / SAMPLE_RATE

    @property
    def wav_bytes(self) -> int:
        """The size of :meth:`wav`'s result, in bytes."""
        return wav_size(self.frames)

    #
    # the hooks (the hot path: appends only)
    #

    def caller_audio(self, ulaw: bytes, timestamp_ms: int | None, now: float) -> None:
        """Note a ``media`` packet of the caller's, as received.

        Args:
            ulaw: Its μ-law bytes.
            timestamp_ms: Its ``timestamp`` (ms since the stream started), if it had one.
            now: When it arrived (``loop.time()``).
        """
        buffer = self._caller
        at = len(buffer)
        if timestamp_ms is not None:
            stream_secs = timestamp_ms / 1000
            since = now - self._origin if self._origin is not None else 0.0
            latest = since + MAX_TIMESTAMP_LEAD_SECS
            if 0 <= stream_secs <= latest:
                at = timestamp_ms * BYTES_PER_MS
                origin = now - stream_secs
                self._recent.append(origin)
                if self._origin is None or origin < self._origin:
                    self._origin = origin
        if at > len(buffer):
            buffer.extend(bytes([ULAW_SILENCE]) * (min(at, self._max_bytes) - len(buffer)))
        room = self._max_bytes - len(buffer)
        if room < len(ulaw):
            self._full()
        buffer += ulaw[:room] if room < len(ulaw) else ulaw

    def bot_sent(self, ulaw: bytes, mark: str, now: float, *, start_mark: str | None) -> None:
        """Note a chunk of bot audio sent to the phone, and the mark after it.

        Args:
            ulaw: The chunk.
            mark: The name of the mark sent right after it.
            now: When it was sent.
            start_mark: The start mark sent before it to an idle phone (a run starts).
        """
        if start_mark is not None or not self._runs:
            self._runs.append(_Run(len(self._bot), len(self._chunks), self._when(now)))
            if start_mark is not None:
                self._marks[start_mark] = -len(self._runs)
        room = self._max_bytes - len(self._bot)
        if room < len(ulaw):
            self._full()
            ulaw = ulaw[:room]
        self._bot += ulaw
        self._marks[mark] = len(self._chunks)
        self._chunks.append(_Chunk(len(self._bot)))

    def bot_echoed(self, mark: str, now: float) -> None:
        """Note Twilio's echo of a mark the phone played up to (not one a clear flushed).

        Args:
            mark: The mark's name.
            now: When the echo arrived.
        """
        index = self._marks.pop(mark, None)
        if index is None:
            return
        if index < 0:
            self._runs[-1 - index].start_echoed = self._when(now)
        else:
            self._chunks[index].echoed = self._when(now)

    def bot_cleared(self, unplayed: int, now: float) -> None:
        """Note a ``clear``: the last ``unplayed`` bytes sent were never played.

        Args:
            unplayed: Bytes sent that the phone had not played when the clear reached it
                (the playback clock's estimate).
            now: When the clear was sent.
        """
        self._marks.clear()  # their echoes mean nothing now
        if self._runs:
            run = self._runs[-1]
            played = len(self._bot) - max(unplayed, 0)
            run.cut = max(run.start, min(played, run.cut if run.cut is not None else played))

    def _when(self, now: float) -> _When:
        """A moment, with where the stream's clock stood then (the last second's quickest)."""
        return now, min(self._recent) if self._recent else None

    def _full(self) -> None:
        if not self._full_warned:
            self._full_warned = True
            logger.warning(
                f"Recording full ({self._max_bytes // SAMPLE_RATE} s): the rest of the call "
                "is not recorded"
            )

    #
    # the recording
    #

    def placements(self) -> list[Placement]:
        """Where the phone played the bot's audio, in stream samples, in order.

        Returns:
            The placed pieces, none overlapping, none before sample 0.
        """
        first = self._origin
        if first is None:
            first = self._runs[0].sent[0] if self._runs else 0.0

        def sample(when: _When) -> int:
            now, origin = when
            return round((now - (first if origin is None else origin)) * SAMPLE_RATE)

        placed: list[Placement] = []
        free = 0  # the first sample not taken by an earlier piece
        for index, run in enumerate(self._runs):
            last = self._runs[index + 1].first_chunk if index + 1 < len(self._runs) else None
            chunks = self._chunks[run.first_chunk : last]
            end = chunks[-1].end if chunks else run.start
            if run.cut is not None:
                end = min(end, run.cut)
            for start, stop, offset in self._segments(run, chunks, end, sample):
                at = offset + start
                if at < 0:  # before the stream started: not heard on it
                    start, at = start - at, 0
                # Less than a packet after the previous piece is the clocks' jitter, not
                # silence: phones play whole 20 ms packets, so the piece follows on.
                at = free if placed and at < free + GAP_MS * BYTES_PER_MS else at
                if start < stop:
                    placed.append(Placement(at, start, stop))
                    free = at + stop - start
        return placed

    def _segments(
        self, run: _Run, chunks: list[_Chunk], end: int, sample: Callable[[_When], int]
    ) -> list[tuple[int, int, int]]:
        """Split a run where the phone ran dry: ``(start, stop, offset)`` per stretch.

        ``offset`` places the stretch: bot byte ``b`` played at sample ``offset + b``. An
        echo that came late splits the run too, until later echoes show the stretch goes
        on where it was (then it is one again).
        """
        gap = GAP_MS * BYTES_PER_MS
        bounds: list[list[int]] = []  # [start, offset]
        previous = run.start
        for chunk in chunks:
            start, previous = previous, chunk.end
            if start >= end:
                break
            if chunk.echoed is None:
                continue
            offset = sample(chunk.echoed) - chunk.end
            if not bounds:
                bounds.append([run.start, offset])
            elif offset > bounds[-1][1] + gap:
                bounds.append([start, offset])
            else:
                bounds[-1][1] = min(bounds[-1][1], offset)
                if len(bounds) > 1 and bounds[-1][1] <= bounds[-2][1] + gap:
                    late = bounds.pop()  # no gap after all
                    bounds[-1][1] = min(bounds[-1][1], late[1])
        if not bounds:  # no echo came: the start mark's, else when it was sent
            anchor = run.start_echoed if run.start_echoed is not None else run.sent
            bounds.append([run.start, sample(anchor) - run.start])
        stops = [start for start, _ in bounds[1:]] + [end]
        return [(start, stop, offset) for (start, offset), stop in zip(bounds, stops, strict=True)]

    def channels(self) -> tuple[bytes, bytes]:
        """The two channels as μ-law bytes of equal length: the caller's and the bot's.

        Returns:
            (left, right), :attr:`frames` bytes each.
        """
        frames = self.frames
        right = bytearray([ULAW_SILENCE]) * frames
        for piece in self.placements():
            if piece.sample >= frames:
                break
            length = min(piece.stop - piece.start, frames - piece.sample)
            right[piece.sample : piece.sample + length] = self._bot[
                piece.start : piece.start + length
            ]
        return bytes(self._caller), bytes(right)

    def wav(self) -> bytes:
        """The recording: a 16-bit PCM WAV at 8 kHz, the caller left, the bot right.

        CPU-bound for a long call (about 0.4 s per hour of call on one core here,
        and about three times the WAV's size in memory at its peak): run it off the event
        loop.

        Returns:
            The WAV file's bytes (:attr:`wav_bytes` of them).
        """
        left, right = self.channels()
        out = io.BytesIO()
        with wave.open(out, "wb") as file:
            file.setnchannels(CHANNELS)
            file.setsampwidth(SAMPLE_WIDTH)
            file.setframerate(SAMPLE_RATE)
            file.setnframes(len(left))
            for at in range(0, len(left), _RENDER_BLOCK):
                block = np.empty((min(_RENDER_BLOCK, len(left) - at), CHANNELS), dtype="<i2")
                block[:, 0] = np.frombuffer(ulaw_to_pcm16(left[at : at + len(block)]), "<i2")
                block[:, 1] = np.frombuffer(ulaw_to_pcm16(right[at : at + len(block)]), "<i2")
                file.writeframesraw(block.tobytes())
        return out.getvalue()
