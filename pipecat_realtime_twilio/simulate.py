#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A whole phone call without a phone: runner, simulated Twilio caller and (offline) emulator."""

import asyncio
import secrets
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from pipecat_realtime_twilio.audio import BYTES_PER_MS, FRAME_BYTES, ULAW_SILENCE, ulaw_to_pcm16
from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.settings import Settings, SettingsError, load_settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.server import LocalServer
from pipecat_realtime_twilio.testing.sounds import load_wav_as_ulaw, write_ulaw_wav

SAMPLE_TEXT = "Hi there. What time do you open tomorrow morning?"
"""What the built-in caller sample says."""

EMULATOR_ANSWER = (
    "This is the bundled Realtime emulator speaking, so my answers are scripted, "
    "but I heard every word of that."
)

_QUIET_MS = 1000.0


@dataclass
class SimulationResult:
    """What happened on a simulated call.

    Parameters:
        summary: The runner's summary of the call (transcript, end reason).
        used_emulator: Whether the bundled Realtime emulator stood in for OpenAI.
        heard_path: The WAV file of what the caller heard, in real time.
        heard_ms: How much bot audio the caller heard.
        greeting_ms: Stream start to the first greeting audio played at the phone.
        answer_ms: End of the caller's speech (its last loud packet) to the first answer
            audio played at the phone.
        duration_s: Stream start to hang-up.
        fallback: When the call was handed to the fallback: what Twilio was told to do
            instead (``("Say", line)``, ``("Dial", number)``...); None otherwise.
    """

    summary: CallRecord
    used_emulator: bool
    heard_path: Path
    heard_ms: float
    greeting_ms: float | None
    answer_ms: float | None
    duration_s: float
    fallback: list[tuple[str, str]] | None = None


def sample_audio() -> bytes:
    """Return the built-in caller sample as 8 kHz μ-law."""
    with resources.as_file(
        resources.files("pipecat_realtime_twilio") / "assets/caller.wav"
    ) as path:
        return load_wav_as_ulaw(path)


def caller_audio(wav: Path) -> bytes:
    """Return what the caller says, from a WAV file, as 8 kHz μ-law.

    Args:
        wav: A WAV file of PCM (8, 16 or 32 bit) or 8-bit μ-law, any rate, any channels.

    Returns:
        The audio.

    Raises:
        SettingsError: Naming the file and what is wrong with it, in one line.
    """
    supported = "use a WAV file of 8/16/32-bit PCM or 8-bit μ-law"
    try:
        audio = load_wav_as_ulaw(wav)
    except FileNotFoundError:
        raise SettingsError(f"--wav {wav}: no such file") from None
    except OSError as e:
        raise SettingsError(f"--wav {wav}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:  # what load_wav_as_ulaw says, after the path
        problem = " ".join(str(e).removeprefix(f"{wav}: ").split())
        if "unsupported WAV encoding" in problem:
            raise SettingsError(f"--wav {wav}: {problem}") from None
        raise SettingsError(
            f"--wav {wav}: not a WAV file this can read ({problem}); {supported}"
        ) from None
    except Exception as e:  # a header that lies about its data, and the like
        raise SettingsError(
            f"--wav {wav}: not a WAV file this can read ({type(e).__name__}: {e}); {supported}"
        ) from None
    if not audio:
        raise SettingsError(f"--wav {wav}: the file has no audio")
    return audio


async def simulate_call(
    settings: Settings,
    *,
    wav: Path | None = None,
    out: Path = Path("heard.wav"),
    bot: str | None = None,
    timeout: float = 60.0,
    database_url: str | None = None,
) -> SimulationResult:
    """Run the runner, call it as Twilio would, speak, listen, hang up.

    With no ``OPENAI_API_KEY`` the bundled Realtime emulator stands in for
    OpenAI, so the call runs offline; with a key it talks to the real API.

    Args:
        settings: The runner's settings (PUBLIC_URL, Twilio credentials and the
            Realtime URL are replaced by local ones for the simulation).
        wav: What the caller says; the built-in sample when None.
        out: Where to write what the caller heard.
        bot: The bot to call; ``settings.bot`` when None.
        timeout: Seconds before the simulation gives up.
        database_url: Where the call's record is stored (SQLAlchemy URL); None
            keeps it, and the outbox, in a temporary folder removed afterwards
            (``DATABASE_URL`` and ``OUTBOX_DIR`` are not used).

    Returns:
        The result, with transcript and timings.

    Raises:
        SettingsError: If the WAV file or the database cannot be used, or the call
            does not finish in time.
    """
    audio = caller_audio(wav) if wav else sample_audio()
    with tempfile.TemporaryDirectory(prefix="prt-simulate-") as scratch:
        if database_url is None:
            records = {
                "database_url": f"sqlite:///{Path(scratch) / 'calls.db'}",
                "outbox_dir": str(Path(scratch) / "outbox"),
            }
        else:
            records = {"database_url": database_url}
        return await _simulate(settings, audio, wav is None, out, bot, timeout, records)


async def _simulate(
    settings: Settings,
    audio: bytes,
    sample: bool,
    out: Path,
    bot: str | None,
    timeout: float,
    records: dict[str, str],
) -> SimulationResult:
    emulator = None
    if settings.openai_api_key is None:
        emulator = RealtimeEmulator(
            replies=say_as_asked(Reply(text=EMULATOR_ANSWER)),
            transcripts=[SAMPLE_TEXT] if sample else None,
        )
        await emulator.start()
    server = LocalServer()
    auth_token = secrets.token_hex(16)
    overrides: dict[str, object] = {
        **records,
        "public_url": server.url,
        "twilio_auth_token": auth_token,
        "twilio_validate_signatures": True,
    }
    if bot:
        overrides["bot"] = bot
    if emulator:
        overrides["openai_realtime_url"] = emulator.url
    caller = TwilioCaller(server_url=server.url, public_url=server.url, auth_token=auth_token)
    try:
        server.app = create_app(load_settings(**{**settings.model_dump(), **overrides}))
        runner = server.app.state.runner
        await server.start()
        async with asyncio.timeout(timeout):
            return await _converse(caller, runner, audio, out, emulator is not None)
    except TimeoutError:
        raise SettingsError(
            f"the simulated call did not finish within {timeout:.0f} s "
            "(is the Realtime API reachable with this key?)"
        ) from None
    finally:
        await caller.close()
        await server.stop()
        if emulator:
            await emulator.stop()


async def _converse(caller: TwilioCaller, runner, caller_audio: bytes, out: Path, emulated: bool):
    loop = asyncio.get_running_loop()
    dialled = await caller.dial()
    if not dialled.stream_url:  # the bot failed to build: the webhook answered the fallback
        return await _fell_back(caller, runner, out, emulated, dialled.verbs, loop.time())
    await caller.connect()
    stream_start = caller.started_at or loop.time()

    await _listen(caller, after=0)
    greeting_bytes = len(caller.heard)
    speech_ended_at = None
    if caller.stream_ended_at is None:
        await caller.say(caller_audio)
        # When the caller's last spoken packet (not its trailing silence) went out.
        trailing_ms = (len(caller_audio) - _speech_end(caller_audio)) / BYTES_PER_MS
        speech_ended_at = loop.time() - trailing_ms / 1000
        await _listen(caller, after=greeting_bytes)
    if caller.stream_ended_at is not None:  # the runner ended the stream: the fallback
        after = await caller.follow_action()
        return await _fell_back(caller, runner, out, emulated, after.verbs, stream_start)

    await caller.hangup()
    answer_at = caller.play_time_of(greeting_bytes) if speech_ended_at is not None else None
    return await _result(
        caller,
        runner,
        out,
        emulated,
        since=stream_start,
        until=caller.hung_up_at or loop.time(),
        answer_ms=(answer_at - speech_ended_at) * 1000 if answer_at and speech_ended_at else None,
    )


async def _listen(caller: TwilioCaller, after: int) -> None:
    """Wait until the bot said something past byte ``after`` and stopped, or the stream ended."""
    quiet = asyncio.ensure_future(caller.wait_quiet(after=after, quiet_ms=_QUIET_MS, timeout=60))
    ended = asyncio.ensure_future(caller.wait_ended(timeout=120))
    try:
        await asyncio.wait({quiet, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (quiet, ended):
            task.cancel()
    if quiet.done() and not quiet.cancelled() and caller.stream_ended_at is None:
        quiet.result()  # a timeout is the caller's to see


async def _fell_back(
    caller: TwilioCaller, runner, out: Path, emulated: bool, verbs: list, since: float
) -> SimulationResult:
    """The result of a call the runner handed to the fallback."""
    return await _result(
        caller,
        runner,
        out,
        emulated,
        since=since,
        until=asyncio.get_running_loop().time(),
        fallback=[(verb.name, verb.text or "") for verb in verbs],
    )


async def _result(
    caller: TwilioCaller,
    runner,
    out: Path,
    emulated: bool,
    *,
    since: float,
    until: float,
    answer_ms: float | None = None,
    fallback: list[tuple[str, str]] | None = None,
) -> SimulationResult:
    """Wait for the call's record, write what the caller heard, and sum the call up."""
    await _wait_finished(runner, caller.call_sid)
    summary = next(s for s in runner.finished if s.call_sid == caller.call_sid)
    write_ulaw_wav(out, real_time_recording(caller))
    greeting_at = caller.play_time_of(0)
    return SimulationResult(
        summary=summary,
        used_emulator=emulated,
        heard_path=out,
        heard_ms=len(caller.heard) / BYTES_PER_MS,
        greeting_ms=(greeting_at - since) * 1000 if greeting_at else None,
        answer_ms=answer_ms,
        duration_s=until - since,
        fallback=fallback,
    )


async def _wait_finished(runner, call_sid: str) -> None:
    while not any(s.call_sid == call_sid for s in runner.finished):
        await asyncio.sleep(0.02)


def _speech_end(ulaw: bytes, threshold: float = 300.0) -> int:
    """Return the byte offset just past the last 20 ms packet with speech energy."""
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw[: len(ulaw) - len(ulaw) % FRAME_BYTES]), np.int16)
    frames = pcm.reshape(-1, FRAME_BYTES).astype(np.float64)
    loud = np.nonzero(np.sqrt((frames**2).mean(axis=1)) >= threshold)[0]
    return int(loud[-1] + 1) * FRAME_BYTES if len(loud) else len(ulaw)


def real_time_recording(caller: TwilioCaller) -> bytes:
    """What the phone played, tick by tick, with silence where nothing played."""
    recording = bytearray()
    for _, played, offset in caller.playback:
        recording += caller.heard[offset : offset + played]
        recording += bytes([ULAW_SILENCE]) * (FRAME_BYTES - played)
    return bytes(recording)


def print_result(result: SimulationResult) -> None:
    """Print the transcript and timings of a simulated call."""
    summary = result.summary
    where = (
        "the bundled Realtime emulator (no OPENAI_API_KEY set; the bot's words are scripted)"
        if result.used_emulator
        else "the OpenAI Realtime API"
    )
    print(f"Simulated call {summary.call_sid} to bot '{summary.bot}' on {where}.")
    print("\nTranscript:")
    for entry in summary.transcript:
        at = entry["at"] - summary.started_at
        print(f"  [{at:5.1f} s] {entry['role']:>6}: {entry['text']}")
    if not summary.transcript:
        print("  (empty)")
    print("\nTimings:")
    if result.greeting_ms is not None:
        print(f"  greeting heard       {result.greeting_ms:7.0f} ms after the stream started")
    if result.answer_ms is not None:
        print(
            f"  answer heard         {result.answer_ms:7.0f} ms after the caller stopped speaking "
            "(server VAD waits for silence first)"
        )
    print(f"  bot audio heard      {result.heard_ms / 1000:7.1f} s")
    print(f"  call duration        {result.duration_s:7.1f} s  (ended: {summary.end_reason})")
    if result.fallback is not None:
        told = "; ".join(f"<{name}> {text}".rstrip() for name, text in result.fallback)
        print(f"\nThe bot could not go on ({summary.end_reason}); Twilio was told: {told}")
    print(f"\nWhat the caller heard: {result.heard_path}")
