"""What ``RECORD_CALLS=true`` costs: the same calls recorded and not, and an hour's recorder.

Usage (from the repository root)::

    .venv/bin/python benchmarks/recording.py [--levels 1,10] [--hour-secs 3600] [--json FILE]

Two parts, each with its baseline measured in the same run:

1. **On the wire.** At each level, ``benchmarks/compare.py``'s scripted calls
   (greeting, three questions, a barge-in, hang-up; about 25 s each) against
   ``pipecat-realtime-twilio serve`` in a child process twice, each time a fresh
   process: ``RECORD_CALLS`` off (the baseline), then on (``RECORDINGS_DIR`` in a
   temporary folder). The runner's CPU seconds per call-second (counted until every
   recording is on disk: the WAVs are rendered after the calls, in a worker thread),
   its RSS per call (peak minus idle, over the calls, the rendering included), onset
   p99 both ways and failed calls, off and on, and on/off. Every recorded call's
   WAV is opened and checked (two channels at 8000 Hz, as long as the call's
   stream), and its record is checked to point at it, so the figures are of calls
   that were really recorded.
2. **In this process, an hour of call.** ``CallRecorder`` is fed ``--hour-secs``
   of a conversation through its hooks as the serializer and the phone output
   call them (a caller packet every 20 ms; the bot's answers in 40 ms chunks, each
   with its mark and the mark's echo; a ``clear`` on some answers), then renders
   the WAV. Time per packet of the hooks against the bare ``bytearray`` appends
   the same packets cost (the baseline: what the recorder could at least cost),
   the WAV's build time, and peak memory (tracemalloc).

Nothing here asserts a time: the machine is shared and noisy; read the ratios of
one run.
"""

import argparse
import asyncio
import gc
import io
import json
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare  # noqa: E402
from loguru import logger  # noqa: E402

from pipecat_realtime_twilio.audio import BYTES_PER_MS, SAMPLE_RATE  # noqa: E402
from pipecat_realtime_twilio.phone.recording import CallRecorder  # noqa: E402
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator  # noqa: E402

_WAV_WAIT_SECS = 30.0  # the longest wait for a call's recording to reach the disk
_SETTLE_SECS = 0.5  # after the calls (and the WAVs), before the runner's CPU is read

# ------------------------------------------------------------------------------------------
# 1. the runner, RECORD_CALLS off and on
# ------------------------------------------------------------------------------------------


def check_recordings(folder: Path, database: Path, runs: list) -> dict:
    """Open every recorded call's WAV, and look for it on the call's record.

    Args:
        folder: ``RECORDINGS_DIR``.
        database: The runner's SQLite file.
        runs: The level's calls (``compare.CallRun``).

    Returns:
        ``{"expected", "found", "valid", "on_record", "seconds", "problems"}``: calls
        that ended well, their WAVs found, those with two channels at 8000 Hz and as
        long as the call's stream (within a second), those whose record names that file,
        and the seconds recorded.
    """
    found = valid = on_record = 0
    seconds = 0.0
    problems: list[str] = []
    locations: dict[str, str] = {}
    if database.exists():
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            for sid, record in connection.execute("SELECT call_sid, record FROM calls"):
                location = (json.loads(record).get("recording") or {}).get("location")
                if location:
                    locations[sid] = location
    expected = [run for run in runs if run.ok]
    for run in expected:
        sid = run.caller.call_sid
        path = next(folder.rglob(f"{sid}.wav"), None)
        if path is None:
            problems.append(f"{sid}: no WAV")
            continue
        found += 1
        with wave.open(str(path), "rb") as file:
            channels, rate, frames = file.getnchannels(), file.getframerate(), file.getnframes()
        # The stream lasts from its start to the hang-up: the call less the webhook and gap.
        stream_s = len(run.caller.sent_audio) / SAMPLE_RATE
        if channels == 2 and rate == SAMPLE_RATE and abs(frames / rate - stream_s) <= 1.0:
            valid += 1
            seconds += frames / rate
        else:
            problems.append(f"{sid}: {channels} channels, {rate} Hz, {frames / rate:.1f} s")
        if locations.get(sid) == str(path):
            on_record += 1
        else:
            problems.append(f"{sid}: the record names {locations.get(sid)!r}")
    return {
        "expected": len(expected),
        "found": found,
        "valid": valid,
        "on_record": on_record,
        "seconds": seconds,
        "problems": problems,
    }


async def _wait_for_wavs(folder: Path, runs: list) -> None:
    """Until every call that ended well has its WAV in ``folder`` (written atomically)."""
    sids = {run.caller.call_sid for run in runs if run.ok}
    deadline = time.monotonic() + _WAV_WAIT_SECS
    while time.monotonic() < deadline:
        present = {path.stem for path in folder.rglob("CA*.wav")} if folder.is_dir() else set()
        if sids <= present:
            return
        await asyncio.sleep(0.05)


async def run_level(record: bool, calls: int, args) -> dict:
    """``calls`` of compare.py's calls against a fresh runner, recording on or off.

    Args:
        record: ``RECORD_CALLS``.
        calls: Concurrent calls.
        args: The options (``ttfb_ms``, ``send_rate``, ``answer_gap_ms``).

    Returns:
        The level's figures.
    """
    token = secrets.token_hex(16)
    async with RealtimeEmulator(
        replies=compare._reply_for, ttfb_ms=args.ttfb_ms, send_rate=args.send_rate
    ) as em:
        port = compare.free_port()
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "recordings"
            env = compare._env(compare.OURS, port, em.url, token, tmp, calls)
            env.update(RECORD_CALLS="true" if record else "false", RECORDINGS_DIR=str(folder))
            process, ready_ms = await compare.start_server(compare.OURS, env, port, tmp)
            try:
                await asyncio.sleep(0.5)
                rss_idle = compare._rss_bytes(process.pid)
                cpu_before = compare._cpu_secs(process.pid)
                peak = {"rss": rss_idle}

                async def watch_rss():
                    while True:
                        peak["rss"] = max(peak["rss"], compare._rss_bytes(process.pid))
                        await asyncio.sleep(0.1)

                watcher = asyncio.create_task(watch_rss())
                runs = [compare.CallRun(pitch=300 + 7 * i) for i in range(calls)]

                async def staggered(i: int, run):
                    await asyncio.sleep(i / calls)  # arrivals spread over the first second
                    await compare.run_call(run, url, token, args.answer_gap_ms)

                await asyncio.gather(*(staggered(i, r) for i, r in enumerate(runs)))
                if record:
                    await _wait_for_wavs(folder, runs)
                await asyncio.sleep(_SETTLE_SECS)  # both ways: the records' writes settle
                watcher.cancel()
                cpu = compare._cpu_secs(process.pid) - cpu_before
            finally:
                process.terminate()
                await process.wait()
            checked = check_recordings(folder, Path(tmp) / "calls.db", runs) if record else None
        figures = compare.measure_runs(em.sessions, runs)
    call_secs = sum(r.duration_s for r in runs)
    return {
        "record": record,
        "calls": calls,
        "failed": sum(not r.ok for r in runs),
        "errors": sorted({r.error for r in runs if r.error})[:3],
        "ready_ms": ready_ms,
        "call_secs": call_secs,
        "cpu_s_per_call_s": cpu / call_secs if call_secs else None,
        "rss_mb_per_call": (peak["rss"] - rss_idle) / calls / 2**20,
        "rss_idle_mb": rss_idle / 2**20,
        "onset_in_p99_ms": compare._pct(figures.onset_in_ms, 99),
        "onset_out_p99_ms": compare._pct(figures.onset_out_ms, 99),
        "onset_in_ms": figures.onset_in_ms,  # the samples, for --json
        "onset_out_ms": figures.onset_out_ms,
        "bit_exact": bool(figures.bit_exact) and all(figures.bit_exact),
        "problems": sorted(set(figures.problems))[:3],
        "recordings": checked,
    }


# ------------------------------------------------------------------------------------------
# 2. an hour of call through CallRecorder, in this process
# ------------------------------------------------------------------------------------------

CALLER, SENT, ECHO, CLEAR = range(4)
_ORIGIN = 1000.0  # loop time of the stream's sample 0
_CHUNK_S = 0.04  # the phone output's chunk (CHUNK_MS)
_LEAD_S = 0.3  # audio the output keeps buffered at Twilio (MAX_LEAD_MS)


def hour_script(secs: float, seed: int = 1) -> tuple[list[tuple], dict]:
    """An hour (``secs``) of a call as the recorder's hooks see it, in arrival order.

    The caller's packets come every 20 ms (their ``timestamp`` the stream's, 2-10 ms
    of network delay); the caller speaks 2-8 s, the bot answers 0.5-1 s later for
    2-12 s, in 40 ms chunks sent up to 300 ms ahead of the phone (a start mark on the
    first, a mark after each), each mark echoed 20-60 ms after the phone played it;
    one answer in six is cut by the caller (a ``clear``) part-way.

    Args:
        secs: The call's length.
        seed: The random conversation's seed.

    Returns:
        ``(events, counts)``: ``(now, kind, a, b)`` tuples sorted by ``now``, and how
        many of each kind, with the bot's seconds played.
    """
    rng = random.Random(seed)
    packet = bytes(rng.randrange(256) for _ in range(20 * BYTES_PER_MS))
    chunk = bytes(rng.randrange(256) for _ in range(40 * BYTES_PER_MS))
    events: list[tuple] = []
    for i in range(int(secs * 50)):
        arrives = _ORIGIN + (i + 1) * 0.02 + rng.uniform(0.002, 0.010)
        events.append((arrives, CALLER, packet, i * 20))
    t, marks, runs, played = 0.5, 0, 0, 0.0
    while True:
        t += rng.uniform(2, 8) + rng.uniform(0.5, 1.0)  # the caller's turn, then the latency
        length = rng.randrange(50, 300) * _CHUNK_S
        if t + length + 1 > secs:
            break
        cut_after = length * rng.uniform(0.3, 0.8) if rng.random() < 1 / 6 else None
        plays_from = t + rng.uniform(0.03, 0.06)  # the first chunk crosses to the phone
        clear_at = plays_from + cut_after if cut_after is not None else None
        runs += 1
        start = f"s{runs}"
        k = 0
        while k * _CHUNK_S < length:
            play_start = plays_from + k * _CHUNK_S
            sent = max(t + k * 0.0005, play_start - _LEAD_S)
            if clear_at is not None and sent >= clear_at:
                break  # the caller cut in first: never sent
            marks += 1
            events.append((_ORIGIN + sent, SENT, chunk, (f"m{marks}", start if k == 0 else None)))
            if k == 0:
                events.append((_ORIGIN + play_start + rng.uniform(0.02, 0.06), ECHO, start, None))
            play_end = play_start + _CHUNK_S
            if clear_at is None or play_end <= clear_at:  # played whole: its mark is echoed
                events.append((_ORIGIN + play_end + rng.uniform(0.02, 0.06), ECHO, f"m{marks}", 0))
            k += 1
        if clear_at is not None:
            unplayed = round((k * _CHUNK_S - cut_after) * SAMPLE_RATE)
            events.append((_ORIGIN + clear_at, CLEAR, max(unplayed, 0), None))
            played += cut_after
            t = clear_at
        else:
            played += k * _CHUNK_S
            t = plays_from + length
    events.sort(key=lambda event: event[0])
    counts = {kind: sum(1 for e in events if e[1] == kind) for kind in (CALLER, SENT, ECHO, CLEAR)}
    counts["runs"] = runs
    counts["bot_secs"] = played
    return events, counts


def feed(recorder: CallRecorder, events: list[tuple]) -> float:
    """Every event through the recorder's hooks; the seconds it took.

    Args:
        recorder: A fresh recorder.
        events: From :func:`hour_script`.

    Returns:
        Wall seconds.
    """
    caller_audio, bot_sent = recorder.caller_audio, recorder.bot_sent
    bot_echoed, bot_cleared = recorder.bot_echoed, recorder.bot_cleared
    began = time.perf_counter()
    for now, kind, a, b in events:
        if kind == CALLER:
            caller_audio(a, b, now)
        elif kind == SENT:
            bot_sent(a, b[0], now, start_mark=b[1])
        elif kind == ECHO:
            bot_echoed(a, now)
        else:
            bot_cleared(a, now)
    return time.perf_counter() - began


def feed_bare(events: list[tuple]) -> float:
    """The baseline: the same events, the audio appended to two bytearrays, nothing else.

    Args:
        events: From :func:`hour_script`.

    Returns:
        Wall seconds.
    """
    caller, bot = bytearray(), bytearray()
    began = time.perf_counter()
    for _now, kind, a, _b in events:
        if kind == CALLER:
            caller += a
        elif kind == SENT:
            bot += a
        # Echoes and clears: nothing to keep.
    return time.perf_counter() - began


def per_hook_ns(events: list[tuple]) -> dict[str, float]:
    """Each hook timed call by call (the timer's own cost taken off), mean ns per call.

    Also the bare ``bytearray`` append of the caller's packet and of a bot chunk, timed
    the same way, as baselines.

    Args:
        events: From :func:`hour_script`.

    Returns:
        Name to mean ns.
    """
    clock = time.perf_counter_ns
    overhead = []
    for _ in range(200_000):
        t0 = clock()
        overhead.append(clock() - t0)
    timer = statistics.fmean(overhead)
    recorder = CallRecorder()
    caller, bot = bytearray(), bytearray()
    spent = {n: 0 for n in ("caller_audio", "bot_sent", "bot_echoed", "bot_cleared")}
    spent |= {"caller append": 0, "bot append": 0}
    calls = dict.fromkeys(spent, 0)

    def add(name: str, ns: int) -> None:
        spent[name] += ns
        calls[name] += 1

    for now, kind, a, b in events:
        if kind == CALLER:
            t0 = clock()
            recorder.caller_audio(a, b, now)
            t1 = clock()
            caller += a
            t2 = clock()
            add("caller_audio", t1 - t0)
            add("caller append", t2 - t1)
        elif kind == SENT:
            t0 = clock()
            recorder.bot_sent(a, b[0], now, start_mark=b[1])
            t1 = clock()
            bot += a
            t2 = clock()
            add("bot_sent", t1 - t0)
            add("bot append", t2 - t1)
        elif kind == ECHO:
            t0 = clock()
            recorder.bot_echoed(a, now)
            add("bot_echoed", clock() - t0)
        else:
            t0 = clock()
            recorder.bot_cleared(a, now)
            add("bot_cleared", clock() - t0)
    out = {name: max(0.0, spent[name] / calls[name] - timer) for name in spent if calls[name]}
    out["timer"] = timer
    return out


def check_wav(data: bytes) -> tuple[int, int, float]:
    """The WAV's channels, rate and seconds, read back with ``wave``.

    Args:
        data: The WAV.

    Returns:
        (channels, rate, seconds).
    """
    with wave.open(io.BytesIO(data), "rb") as file:
        return file.getnchannels(), file.getframerate(), file.getnframes() / file.getframerate()


def hour(args) -> dict:
    """The in-process part: an hour of call through the hooks, then its WAV.

    Args:
        args: The options (``hour_secs``, ``repeat``).

    Returns:
        Its figures.
    """
    events, counts = hour_script(args.hour_secs)
    # The script is this benchmark's, not the recorder's: out of the collector's way (as
    # the runner freezes its start-up objects), or every collection the recorder's own
    # objects trigger walks its 300,000 tuples and is charged to the hooks.
    gc.collect()
    gc.freeze()
    hooks, bare = [], []
    recorder = None
    for _ in range(args.repeat):  # interleaved, so both see the same machine
        bare.append(feed_bare(events))
        recorder = CallRecorder()
        hooks.append(feed(recorder, events))
    passes = [per_hook_ns(events) for _ in range(args.repeat)]
    per_hook = {name: statistics.median(p[name] for p in passes) for name in passes[0]}
    builds = []
    wav = b""
    for _ in range(args.repeat):
        began = time.perf_counter()
        wav = recorder.wav()
        builds.append(time.perf_counter() - began)
    channels, rate, wav_secs = check_wav(wav)
    placed = sum(p.stop - p.start for p in recorder.placements()) / SAMPLE_RATE
    wav_bytes = len(wav)
    del wav
    # Memory, on its own pass (tracemalloc slows allocation down): the recorder after
    # the hour, and the WAV's build on top of it.
    tracemalloc.start()
    fresh = CallRecorder()
    feed(fresh, events)
    held, feed_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    wav = fresh.wav()
    _, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del wav
    return {
        "secs": args.hour_secs,
        "counts": counts,
        "hooks_s": statistics.median(hooks),
        "bare_s": statistics.median(bare),
        "per_hook_ns": per_hook,
        "wav_build_s": statistics.median(builds),
        "wav_bytes": wav_bytes,
        "wav": {"channels": channels, "rate": rate, "secs": wav_secs},
        "bot_placed_s": placed,
        "held_mb": held / 2**20,
        "feed_peak_mb": feed_peak / 2**20,
        "build_peak_mb": build_peak / 2**20,
    }


# ------------------------------------------------------------------------------------------
# the tables
# ------------------------------------------------------------------------------------------


def _ratio(on, off) -> str:
    if on is None or off is None or off == 0:
        return "-"
    return f"{on / off:.2f}x"


def _median(levels: list[dict], key: str):
    values = [level[key] for level in levels if level[key] is not None]
    if key == "failed":
        return sum(values)
    return statistics.median(values) if values else None


def print_levels(levels: dict) -> None:
    """The on-the-wire table, and on/off per level (Markdown).

    Args:
        levels: ``{(record, calls): [figures of each round]}``.
    """
    fmt = compare._fmt
    rounds = max(len(runs) for runs in levels.values())
    print()
    print(
        "Runner, RECORD_CALLS off (baseline) and on, each level on a fresh process"
        + (f", {rounds} rounds of off then on:" if rounds > 1 else ":")
    )
    print()
    compare._row(
        "calls",
        "round",
        "RECORD_CALLS",
        "failed",
        "CPU s per call-s",
        "RSS MB per call",
        "idle RSS MB",
        "onset p99 in / out ms",
        "bit-exact",
        "WAVs checked",
    )
    compare._row("---:", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---", "---")
    notes = []
    for calls in sorted({c for _, c in levels}):
        for index in range(rounds):
            for record in (False, True):
                runs = levels.get((record, calls), [])
                if index >= len(runs):
                    continue
                level = runs[index]
                checked = level["recordings"]
                wavs = "-"
                if checked is not None:
                    wavs = (
                        f"{checked['valid']}/{checked['expected']} 2 ch 8 kHz, "
                        f"{checked['on_record']} on their record, {checked['seconds']:.0f} s"
                    )
                    notes += [f"on at {calls}: {p}" for p in checked["problems"][:3]]
                name = "on" if record else "off"
                compare._row(
                    calls,
                    index + 1,
                    name,
                    level["failed"],
                    fmt(level["cpu_s_per_call_s"], "", 4),
                    fmt(level["rss_mb_per_call"], "", 2),
                    fmt(level["rss_idle_mb"], "", 1),
                    f"{fmt(level['onset_in_p99_ms'])} / {fmt(level['onset_out_p99_ms'])}",
                    fmt(level["bit_exact"]),
                    wavs,
                )
                notes += [f"{name} at {calls}: {e}" for e in level["errors"]]
                notes += [f"{name} at {calls}: {p}" for p in level["problems"]]
    for note in notes:
        print(f"- {note}")
    print()
    print(
        "On / off"
        + (f" (median of the {rounds} rounds; failed: all rounds):" if rounds > 1 else ":")
    )
    print()
    compare._row("figure", "off", "on", "on/off")
    compare._row("---", "---:", "---:", "---:")
    for calls in sorted({c for _, c in levels}):
        off, on = levels.get((False, calls)), levels.get((True, calls))
        if not off or not on:
            continue
        for key, label, digits in (
            ("cpu_s_per_call_s", "CPU s per call-second", 4),
            ("rss_mb_per_call", "RSS MB per call", 2),
            ("onset_in_p99_ms", "onset caller->OpenAI p99 ms", 1),
            ("onset_out_p99_ms", "onset OpenAI->caller p99 ms", 1),
            ("failed", "failed calls", 0),
        ):
            a, b = _median(off, key), _median(on, key)
            compare._row(
                f"{label}, {calls} calls",
                fmt(a, "", digits),
                fmt(b, "", digits),
                _ratio(b, a) if key != "failed" else "",
            )


def print_hour(h: dict) -> None:
    """The in-process table (Markdown).

    Args:
        h: From :func:`hour`.
    """
    c = h["counts"]
    packets = c[CALLER]
    print()
    print(
        f"CallRecorder, {h['secs'] / 60:g} min of call in this process: {packets} caller "
        f"packets, {c[SENT]} bot chunks in {c['runs']} answers ({c['bot_secs']:.0f} s played), "
        f"{c[ECHO]} mark echoes, {c[CLEAR]} clears; times the median of the passes."
    )
    print()
    compare._row("figure", "value", "baseline", "ratio")
    compare._row("---", "---:", "---:", "---:")
    hooks_us = h["hooks_s"] / packets * 1e6
    bare_us = h["bare_s"] / packets * 1e6
    compare._row(
        "all hooks, per 20 ms caller packet (loop total / packets)",
        f"{hooks_us:.2f} µs",
        f"{bare_us:.2f} µs",
        _ratio(hooks_us, bare_us),
    )
    compare._row(
        "all hooks, the whole call",
        f"{h['hooks_s'] * 1000:.0f} ms",
        f"{h['bare_s'] * 1000:.0f} ms",
        _ratio(h["hooks_s"], h["bare_s"]),
    )
    ns = h["per_hook_ns"]
    for hook, base in (
        ("caller_audio", "caller append"),
        ("bot_sent", "bot append"),
        ("bot_echoed", None),
        ("bot_cleared", None),
    ):
        if hook not in ns:
            continue
        compare._row(
            f"{hook}, per call (timed one by one)",
            f"{ns[hook] / 1000:.2f} µs",
            f"{ns[base] / 1000:.2f} µs" if base else "",
            _ratio(ns[hook], ns[base]) if base else "",
        )
    compare._row("build the WAV (`wav()`)", f"{h['wav_build_s'] * 1000:.0f} ms", "", "")
    compare._row(
        "build the WAV, per hour of call",
        f"{h['wav_build_s'] / h['secs'] * 3600 * 1000:.0f} ms",
        "",
        "",
    )
    compare._row("WAV size", f"{h['wav_bytes'] / 2**20:.1f} MB", "", "")
    w = h["wav"]
    compare._row(
        "WAV read back",
        f"{w['channels']} ch, {w['rate']} Hz, {w['secs']:.0f} s",
        "",
        "",
    )
    compare._row("bot audio placed in the WAV", f"{h['bot_placed_s']:.0f} s", "", "")
    compare._row("recorder's memory after the hour (tracemalloc)", f"{h['held_mb']:.1f} MB", "", "")
    compare._row("peak while feeding the hour", f"{h['feed_peak_mb']:.1f} MB", "", "")
    compare._row(
        "peak while building the WAV (the recorder's buffers included)",
        f"{h['build_peak_mb']:.1f} MB",
        f"{h['wav_bytes'] / 2**20:.1f} MB (WAV)",
        _ratio(h["build_peak_mb"], h["wav_bytes"] / 2**20),
    )
    print()
    print(
        f"(Timer's own cost taken off the one-by-one figures: {ns['timer']:.0f} ns a call; "
        f"a 20 ms packet is 20000 µs of call.)"
    )


async def main_async(args) -> dict:
    """Every level, off then on.

    Args:
        args: The options.

    Returns:
        ``{(record, calls): [figures of each round]}``.
    """
    levels: dict[tuple[bool, int], list[dict]] = {}
    for calls in args.levels:
        for index in range(args.rounds):
            for record in (False, True):
                print(
                    f"  RECORD_CALLS={record}: {calls} calls, round {index + 1}...",
                    file=sys.stderr,
                    flush=True,
                )
                level = await run_level(record, calls, args)
                levels.setdefault((record, calls), []).append(level)
    return levels


def main() -> None:
    """Parse the options, run both parts, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--levels",
        type=lambda s: sorted({int(x) for x in s.split(",") if x}),
        default=[1, 10],
        help="concurrent calls per level, comma-separated (default 1,10; empty: none)",
    )
    parser.add_argument("--ttfb-ms", type=float, default=300.0, help="emulator time to first byte")
    parser.add_argument(
        "--answer-gap-ms", type=float, default=400.0, help="webhook answered -> stream start"
    )
    parser.add_argument(
        "--send-rate", type=float, default=4.0, help="emulator audio pace, x real time"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="off-then-on rounds per level (medians shown)"
    )
    parser.add_argument(
        "--hour-secs", type=float, default=3600.0, help="length of the in-process call"
    )
    parser.add_argument("--repeat", type=int, default=3, help="passes of the in-process part")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    levels = asyncio.run(main_async(args)) if args.levels else {}
    print("  in-process hour...", file=sys.stderr, flush=True)
    h = hour(args)
    if levels:
        print_levels(levels)
    print_hour(h)
    if args.json:
        out = {
            "levels": {f"{'on' if r else 'off'}/{c}": lvs for (r, c), lvs in levels.items()},
            "hour": h,
        }
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
