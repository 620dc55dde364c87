"""Load: N concurrent simulated calls against one runner process.

Usage (from the repository root)::

    .venv/bin/python benchmarks/load.py --calls 10 [--calls 50 ...] [--json]

For each N it starts ``pipecat-realtime-twilio serve`` as a separate process
(so its CPU and memory are its own), with the bundled Realtime emulator and N
simulated Twilio callers in this process. Every caller dials, hears the
greeting, speaks, hears the answer and hangs up. It prints:

- failed calls (an exception, a timeout, no greeting or no answer heard);
- CPU seconds per call-second: the runner's CPU time (user + system, from
  /proc) over the calls' total duration;
- RSS per call: the runner's peak resident memory with N calls minus its
  resident memory before the first call, divided by N;
- first-audio latency p50/p99: stream start to the first greeting audio played
  at the simulated phone.

The callers and the emulator share this process; on a small machine they take
CPU too, which the figures for the runner do not include. This is a script, not
a test: the machine is shared and noisy, so nothing here asserts a time.
"""

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from pipecat_realtime_twilio.settings import Settings  # noqa: E402
from pipecat_realtime_twilio.testing.caller import TwilioCaller  # noqa: E402
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply  # noqa: E402
from pipecat_realtime_twilio.testing.model import say_as_asked  # noqa: E402
from pipecat_realtime_twilio.testing.server import free_port, wait_for_port  # noqa: E402
from pipecat_realtime_twilio.testing.sounds import silence, tone  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


async def _one_call(public: str, token: str, emulator: RealtimeEmulator) -> dict:
    caller = TwilioCaller(server_url=public, public_url=public, auth_token=token)
    try:
        await caller.call()
        await caller.wait_quiet(quiet_ms=600, timeout=30)
        greeting = len(caller.heard)
        first_audio = caller.play_time_of(0)
        await caller.say(tone(800) + silence(900))
        await caller.wait_quiet(after=greeting, quiet_ms=600, timeout=30)
        answered = len(caller.heard) > greeting
        await caller.hangup()
        duration = caller.hung_up_at - caller.started_at
        ok = greeting > 0 and answered
        return {
            "ok": ok,
            "first_audio_ms": (first_audio - caller.started_at) * 1000 if first_audio else None,
            "duration_s": duration,
        }
    except Exception as e:  # a failed call, counted, not fatal to the run
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "duration_s": 0.0}
    finally:
        await caller.close()


async def run(calls: int) -> dict:
    """Run ``calls`` concurrent calls against a fresh runner; return the figures."""
    token = secrets.token_hex(16)
    async with RealtimeEmulator(replies=say_as_asked(Reply(text="Sure, happy to help."))) as em:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        names = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k not in names}
        with tempfile.TemporaryDirectory() as tmp:
            env.update(
                OPENAI_API_KEY="sk-load",
                OPENAI_REALTIME_URL=em.url,
                TWILIO_AUTH_TOKEN=token,
                PUBLIC_URL=public,
                PORT=str(port),
                BOTS_DIR=str(ROOT / "bots"),
                DATABASE_URL=f"sqlite:///{tmp}/calls.db",
                MAX_CALLS=str(calls + 10),
                LOG_LEVEL="WARNING",
            )
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pipecat_realtime_twilio",
                "serve",
                cwd=tmp,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await wait_for_port(port, process)
                await asyncio.sleep(0.5)
                rss_idle = _rss_bytes(process.pid)
                cpu_before = _cpu_secs(process.pid)
                peak = {"rss": rss_idle}

                async def watch_rss():
                    while True:
                        peak["rss"] = max(peak["rss"], _rss_bytes(process.pid))
                        await asyncio.sleep(0.1)

                watcher = asyncio.create_task(watch_rss())
                results = await asyncio.gather(
                    *(_one_call(public, token, em) for _ in range(calls))
                )
                watcher.cancel()
                cpu = _cpu_secs(process.pid) - cpu_before
            finally:
                process.terminate()
                await process.wait()
    call_secs = sum(r["duration_s"] for r in results)
    latencies = sorted(r["first_audio_ms"] for r in results if r.get("first_audio_ms"))
    errors = [r["error"] for r in results if r.get("error")]
    return {
        "calls": calls,
        "failed": sum(not r["ok"] for r in results),
        "errors": errors[:5],
        "cpu_s_per_call_s": cpu / call_secs if call_secs else None,
        "rss_mb_per_call": (peak["rss"] - rss_idle) / calls / 2**20,
        "rss_idle_mb": rss_idle / 2**20,
        "first_audio_p50_ms": statistics.median(latencies) if latencies else None,
        "first_audio_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else None,
    }


def main() -> None:
    """Parse the options, run each load, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, action="append", help="concurrent calls (repeat)")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}", flush=True)
    print(
        f"{'calls':>5} {'failed':>6} {'CPU s/call-s':>13} {'RSS MB/call':>12} "
        f"{'idle RSS MB':>12} {'first audio p50':>16} {'p99':>8}",
        flush=True,
    )
    for calls in args.calls or [10]:
        figures = asyncio.run(run(calls))
        if args.json:
            print(json.dumps(figures), flush=True)
            continue
        print(
            f"{figures['calls']:>5} {figures['failed']:>6} {figures['cpu_s_per_call_s']:>13.4f} "
            f"{figures['rss_mb_per_call']:>12.2f} {figures['rss_idle_mb']:>12.1f} "
            f"{figures['first_audio_p50_ms']:>13.0f} ms {figures['first_audio_p99_ms']:>5.0f} ms",
            flush=True,
        )
        for error in figures["errors"]:
            print(f"      error: {error}", flush=True)


if __name__ == "__main__":
    main()
