"""Ours vs stock Pipecat on the wire: the same simulated calls against both, side by side.

Usage (from the repository root)::

    .venv/bin/python benchmarks/compare.py [--levels 1,10,25,50,75,100] [--json FILE]

Two systems answer the same scripted phone calls, one after the other at each
load level, on this machine:

- **ours**: ``pipecat-realtime-twilio serve`` with the repository's default bot
  (pre-warm on, as by default);
- **stock**: ``benchmarks/stock_bot.py``, a plain Pipecat Twilio + OpenAI Realtime
  bot written the ordinary way (``TwilioFrameSerializer``,
  ``FastAPIWebsocketTransport``, ``OpenAIRealtimeLLMService`` with default settings).

Each runs as its own process (so its CPU time and memory are its own), against
the project's Realtime emulator (time to first byte fixed at ``--ttfb-ms``) and
Twilio caller simulator, both in this process. Every call: the webhook, then
``--answer-gap-ms`` later the media stream (Twilio's time to set the stream
up); the greeting; three questions answered; a fourth answer that the caller
cuts into after about a second; the answer to that (heard in full); hang-up. Each caller
speaks a tone of its own pitch, which tells whose Realtime session is whose.

Figures (times are this process's monotonic clock, shared by the simulated
callers and the emulator):

- greeting: the stream's ``start`` sent to the first greeting audio arriving
  at the phone;
- onset caller -> OpenAI: the first media packet of an utterance sent to the
  first append holding its sound received by the emulator; OpenAI -> caller:
  the first audio delta of an answer sent to its first audio arriving at the
  phone;
- barge-in: ``speech_started`` sent to ``clear`` arriving at the phone, and the
  truncation's ``audio_end_ms`` minus the ms of that answer the phone had
  played when the ``clear`` arrived;
- fidelity, over the answers heard to the end: bit-exact (bytes heard equal
  bytes sent), SNR of what was heard against what the model sent (brought to
  8 kHz by an ideal band-limited resampler, best alignment), ms lost at the
  end (the model's audio past the last sound heard) and underrun ms (playback
  gaps inside an answer);
- CPU seconds per call-second (the server's user + system time over the calls'
  total length) and RSS per call (peak minus idle, over the calls) at each level;
- the largest level with zero failed calls and onset p99 <= 50 ms both ways;
- process start -> ready: spawn to the first 200 from the readiness route;
- harness CPU and lag: this process's share of the machine and how late its event
  loop wakes (p99); when they grow, the times stamped here are late for both systems.

Latency and fidelity rows come from the 10-call level (or the lowest level
above 1). This is a script, not a test: the machine is shared and noisy, so
nothing here asserts a time; compare the two columns of one run.
"""

import argparse
import asyncio
import base64
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from pipecat_realtime_twilio.audio import BYTES_PER_MS, ulaw_to_pcm16  # noqa: E402
from pipecat_realtime_twilio.settings import Settings  # noqa: E402
from pipecat_realtime_twilio.testing.caller import TwilioCaller  # noqa: E402
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply  # noqa: E402
from pipecat_realtime_twilio.testing.emulator.audio import decode_audio  # noqa: E402
from pipecat_realtime_twilio.testing.server import free_port  # noqa: E402
from pipecat_realtime_twilio.testing.sounds import silence, tone  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_LOUD = 1000  # |sample| above this is sound (the tones peak at 8000, replies near 5000)
_QUESTIONS = 3
_BARGE_IN_AFTER_MS = 1000
_VAD_SILENCE_SECS = 0.6  # server VAD's 500 ms of silence, and a margin
GREETING = "Hello, thanks for calling. How can I help?"
ANSWER = "Sure, here is a short answer."
LONG_ANSWER = "Here is a long answer that goes on and on. " * 3


# ------------------------------------------------------------------------------------------
# the two systems
# ------------------------------------------------------------------------------------------


@dataclass
class System:
    """How to start one of the two servers."""

    name: str
    args: list[str]
    ready_path: str


OURS = System("ours", ["-m", "pipecat_realtime_twilio", "serve"], "/readyz")
STOCK = System("stock", [str(ROOT / "benchmarks" / "stock_bot.py")], "/ready")


def _env(system: System, port: int, emulator_url: str, token: str, tmp: str, calls: int) -> dict:
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(
        OPENAI_API_KEY="sk-benchmark",
        OPENAI_REALTIME_URL=emulator_url,
        TWILIO_AUTH_TOKEN=token,
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        PORT=str(port),
        BOTS_DIR=str(ROOT / "bots"),
        DATABASE_URL=f"sqlite:///{tmp}/calls.db",
        MAX_CALLS=str(calls + 10),
        LOG_LEVEL="WARNING",  # both servers log at the same level
    )
    if system is STOCK:
        env["PYTHONPATH"] = ""  # nothing of ours on its path
    return env


async def _http_status(port: int, path: str) -> int | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        line = await reader.readline()
        return int(line.split()[1]) if line.startswith(b"HTTP/") else None
    except (OSError, ValueError, IndexError):
        return None
    finally:
        writer.close()


async def start_server(system: System, env: dict, port: int, tmp: str):
    """Spawn the server; return (process, ms from spawn to its first ready 200)."""
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *system.args,
        *(["--port", str(port)] if system is STOCK else []),  # ours reads PORT
        cwd=tmp,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    while await _http_status(port, system.ready_path) != 200:
        if process.returncode is not None:
            raise RuntimeError(f"{system.name} exited with {process.returncode} before ready")
        if time.monotonic() - began > 60:
            process.kill()
            raise RuntimeError(f"{system.name} not ready in 60 s")
        await asyncio.sleep(0.005)
    return process, (time.monotonic() - began) * 1000


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


# ------------------------------------------------------------------------------------------
# one call
# ------------------------------------------------------------------------------------------


@dataclass
class CallRun:
    """What one simulated call did, for measuring afterwards."""

    pitch: float
    caller: TwilioCaller | None = None
    ok: bool = False
    error: str | None = None
    stream_started: float | None = None
    # (heard offset before, heard offset after) of each answer heard to the end, in order;
    # the first is the greeting.
    turns: list[tuple[int, int]] = field(default_factory=list)
    # Loop time the first packet of each caller utterance was queued (sent at the next tick).
    utterances: list[float] = field(default_factory=list)
    barge_in_offset: int | None = None  # heard offset where the interrupted answer began
    duration_s: float = 0.0


def _reply_for(session, trigger: str) -> Reply:
    index = len(session.responses) - 1  # this one is already in the list
    if index == 0:
        return Reply(GREETING)
    if index == _QUESTIONS + 1:
        return Reply(LONG_ANSWER)
    return Reply(ANSWER)


async def run_call(run: CallRun, url: str, token: str, answer_gap_ms: float) -> None:
    """Play one scripted call; fill ``run`` (never raises)."""
    caller = TwilioCaller(server_url=url, public_url=url, auth_token=token)
    caller.poll_interval = 0.02  # the waits' precision does not enter any figure
    run.caller = caller
    loop = asyncio.get_running_loop()
    began = loop.time()
    speech = tone(600, freq=run.pitch) + silence(700)
    try:
        await caller.dial()
        await asyncio.sleep(answer_gap_ms / 1000)
        await caller.connect()
        run.stream_started = caller.started_at
        await caller.wait_quiet(quiet_ms=500, timeout=30)
        run.turns.append((0, len(caller.heard)))
        for _ in range(_QUESTIONS):
            before = len(caller.heard)
            run.utterances.append(loop.time())
            caller.say(speech)
            await caller.wait_quiet(after=before, quiet_ms=500, timeout=30)
            run.turns.append((before, len(caller.heard)))
        run.barge_in_offset = before = len(caller.heard)
        run.utterances.append(loop.time())
        caller.say(speech)
        await caller.wait_heard(before / BYTES_PER_MS + _BARGE_IN_AFTER_MS, timeout=30)
        run.utterances.append(loop.time())
        await caller.say(speech)  # the whole utterance sent
        await caller.wait_until(lambda: caller.clears, 10, message="clear")
        # Past server VAD's end of speech: whatever plays from here is the answer to it.
        await asyncio.sleep(_VAD_SILENCE_SECS)
        await caller.wait_quiet(after=len(caller.heard), quiet_ms=500, timeout=30)
        await caller.hangup()
        run.ok = True
    except Exception as e:  # a failed call is counted, not fatal to the run
        run.error = f"{type(e).__name__}: {e}"
    finally:
        run.duration_s = loop.time() - began
        await caller.close()


# ------------------------------------------------------------------------------------------
# measuring a call from the caller's and the emulator's records
# ------------------------------------------------------------------------------------------


def _is_speech(payload_ulaw: bytes) -> bool:
    return bool(payload_ulaw) and int(np.abs(_pcm(payload_ulaw)).max()) > _LOUD


def _pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(bytes(ulaw)), dtype=np.int16).astype(np.float64)


def _media_payload(message: dict) -> bytes:
    return base64.b64decode(message["media"]["payload"])


def _dominant_pitch(samples: np.ndarray, rate: int) -> float | None:
    loud = np.flatnonzero(np.abs(samples) > _LOUD)
    if len(loud) < rate // 10:
        return None
    window = samples[loud[0] : loud[0] + rate // 2]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window)), n=rate * 4))
    return float(np.argmax(spectrum)) / 4


def session_pitch(session) -> float | None:
    """The pitch of the first sound appended in an emulator session (which caller it is)."""
    chunks = [
        decode_audio(base64_audio, session.input_format)
        for base64_audio in (
            _append_audio(e) for e in session.events_of_type("input_audio_buffer.append")
        )
        if base64_audio is not None
    ]
    if not chunks:
        return None
    rate = 24000 if session.input_format == "audio/pcm" else 8000
    return _dominant_pitch(np.concatenate(chunks).astype(np.float64), rate)


def _append_audio(event) -> bytes | None:
    try:
        return base64.b64decode(event["audio"])
    except (KeyError, ValueError):
        return None


def _to_8k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Ideal band-limited resampling to 8 kHz (FFT), for the SNR reference."""
    if rate == 8000 or len(samples) == 0:
        return samples
    n_out = len(samples) * 8000 // rate
    spectrum = np.fft.rfft(samples)
    return np.fft.irfft(spectrum[: n_out // 2 + 1], n=n_out) * n_out / len(samples)


def _align(reference: np.ndarray, heard: np.ndarray, max_lag: int = 400) -> int:
    """The lag (samples) at which ``heard`` best matches ``reference``."""
    n = min(len(reference), len(heard), 4000)
    best, best_lag = -np.inf, 0
    for lag in range(-min(max_lag, 80), max_lag + 1):
        a = reference[max(0, -lag) : n]
        b = heard[max(0, lag) : max(0, lag) + len(a)]
        m = min(len(a), len(b))
        if m < 400:
            continue
        score = float(np.dot(a[:m], b[:m])) / (np.linalg.norm(a[:m]) * np.linalg.norm(b[:m]) + 1e-9)
        if score > best:
            best, best_lag = score, lag
    return best_lag


def _last_sound(samples: np.ndarray) -> int:
    loud = np.flatnonzero(np.abs(samples) > _LOUD / 4)
    return int(loud[-1]) + 1 if len(loud) else 0


def _heard_ms_at(caller: TwilioCaller, offset: int, when: float) -> float:
    """Ms of ``heard`` past ``offset`` the phone had played at loop time ``when``."""
    played = 0.0
    for at, count, start in caller.playback:
        if at >= when:
            break
        if start + count <= offset:
            continue
        usable = count - max(0, offset - start)
        played += min(usable, (when - at) * 1000 * BYTES_PER_MS)
    return played / BYTES_PER_MS


@dataclass
class Figures:
    """Per-call figures, gathered over a level."""

    greeting_ms: list[float] = field(default_factory=list)
    onset_in_ms: list[float] = field(default_factory=list)
    onset_out_ms: list[float] = field(default_factory=list)
    clear_ms: list[float] = field(default_factory=list)
    truncation_error_ms: list[float] = field(default_factory=list)
    snr_db: list[float] = field(default_factory=list)
    bit_exact: list[bool] = field(default_factory=list)
    lost_ms: list[float] = field(default_factory=list)
    underrun_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def measure(run: CallRun, session, figures: Figures) -> None:
    """Add one call's figures."""
    caller = run.caller
    sound_arrivals = [
        (at, m)
        for at, m in caller.received
        if m.get("event") == "media" and _is_speech(_media_payload(m))
    ]
    if sound_arrivals and run.stream_started is not None:
        figures.greeting_ms.append((sound_arrivals[0][0] - run.stream_started) * 1000)

    # caller -> OpenAI: the first packet with sound after each utterance was queued
    sent_sound = [
        at for at, m in caller.sent if m.get("event") == "media" and _is_speech(_media_payload(m))
    ]
    appends = [
        (e.received_at, _append_audio(e))
        for e in session.events_of_type("input_audio_buffer.append")
    ]
    for queued in run.utterances:
        first_sent = next((at for at in sent_sound if at >= queued), None)
        if first_sent is None:
            continue
        arrived = next(
            (
                at
                for at, audio in appends
                if at >= first_sent
                and audio
                and np.abs(decode_audio(audio, session.input_format)).max() > _LOUD
            ),
            None,
        )
        if arrived is not None:
            figures.onset_in_ms.append((arrived - first_sent) * 1000)

    # OpenAI -> caller: each answer's first delta to its first sound at the phone
    for response in session.responses[1:]:
        if not response.deltas or response.deltas[0].sent_at is None:
            continue
        sent = response.deltas[0].sent_at
        arrived = next((at for at, _ in sound_arrivals if at >= sent), None)
        if arrived is not None:
            figures.onset_out_ms.append((arrived - sent) * 1000)

    # fidelity of the answers heard to the end (greeting and questions)
    completed = [r for r in session.responses if r.status == "completed"]
    for (start, end), response in zip(run.turns, completed, strict=False):
        heard = bytes(caller.heard[start:end])
        sent_audio = bytes(response.audio)
        rate = 24000 if response.output_format == "audio/pcm" else 8000
        if response.output_format == "audio/pcmu":
            figures.bit_exact.append(heard == sent_audio)
        else:
            figures.bit_exact.append(False)
        reference = _to_8k(
            decode_audio(sent_audio, response.output_format).astype(np.float64), rate
        )
        heard_pcm = _pcm(heard)
        lag = _align(reference, heard_pcm)
        a = reference[max(0, -lag) :]
        b = heard_pcm[max(0, lag) :]
        m = min(len(a), len(b))
        noise = float(np.sum((a[:m] - b[:m]) ** 2))
        signal = float(np.sum(a[:m] ** 2))
        figures.snr_db.append(float("inf") if noise == 0 else 10 * np.log10(signal / noise))
        end_of_sound = _last_sound(reference) / 8  # ms
        heard_end = (_last_sound(heard_pcm) - lag) / 8
        figures.lost_ms.append(max(0.0, end_of_sound - heard_end))
        first = caller.play_time_of(start)
        last = caller.play_time_of(max(start, end - 1))
        if first is not None and last is not None:
            figures.underrun_ms.append(sum(ms for at, ms in caller.gaps() if first <= at <= last))

    # barge-in: the interrupted answer
    cancelled = [
        r
        for r in session.responses
        if r.status == "cancelled" and r.deltas and r.deltas[0].sent_at is not None
    ]
    if cancelled and run.barge_in_offset is not None and caller.clears:
        response = cancelled[0]
        started = [
            e.sent_at
            for e in session.sent_of_type("input_audio_buffer.speech_started")
            if e.sent_at is not None and e.sent_at >= response.deltas[0].sent_at
        ]
        if started:
            clear_at = next((at for at in caller.clears if at >= started[0]), None)
            if clear_at is not None:
                figures.clear_ms.append((clear_at - started[0]) * 1000)
                truncates = [
                    e
                    for e in session.events_of_type("conversation.item.truncate")
                    if e.get("item_id") == response.item_id
                ]
                if truncates:
                    heard_ms = _heard_ms_at(caller, run.barge_in_offset, clear_at)
                    figures.truncation_error_ms.append(truncates[0]["audio_end_ms"] - heard_ms)
                else:
                    figures.problems.append("no truncate for the interrupted answer")


# ------------------------------------------------------------------------------------------
# a level: N concurrent calls against a fresh server
# ------------------------------------------------------------------------------------------


async def run_level(system: System, calls: int, args) -> dict:
    """Run ``calls`` concurrent calls against a fresh ``system`` server; return its figures."""
    token = secrets.token_hex(16)
    async with RealtimeEmulator(
        replies=_reply_for, ttfb_ms=args.ttfb_ms, send_rate=args.send_rate
    ) as em:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            env = _env(system, port, em.url, token, tmp, calls)
            process, ready_ms = await start_server(system, env, port, tmp)
            try:
                await asyncio.sleep(0.5)
                rss_idle = _rss_bytes(process.pid)
                cpu_before = _cpu_secs(process.pid)
                own_cpu_before = time.process_time()
                peak = {"rss": rss_idle}

                async def watch_rss():
                    while True:
                        peak["rss"] = max(peak["rss"], _rss_bytes(process.pid))
                        await asyncio.sleep(0.1)

                lags: list[float] = []

                async def watch_loop():  # how late this process's own event loop runs
                    while True:
                        before = time.monotonic()
                        await asyncio.sleep(0.01)
                        lags.append((time.monotonic() - before - 0.01) * 1000)

                watcher = asyncio.create_task(watch_rss())
                lag_watcher = asyncio.create_task(watch_loop())
                # Calls arrive spread over the first second, not all in the same millisecond.
                runs = [CallRun(pitch=300 + 7 * i) for i in range(calls)]

                async def staggered(i: int, run: CallRun):
                    await asyncio.sleep(i / calls)
                    await run_call(run, url, token, args.answer_gap_ms)

                wall = time.monotonic()
                await asyncio.gather(*(staggered(i, r) for i, r in enumerate(runs)))
                wall = time.monotonic() - wall
                watcher.cancel()
                lag_watcher.cancel()
                cpu = _cpu_secs(process.pid) - cpu_before
                own_cpu = time.process_time() - own_cpu_before
            finally:
                process.terminate()
                await process.wait()
        figures = measure_runs(em.sessions, runs)
        validation_errors = len(em.validation_errors)
    call_secs = sum(r.duration_s for r in runs)
    return {
        "system": system.name,
        "calls": calls,
        "failed": sum(not r.ok for r in runs),
        "errors": sorted({r.error for r in runs if r.error})[:3],
        "validation_errors": validation_errors,
        "ready_ms": ready_ms,
        "cpu_s_per_call_s": cpu / call_secs if call_secs else None,
        "rss_mb_per_call": (peak["rss"] - rss_idle) / calls / 2**20,
        "rss_idle_mb": rss_idle / 2**20,
        "harness_cpu_share": own_cpu / wall / (os.cpu_count() or 1),
        "harness_lag_p99_ms": _pct(lags, 99),
        "figures": figures,
    }


def measure_runs(sessions, runs: list[CallRun]) -> Figures:
    """Measure each call against the Realtime session that heard its caller (by pitch).

    A call no session heard is marked failed; a call that cannot be measured is noted in
    the figures' problems, not fatal to the run.

    Args:
        sessions: The emulator's sessions of the level.
        runs: The level's calls.

    Returns:
        The level's figures.
    """
    figures = Figures()
    by_pitch = {}
    for session in sessions:
        pitch = session_pitch(session)
        if pitch is not None:
            by_pitch[round(pitch)] = session
    for run in runs:
        session = by_pitch.get(round(run.pitch))
        if session is None:
            if run.ok:
                run.ok, run.error = False, "no Realtime session heard this caller"
            continue
        if run.ok:
            try:
                measure(run, session, figures)
            except Exception as e:  # an odd call is noted, not fatal to the run
                figures.problems.append(f"could not measure a call: {type(e).__name__}: {e}")
    return figures


# ------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value == float("inf"):
        return "exact"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{digits}f}{unit}"


def _ratio(ours, stock) -> str:
    if ours is None or stock is None or isinstance(ours, bool):
        return ""
    if ours == float("inf") or stock == float("inf"):
        return ""
    if stock == 0:
        return "" if ours == 0 else "-"
    return f"{ours / stock:.2f}x"


def passes(level: dict, limit_ms: float) -> bool:
    """Zero failed calls and onset p99 <= ``limit_ms`` in both directions."""
    f = level["figures"]
    p99_in, p99_out = _pct(f.onset_in_ms, 99), _pct(f.onset_out_ms, 99)
    return (
        level["failed"] == 0
        and p99_in is not None
        and p99_out is not None
        and p99_in <= limit_ms
        and p99_out <= limit_ms
    )


def quality_rows(ours: Figures, stock: Figures) -> list[tuple[str, object, object, str]]:
    """(label, ours, stock, unit) rows of the latency and fidelity figures."""
    rows = []

    def add(label, pick, unit="ms"):
        rows.append((label, pick(ours), pick(stock), unit))

    add("first greeting audio, p50", lambda f: _pct(f.greeting_ms, 50))
    add("first greeting audio, max", lambda f: max(f.greeting_ms, default=None))
    add("onset caller->OpenAI, p50", lambda f: _pct(f.onset_in_ms, 50))
    add("onset caller->OpenAI, p99", lambda f: _pct(f.onset_in_ms, 99))
    add("onset OpenAI->caller, p50", lambda f: _pct(f.onset_out_ms, 50))
    add("onset OpenAI->caller, p99", lambda f: _pct(f.onset_out_ms, 99))
    add("barge-in: speech_started->clear, p50", lambda f: _pct(f.clear_ms, 50))
    add("barge-in: speech_started->clear, max", lambda f: max(f.clear_ms, default=None))
    add(
        "truncation error, abs(audio_end_ms - heard), p50",
        lambda f: _pct([abs(x) for x in f.truncation_error_ms], 50),
    )
    add(
        "truncation error, abs(audio_end_ms - heard), max",
        lambda f: max((abs(x) for x in f.truncation_error_ms), default=None),
    )
    add("answers bit-exact", lambda f: bool(f.bit_exact) and all(f.bit_exact), "")
    add("SNR heard vs sent, min", lambda f: min(f.snr_db, default=None), " dB")
    add("ms lost at utterance end, max", lambda f: max(f.lost_ms, default=None))
    add(
        "ms lost at utterance end, mean",
        lambda f: statistics.fmean(f.lost_ms) if f.lost_ms else None,
    )
    add("underrun ms per answer, max", lambda f: max(f.underrun_ms, default=None))
    return rows


def _row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def _compare(label: str, ours, stock, unit: str = "", digits: int = 1) -> None:
    _row(label, _fmt(ours, unit, digits), _fmt(stock, unit, digits), _ratio(ours, stock))


def print_table(levels: dict, args) -> None:
    """Print the side-by-side tables (Markdown)."""
    counts = sorted({c for (_, c) in levels})
    detail = next((c for c in counts if c >= 10), counts[-1])
    ours_f = levels[("ours", detail)]["figures"]
    stock_f = levels[("stock", detail)]["figures"]
    print()
    print(
        f"Latency and fidelity at {detail} concurrent calls: emulator TTFB {args.ttfb_ms:g} ms, "
        f"webhook -> stream {args.answer_gap_ms:g} ms; samples ours/stock: "
        f"{len(ours_f.onset_in_ms)}/{len(stock_f.onset_in_ms)} utterances, "
        f"{len(ours_f.onset_out_ms)}/{len(stock_f.onset_out_ms)} answers, "
        f"{len(ours_f.clear_ms)}/{len(stock_f.clear_ms)} barge-ins."
    )
    print()
    _row("figure", "ours", "stock", "ours/stock")
    _row("---", "---:", "---:", "---:")
    for label, ours, stock, unit in quality_rows(ours_f, stock_f):
        _compare(label, ours, stock, unit)
    print()
    print("Load, each level on a fresh server process:")
    print()
    _row(
        "calls",
        "system",
        "failed",
        "CPU s per call-s",
        "RSS MB per call",
        "idle RSS MB",
        "onset p99 in / out ms",
        "start -> ready ms",
        "harness CPU",
        "harness lag p99 ms",
    )
    _row("---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:")
    notes = []
    for calls in counts:
        for name in ("ours", "stock"):
            level = levels.get((name, calls))
            if level is None:
                continue
            f = level["figures"]
            p99_in, p99_out = _pct(f.onset_in_ms, 99), _pct(f.onset_out_ms, 99)
            _row(
                calls,
                name,
                level["failed"],
                _fmt(level["cpu_s_per_call_s"], "", 4),
                _fmt(level["rss_mb_per_call"], "", 2),
                _fmt(level["rss_idle_mb"], "", 1),
                f"{_fmt(p99_in, '', 0)} / {_fmt(p99_out, '', 0)}",
                _fmt(level["ready_ms"], "", 0),
                _fmt(100 * level["harness_cpu_share"], "%", 0),
                _fmt(level["harness_lag_p99_ms"], "", 1),
            )
            notes += [f"{name} at {calls}: {error}" for error in level["errors"]]
            notes += [f"{name} at {calls}: {p}" for p in sorted(set(f.problems))[:3]]
            if level["validation_errors"]:
                notes.append(
                    f"{name} at {calls}: {level['validation_errors']} invalid client events"
                )
    for note in notes:
        print(f"- {note}")
    print()
    print("Summary:")
    print()
    _row("figure", "ours", "stock", "ours/stock")
    _row("---", "---:", "---:", "---:")
    for calls in (1, 10, 50):
        if ("ours", calls) in levels and ("stock", calls) in levels:
            o, s = levels[("ours", calls)], levels[("stock", calls)]
            key = "cpu_s_per_call_s"
            _compare(f"CPU s per call-second, {calls} calls", o[key], s[key], digits=4)
            key = "rss_mb_per_call"
            _compare(f"RSS MB per call, {calls} calls", o[key], s[key], digits=2)
    best = {}
    for name in ("ours", "stock"):
        best[name] = 0
        for calls in counts:
            level = levels.get((name, calls))
            if level is None or not passes(level, args.onset_limit_ms):
                break
            best[name] = calls
    label = f"most calls with 0 failed and onset p99 <= {args.onset_limit_ms:g} ms"
    _compare(label, best["ours"], best["stock"], digits=0)
    ready = {
        name: statistics.median(lv["ready_ms"] for (n, _), lv in levels.items() if n == name)
        for name in ("ours", "stock")
    }
    _compare("process start -> ready, median ms", ready["ours"], ready["stock"], digits=0)


async def main_async(args) -> dict:
    """Run every level for both systems, interleaved; stop a system's sweep at its first miss."""
    levels: dict[tuple[str, int], dict] = {}
    stopped: set[str] = set()
    for calls in args.levels:
        for system in (OURS, STOCK):
            # Levels past 50 only look for the limit; a system that already missed stops.
            if calls > 50 and system.name in stopped:
                continue
            print(f"  {system.name}: {calls} calls...", file=sys.stderr, flush=True)
            level = await run_level(system, calls, args)
            levels[(system.name, calls)] = level
            if not passes(level, args.onset_limit_ms):
                stopped.add(system.name)
    return levels


def main() -> None:
    """Parse the options, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--levels",
        type=lambda s: sorted({int(x) for x in s.split(",")}),
        default=[1, 10, 25, 50, 75, 100],
        help="concurrent calls per level, comma-separated (default 1,10,25,50,75,100)",
    )
    parser.add_argument("--ttfb-ms", type=float, default=300.0, help="emulator time to first byte")
    parser.add_argument(
        "--answer-gap-ms", type=float, default=400.0, help="webhook answered -> stream start"
    )
    parser.add_argument(
        "--send-rate", type=float, default=4.0, help="emulator audio pace, x real time"
    )
    parser.add_argument("--onset-limit-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    levels = asyncio.run(main_async(args))
    print_table(levels, args)
    if args.json:
        out = {
            f"{name}/{calls}": {**lv, "figures": vars(lv["figures"])}
            for (name, calls), lv in levels.items()
        }
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
