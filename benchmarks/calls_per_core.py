"""Calls per core: the most concurrent calls one CPU core of the runner holds.

Usage (from the repository root)::

    .venv/bin/python benchmarks/calls_per_core.py [--levels 4,8,...] [--json FILE]
    .venv/bin/python benchmarks/calls_per_core.py --quick

The runner (``pipecat-realtime-twilio serve``, the default bot, pre-warm on,
``MAX_CALLS`` far above the load, its log in a file) runs pinned to one core
(``taskset -c 0``); this process, the Realtime emulator and the simulated Twilio
callers, pins itself to another. Each level starts a fresh runner and places that
many concurrent calls, arriving over its first second, each compare.py's scripted
call (greeting, three questions answered, a fourth answer cut into, its answer,
hang-up: about 25 s), ``--rounds`` times (3), the samples of every round pooled.
Levels rise until one misses, then a bisection between the last that held and the
first that missed finds the limit.

A level holds with no failed call and onset p99 <= ``--onset-limit-ms`` (20 ms) both
ways, as compare.py measures them (caller -> OpenAI: an utterance's first packet
sent to the first append with its sound at the emulator; OpenAI -> caller: an
answer's first delta sent to its first sound at the phone). Per level: those, the
runner's CPU from ``/proc/PID/stat`` (mean share of its core, peak over half-second
windows, CPU s per call-second), its peak RSS, and the harness's CPU share of its
core and loop lag p99: when the harness's core is saturated its late stamps count
against the runner, and the figure is a lower bound; and what other processes
used of each core (``/proc/stat``): above 10% the machine was not quiet. Nothing
asserts a time; run it on a quiet machine. It refuses, in one line (exit 2), with
fewer than 2 cores or without ``taskset``.
"""

import argparse
import asyncio
import copy
import json
import os
import platform
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from loguru import logger  # noqa: E402

logger.remove()  # before Pipecat is imported: its banner would precede a refusal's one line
logger.add(sys.stderr, level="ERROR")

import compare  # noqa: E402

from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator  # noqa: E402

LEVELS = [4, 8, 12, 16, 24, 32, 48, 64]
QUICK_LEVELS = [2, 4]
_READY_SECS = 60.0  # the longest wait for the runner's first ready 200
_STOP_SECS = 30.0  # the longest wait for the runner to exit after SIGTERM
_SETTLE_SECS = 0.5  # before the first call and after the last, the runner idles
_CPU_WINDOW_SECS = 0.5  # the runner's CPU peak is over windows this long
_HARNESS_BUSY_SHARE = 0.9  # the harness's core this busy, or ...
_HARNESS_LAG_MS = 20.0  # ... its loop this late (p99): its stamps are late too
_OTHERS_SHARE = 0.1  # other processes used this much of a core: the machine was not quiet
_TICKS = os.sysconf("SC_CLK_TCK")


def refusal() -> str | None:
    """Why this machine cannot run the benchmark, or None when it can.

    Returns:
        One line, or None.
    """
    if not hasattr(os, "sched_getaffinity") or not Path("/proc/self/stat").exists():
        return "calls_per_core: needs Linux (/proc and CPU affinity)"
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        return f"calls_per_core: needs at least 2 CPU cores, this process may use {cores}"
    if shutil.which("taskset") is None:
        return "calls_per_core: needs taskset (util-linux) on the PATH"
    return None


def machine_facts() -> dict[str, Any]:
    """The CPU model, ``nproc``, Python, the load average and the date, for the report."""
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "nproc": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "loadavg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _runner_command(core: int) -> list[str]:
    script = Path(sys.executable).parent / "pipecat-realtime-twilio"
    serve = [str(script)] if script.exists() else [sys.executable, "-m", "pipecat_realtime_twilio"]
    return ["taskset", "-c", str(core), *serve, "serve"]


def _proc_field(path: str, name: str, separator: str = ":") -> str | None:
    """The rest of the first line of ``path`` that starts with ``name`` and ``separator``."""
    for line in Path(path).read_text().splitlines():
        key, found, rest = line.partition(separator)
        if found and key.strip() == name:
            return rest.strip()
    return None


def _busy_secs(core: int) -> float:
    """CPU seconds ``core`` has spent on anything but idle and I/O wait (``/proc/stat``)."""
    ticks = [int(x) for x in (_proc_field("/proc/stat", f"cpu{core}", " ") or "").split()]
    return (sum(ticks[:8]) - sum(ticks[3:5])) / _TICKS


async def _start_runner(
    env: dict[str, str], port: int, core: int, cwd: str, log: Path
) -> asyncio.subprocess.Process:
    """The runner pinned to ``core``, ready (``taskset`` execs it: the PID is the runner's)."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *_runner_command(core),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    began = time.monotonic()
    while await compare._http_status(port, "/readyz") != 200:
        if process.returncode is not None:
            raise RuntimeError(f"the runner exited with {process.returncode}; see {log}")
        if time.monotonic() - began > _READY_SECS:
            process.kill()
            await process.wait()
            raise RuntimeError(f"the runner was not ready in {_READY_SECS:g} s; see {log}")
        await asyncio.sleep(0.02)
    return process


async def _stop_runner(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (the runner drains, its calls are over), then SIGKILL if it lingers."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), _STOP_SECS)
    except TimeoutError:
        process.kill()
        await process.wait()


class Watch:
    """The runner's CPU and RSS, and this process's loop lag, sampled during a level."""

    def __init__(self, pid: int):
        self.pid = pid
        self.cpu_peak_share = 0.0
        self.rss_peak = compare._rss_bytes(pid)
        self.lags_ms: list[float] = []
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Start sampling."""
        self._tasks = [asyncio.create_task(self._runner()), asyncio.create_task(self._loop())]

    async def stop(self) -> None:
        """Stop sampling."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _runner(self) -> None:
        cpu, at = compare._cpu_secs(self.pid), time.monotonic()
        while True:
            await asyncio.sleep(_CPU_WINDOW_SECS)
            now_cpu, now = compare._cpu_secs(self.pid), time.monotonic()
            self.cpu_peak_share = max(self.cpu_peak_share, (now_cpu - cpu) / (now - at))
            self.rss_peak = max(self.rss_peak, compare._rss_bytes(self.pid))
            cpu, at = now_cpu, now

    async def _loop(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags_ms.append((time.monotonic() - before - 0.01) * 1000)


async def run_rounds(calls: int, args: argparse.Namespace) -> dict[str, Any]:
    """A level ``args.rounds`` times, each on a fresh runner, its samples pooled.

    One level gives five answers and five utterances a call, so its p99 is close to its
    largest sample: a single stall of the machine decides it. Pooled over rounds, the
    p99 leaves the worst 1% out, as a percentile should.

    Args:
        calls: Concurrent calls.
        args: The options.

    Returns:
        The level: failed calls, errors and problems of every round; onset p99 over every
        round's samples; CPU and harness shares averaged; peaks and lags at their worst.
    """
    rounds = [await run_level(calls, args, r) for r in range(args.rounds)]
    level = dict(rounds[0])
    figures = copy.copy(rounds[0]["figures"])
    figures.onset_in_ms = [x for r in rounds for x in r["figures"].onset_in_ms]
    figures.onset_out_ms = [x for r in rounds for x in r["figures"].onset_out_ms]
    figures.problems = [x for r in rounds for x in r["figures"].problems]

    def mean(key: str) -> float | None:
        values = [r[key] for r in rounds if r[key] is not None]
        return sum(values) / len(values) if values else None

    def worst(key: str) -> float | None:
        values = [r[key] for r in rounds if r[key] is not None]
        return max(values) if values else None

    level.update(
        rounds=len(rounds),
        failed=sum(r["failed"] for r in rounds),
        errors=sorted({e for r in rounds for e in r["errors"]})[:3],
        problems=sorted(set(figures.problems))[:3],
        validation_errors=sum(r["validation_errors"] for r in rounds),
        wall_s=sum(r["wall_s"] for r in rounds),
        onset_in_p99_ms=compare._pct(figures.onset_in_ms, 99),
        onset_out_p99_ms=compare._pct(figures.onset_out_ms, 99),
        onset_p99_by_round=[(r["onset_in_p99_ms"], r["onset_out_p99_ms"]) for r in rounds],
        samples=(len(figures.onset_in_ms), len(figures.onset_out_ms)),
        runner_cpu_share=mean("runner_cpu_share"),
        runner_cpu_peak_share=worst("runner_cpu_peak_share"),
        cpu_s_per_call_s=mean("cpu_s_per_call_s"),
        runner_rss_peak_mb=worst("runner_rss_peak_mb"),
        harness_cpu_share=mean("harness_cpu_share"),
        harness_lag_p99_ms=worst("harness_lag_p99_ms"),
        others_share=tuple(max(r["others_share"][i] for r in rounds) for i in (0, 1)),
        log=[r["log"] for r in rounds],
        figures=figures,
    )
    level["holds"] = compare.passes(level, args.onset_limit_ms)
    return level


async def run_level(calls: int, args: argparse.Namespace, round_: int = 0) -> dict[str, Any]:
    """``calls`` concurrent scripted calls against a fresh runner on its own core.

    Args:
        calls: Concurrent calls.
        args: The options.
        round_: Which round of the level this is (names its log).

    Returns:
        The level's figures (``failed`` and ``figures`` as compare.py's levels have them).
    """
    token = secrets.token_hex(16)
    log = args.log_dir / f"runner-{calls}-calls-{round_ + 1}.log"
    async with RealtimeEmulator(
        replies=compare._reply_for, ttfb_ms=args.ttfb_ms, send_rate=args.send_rate
    ) as em:
        port = compare.free_port()
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            env = compare._env(compare.OURS, port, em.url, token, tmp, calls)
            env.update(
                PREWARM="true", MAX_CALLS=str(max(1000, calls * 4)), LOG_LEVEL=args.log_level
            )
            process = await _start_runner(env, port, args.runner_core, tmp, log)
            try:
                pinned = _proc_field(f"/proc/{process.pid}/status", "Cpus_allowed_list")
                await asyncio.sleep(_SETTLE_SECS)
                watch = Watch(process.pid)
                cpu_before, own_before = compare._cpu_secs(process.pid), time.process_time()
                cores = (args.runner_core, args.harness_core)
                busy_before = [_busy_secs(core) for core in cores]
                wall = time.monotonic()
                watch.start()
                runs = [compare.CallRun(pitch=300 + 7 * i) for i in range(calls)]

                async def staggered(i: int, run: compare.CallRun) -> None:
                    await asyncio.sleep(i / calls)  # arrivals spread over the first second
                    await compare.run_call(run, url, token, args.answer_gap_ms)

                await asyncio.gather(*(staggered(i, r) for i, r in enumerate(runs)))
                await watch.stop()
                wall = time.monotonic() - wall
                cpu = compare._cpu_secs(process.pid) - cpu_before
                own_cpu = time.process_time() - own_before
                busy = [_busy_secs(c) - b for c, b in zip(cores, busy_before, strict=True)]
            finally:
                await _stop_runner(process)
        figures = compare.measure_runs(em.sessions, runs)
        validation_errors = len(em.validation_errors)
    call_secs = sum(r.duration_s for r in runs)
    level = {
        "calls": calls,
        "failed": sum(not r.ok for r in runs),
        "errors": sorted({r.error for r in runs if r.error})[:3],
        "problems": sorted(set(figures.problems))[:3],
        "validation_errors": validation_errors,
        "runner_cpus": pinned,
        "wall_s": wall,
        "onset_in_p99_ms": compare._pct(figures.onset_in_ms, 99),
        "onset_out_p99_ms": compare._pct(figures.onset_out_ms, 99),
        "samples": (len(figures.onset_in_ms), len(figures.onset_out_ms)),
        "runner_cpu_share": cpu / wall,
        "runner_cpu_peak_share": watch.cpu_peak_share,
        "cpu_s_per_call_s": cpu / call_secs if call_secs else None,
        "runner_rss_peak_mb": watch.rss_peak / 2**20,
        "harness_cpu_share": own_cpu / wall,
        "harness_lag_p99_ms": compare._pct(watch.lags_ms, 99),
        # Other processes' share of each core: the core's busy time less ours.
        "others_share": (max(0.0, busy[0] - cpu) / wall, max(0.0, busy[1] - own_cpu) / wall),
        "log": str(log),
        "figures": figures,
    }
    level["holds"] = compare.passes(level, args.onset_limit_ms)
    return level


def _harness_busy(level: dict[str, Any]) -> bool:
    """Whether the harness's own core was saturated at this level (its stamps late)."""
    lag = level["harness_lag_p99_ms"]
    return level["harness_cpu_share"] >= _HARNESS_BUSY_SHARE or (
        lag is not None and lag > _HARNESS_LAG_MS
    )


async def sweep(args: argparse.Namespace) -> tuple[dict[int, dict[str, Any]], int, int | None]:
    """Levels up until one misses, then bisect between the last that held and it.

    Args:
        args: The options (``levels``, ``resolution``).

    Returns:
        ``(levels by calls, the most calls that held, the fewest that missed or None)``.
    """
    levels: dict[int, dict[str, Any]] = {}
    good, bad = 0, None

    async def run(calls: int) -> bool:
        print(f"  {calls} calls...", file=sys.stderr, flush=True)
        levels[calls] = await run_rounds(calls, args)
        return bool(levels[calls]["holds"])

    for calls in args.levels:
        if await run(calls):
            good = calls
        else:
            bad = calls
            break
    while bad is not None and bad - good > args.resolution:
        middle = (good + bad) // 2
        if await run(middle):
            good = middle
        else:
            bad = middle
    return levels, good, bad


_COLUMNS = (
    "calls|failed|onset p99 in / out ms|samples in / out|runner CPU mean / peak|"
    "CPU s per call-s|runner RSS MB|harness CPU|harness lag p99 ms|others on the cores|holds"
).split("|")


def _print_report(
    levels: dict[int, dict[str, Any]], good: int, bad: int | None, args: argparse.Namespace
) -> None:
    """The table (Markdown), its notes, the machine, and the final line."""
    fmt, row = compare._fmt, compare._row
    print()
    print(
        f"Runner on CPU {args.runner_core}, emulator and callers on CPU {args.harness_core}; "
        f"emulator TTFB {args.ttfb_ms:g} ms, webhook -> stream {args.answer_gap_ms:g} ms, "
        f"runner LOG_LEVEL={args.log_level}; each level {args.rounds} times on a fresh runner, "
        "onset p99 over the samples of every round:"
    )
    print()
    row(*_COLUMNS)
    row(*(["---:"] * (len(_COLUMNS) - 1)), "---")
    notes = []
    for calls in sorted(levels):
        lv = levels[calls]
        row(
            calls,
            lv["failed"],
            f"{fmt(lv['onset_in_p99_ms'])} / {fmt(lv['onset_out_p99_ms'])}",
            f"{lv['samples'][0]} / {lv['samples'][1]}",
            f"{fmt(100 * lv['runner_cpu_share'], '%', 0)} / "
            f"{fmt(100 * lv['runner_cpu_peak_share'], '%', 0)}",
            fmt(lv["cpu_s_per_call_s"], "", 4),
            fmt(lv["runner_rss_peak_mb"], "", 0),
            fmt(100 * lv["harness_cpu_share"], "%", 0),
            fmt(lv["harness_lag_p99_ms"], "", 1),
            " / ".join(fmt(100 * share, "%", 0) for share in lv["others_share"]),
            "yes" if lv["holds"] else "no",
        )
        if lv["runner_cpus"] != str(args.runner_core):
            notes.append(f"at {calls}: the runner ran on CPUs {lv['runner_cpus']}")
        notes += [f"at {calls}: {error}" for error in lv["errors"]]
        notes += [f"at {calls}: {problem}" for problem in lv["problems"]]
        if lv["validation_errors"]:
            notes.append(f"at {calls}: {lv['validation_errors']} invalid client events")
        if lv["failed"] or lv["validation_errors"]:
            notes.append(f"at {calls}: the runner's logs are {', '.join(lv['log'])}")
        if len(lv["onset_p99_by_round"]) > 1:
            by_round = ", ".join(f"{fmt(i)} / {fmt(o)}" for i, o in lv["onset_p99_by_round"])
            notes.append(f"at {calls}: onset p99 in / out ms by round: {by_round}")
        if max(lv["others_share"]) > _OTHERS_SHARE:
            notes.append(f"at {calls}: other processes used the cores: the machine was not quiet")
    for note in notes:
        print(f"- {note}")
    print()
    if bad is None:
        print(f"Every level held; the limit is above {good} calls: raise --levels to find it.")
    elif _harness_busy(levels[bad]):
        lv = levels[bad]
        print(
            f"At {bad} calls the harness's core was busy too (CPU "
            f"{fmt(100 * lv['harness_cpu_share'], '%', 0)}, loop lag p99 "
            f"{fmt(lv['harness_lag_p99_ms'], ' ms')}): its late stamps count against the "
            f"runner, so {good} is a lower bound."
        )
    facts = args.facts
    print(
        f"machine: {facts['cpu_model']}, nproc {facts['nproc']}, Python {facts['python']}, "
        f"load average {facts['loadavg'][0]:.2f} at the start, {facts['date']}\n"
        f"command: {args.command}\nrunner logs: {args.log_dir}\n"
        f"took: {args.took_s / 60:.1f} min\n"
        f"calls per core: {good} (onset p99 <= {args.onset_limit_ms:g} ms, no failed call)",
        flush=True,
    )


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("levels are whole numbers of calls, at least 1")
    return levels


def parse_args() -> argparse.Namespace:
    """The command line's options.

    Returns:
        The parsed options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=_levels, help="calls per level (default 4,...,64)")
    parser.add_argument("--quick", action="store_true", help="a short check: 2 and 4 calls")
    parser.add_argument("--resolution", type=int, default=1, help="bisect down to this many calls")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each level, samples pooled (default 3)"
    )
    for name, default, text in (
        ("--onset-limit-ms", 20.0, "a level holds with onset p99 at most this both ways"),
        ("--ttfb-ms", 300.0, "emulator time to first byte"),
        ("--answer-gap-ms", 400.0, "webhook answered -> stream start"),
        ("--send-rate", 4.0, "emulator audio pace, x real time"),
    ):
        parser.add_argument(name, type=float, default=default, help=f"{text} (default {default:g})")
    parser.add_argument("--log-level", default="INFO", help="the runner's (default INFO)")
    parser.add_argument("--runner-core", type=int, help="CPU for the runner (default the first)")
    parser.add_argument("--harness-core", type=int, help="CPU for this process (default the next)")
    parser.add_argument("--log-dir", type=Path, help="the runner's logs (default a new temp dir)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    if args.levels is None:
        args.levels = QUICK_LEVELS if args.quick else LEVELS
    if args.quick:
        args.resolution = max(args.levels)  # no bisection
        args.rounds = 1
    if args.resolution < 1 or args.rounds < 1:
        parser.error("--resolution and --rounds are at least 1")
    return args


def _pick_cores(args: argparse.Namespace) -> str | None:
    allowed = sorted(os.sched_getaffinity(0))
    args.runner_core = allowed[0] if args.runner_core is None else args.runner_core
    if args.harness_core is None:
        args.harness_core = next(c for c in allowed if c != args.runner_core)
    if args.runner_core not in allowed or args.harness_core not in allowed:
        return f"calls_per_core: CPUs {args.runner_core} and {args.harness_core}: use {allowed}"
    if args.runner_core == args.harness_core:
        return "calls_per_core: the runner and the harness need two different CPUs"
    return None


def main() -> int:
    """Check the machine, pin this process, sweep, print.

    Returns:
        The exit status: 0, or 2 when the machine or the options cannot run it.
    """
    args = parse_args()
    why = refusal() or _pick_cores(args)
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    args.facts = machine_facts()
    python = os.path.relpath(sys.executable)
    args.command = shlex.join([sys.executable if python.startswith("..") else python, *sys.argv])
    for thread in os.listdir("/proc/self/task"):  # the emulator and the callers, every thread
        os.sched_setaffinity(int(thread), {args.harness_core})
    args.log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="calls-per-core-"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        levels, good, bad = asyncio.run(sweep(args))
    except RuntimeError as e:
        print(f"calls_per_core: {e}", file=sys.stderr)
        return 1
    args.took_s = time.monotonic() - began
    _print_report(levels, good, bad, args)
    if args.json:
        out = {
            "facts": args.facts,
            "command": args.command,
            "calls_per_core": good,
            "first_miss": bad,
            "levels": {str(c): {**lv, "figures": vars(lv["figures"])} for c, lv in levels.items()},
        }
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
