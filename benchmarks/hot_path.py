"""Where the runner's CPU goes: the benchmark's calls against a runner under cProfile.

Usage (from the repository root)::

    .venv/bin/python benchmarks/hot_path.py [--calls 1] [--calls 50] [--top 25]

For each ``--calls N`` it starts the runner in a child process with Python's
profiler counting CPU time (not wall time, so waiting and other processes do not
show), places N of ``benchmarks/compare.py``'s scripted calls at once, then
prints the runner's CPU time by area (websocket framing, JSON, Pipecat's frame
machinery, this package...) and its costliest functions. The profiler slows the
runner down a few times over, so read the shares, not the absolute times; at 50
calls the slowed runner may also fail some calls.
"""

import argparse
import asyncio
import cProfile
import os
import pstats
import secrets
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

AREAS = [
    ("websocket framing (websockets, uvicorn)", ("/websockets/", "/uvicorn/", "/starlette/")),
    ("Pipecat frames and pipeline", ("/pipecat/",)),
    ("this package", ("pipecat_realtime_twilio",)),
    ("JSON", ("/json/", "json.")),
    ("asyncio", ("/asyncio/",)),
]


def _serve_profiled(out: str) -> None:
    """Child process: the runner under a CPU-time profiler until SIGUSR1."""
    import uvicorn

    from pipecat_realtime_twilio.runner.app import create_app
    from pipecat_realtime_twilio.runner.bots import load_bots
    from pipecat_realtime_twilio.settings import load_settings

    settings = load_settings()
    app = create_app(settings, load_bots(settings.bots_dir))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
    )
    profiler = cProfile.Profile(time.process_time)

    def stop(*_):
        profiler.disable()
        profiler.dump_stats(out)
        server.should_exit = True

    signal.signal(signal.SIGUSR1, stop)
    profiler.enable()
    server.run()


async def _profile(calls: int, out: str) -> tuple[int, float]:
    import compare

    from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator

    token = secrets.token_hex(16)
    async with RealtimeEmulator(replies=compare._reply_for, ttfb_ms=300) as emulator:
        port = compare.free_port()
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            env = compare._env(compare.OURS, port, emulator.url, token, tmp, calls)
            env["PYTHONPATH"] = str(ROOT)
            system = compare.System("profiled", [__file__, "--serve", out], "/readyz")
            process, _ = await compare.start_server(system, env, port, tmp)
            runs = [compare.CallRun(pitch=300 + 7 * i) for i in range(calls)]

            async def staggered(i: int, run):
                await asyncio.sleep(i / calls)
                await compare.run_call(run, url, token, 400)

            await asyncio.gather(*(staggered(i, r) for i, r in enumerate(runs)))
            os.kill(process.pid, signal.SIGUSR1)
            await process.wait()
    return sum(not r.ok for r in runs), sum(r.duration_s for r in runs)


def _area(filename: str) -> str:
    for name, needles in AREAS:
        if any(needle in filename for needle in needles):
            return name
    return "other (builtins, sockets, numpy...)"


def report(out: str, calls: int, failed: int, call_secs: float, top: int) -> None:
    """Print CPU by area and the costliest functions."""
    stats = pstats.Stats(out)
    by_area: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():
        area = _area(filename if filename != "~" else name)
        by_area[area] += tottime
        total += tottime
    print(f"\n{calls} calls ({failed} failed), {call_secs:.0f} call-seconds, ", end="")
    print(f"profiled CPU {total:.1f} s")
    print()
    print("| area | CPU share |")
    print("| --- | ---: |")
    for area, secs in sorted(by_area.items(), key=lambda kv: -kv[1]):
        print(f"| {area} | {100 * secs / total:.0f}% |")
    print()
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    """Parse the options; profile each load."""
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _serve_profiled(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, action="append", help="concurrent calls (repeat)")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    for calls in args.calls or [1, 50]:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "runner.prof")
            failed, call_secs = asyncio.run(_profile(calls, out))
            report(out, calls, failed, call_secs, args.top)


if __name__ == "__main__":
    main()
