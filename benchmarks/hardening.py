"""What a stranger's large unsigned POSTs cost the runner: refusal time, and live calls' gaps.

Usage (from the repository root)::

    .venv/bin/python benchmarks/hardening.py [--samples 20] [--size-mib 8] [--flooders 20]

It starts the Realtime emulator here and ``pipecat-realtime-twilio serve`` in a
child process (as in production), then prints, measured in the same run:

1. The answer time of a small signed webhook (``POST /incoming``, Twilio's
   request): the baseline.
2. How long an unsigned POST of ``--size-mib`` MiB of tiny form fields takes to
   be refused (from connecting to the status line), its client sending the
   whole body as fast as it is taken, as ``curl --data-binary`` would; and the
   runner's CPU time per refusal against a signed webhook's.
3. The largest playback gap a live caller hears during a six-second greeting,
   without and then with a flood: ``--flooders`` clients (another process) each
   posting such bodies back to back for the greeting's length.

The issue's target: refused within 100 ms, no gap for live calls.
"""

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GREETING_MS = 6000
"""Length of the greeting the caller hears while the flood runs."""

GAP_MS = 20
"""Gaps reported: longer than one 20 ms packet."""


def _cpu_ms(pid: int) -> float:
    """CPU time of ``pid``'s main thread (the runner's event loop), in ms (Linux)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


async def _refusal_ms(port: int, size: int) -> tuple[float, int, str]:
    """One unsigned POST of ``size`` bytes: ms until its status line, bytes sent by then, status."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /incoming HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % size
    )
    sent = 0

    async def send() -> None:
        nonlocal sent
        chunk = b"a=b&" * 16384
        try:
            while sent < size:
                part = chunk[: size - sent]
                writer.write(part)
                sent += len(part)
                await writer.drain()
        except OSError:
            pass

    sending = asyncio.create_task(send())
    try:
        line = await asyncio.wait_for(reader.readline(), 120)
        status = line.split(b" ")[1].decode() if line else "closed"
    except (OSError, IndexError, TimeoutError) as e:
        status = type(e).__name__
    elapsed = (time.perf_counter() - start) * 1000
    at_answer = sent
    sending.cancel()
    writer.close()
    return elapsed, at_answer, status


async def flood(port: int, clients: int, size: int, seconds: float) -> dict:
    """``clients`` clients posting ``size``-byte unsigned bodies back to back for ``seconds``."""
    deadline = time.monotonic() + seconds
    statuses: dict[str, int] = {}

    async def client() -> None:
        while time.monotonic() < deadline:
            _, _, status = await _refusal_ms(port, size)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


async def _signed_webhook_ms(url: str, token: str) -> float:
    from pipecat_realtime_twilio.testing.caller import TwilioCaller

    caller = TwilioCaller(server_url=url, public_url=url, auth_token=token)
    start = time.perf_counter()
    answer = await caller.send_signed(caller.webhook_url, caller.webhook_params())
    elapsed = (time.perf_counter() - start) * 1000
    if answer.status != 200:
        raise RuntimeError(f"the signed webhook got {answer.status}: {answer.text[:200]}")
    return elapsed


async def _largest_gap(url: str, token: str, flood_args: list[str] | None) -> tuple[float, dict]:
    """Call, and measure the largest gap in the greeting (with a flood in a child process)."""
    from pipecat_realtime_twilio.testing.caller import TwilioCaller

    async with TwilioCaller(server_url=url, public_url=url, auth_token=token) as caller:
        await caller.call()
        await caller.wait_heard(300)
        flooded: dict = {}
        if flood_args is not None:
            child = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--flood", *flood_args, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await child.communicate()
            flooded = json.loads(out)
        await caller.wait_quiet(timeout=GREETING_MS / 1000 + 20)
        gaps = caller.gaps(min_ms=GAP_MS)
        await caller.hangup()
    return max((ms for _, ms in gaps), default=0.0), flooded


def _long_greeting(session, trigger):
    from pipecat_realtime_twilio.testing.emulator import Reply
    from pipecat_realtime_twilio.testing.model import words_to_say

    return Reply(text=words_to_say(session, trigger) or "Go on.", duration_ms=GREETING_MS)


async def run(args: argparse.Namespace) -> None:
    """Start the emulator and the runner, measure, print."""
    from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
    from pipecat_realtime_twilio.testing.server import free_port, wait_for_port

    token = secrets.token_hex(16)
    size = args.size_mib * 1024 * 1024
    async with RealtimeEmulator(replies=_long_greeting) as emulator:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                **os.environ,
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_REALTIME_URL": emulator.url,
                "TWILIO_AUTH_TOKEN": token,
                "PUBLIC_URL": url,
                "PORT": str(port),
                "BOTS_DIR": str(ROOT / "bots"),
                "DATABASE_URL": f"sqlite:///{tmp}/calls.db",
                "MAX_CALLS": "1000",
                "PREWARM": "false",
                "LOG_LEVEL": "ERROR",
            }
            with open(Path(tmp) / "runner.log", "wb") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "pipecat_realtime_twilio", "serve", cwd=tmp, env=env,
                    stderr=log,
                )  # fmt: skip
            try:
                await wait_for_port(port, process)
                await _signed_webhook_ms(url, token)  # warm up
                cpu = _cpu_ms(process.pid)
                signed = [await _signed_webhook_ms(url, token) for _ in range(args.samples)]
                signed_cpu = (_cpu_ms(process.pid) - cpu) / args.samples
                cpu = _cpu_ms(process.pid)
                refusals = [await _refusal_ms(port, size) for _ in range(args.samples)]
                await asyncio.sleep(0.5)  # the refused connections close
                refused_cpu = (_cpu_ms(process.pid) - cpu) / args.samples
                quiet_gap, _ = await _largest_gap(url, token, None)
                flood_args = [str(port), str(args.flooders), str(size), str(GREETING_MS / 2000)]
                flood_gap, flooded = await _largest_gap(url, token, flood_args)
            finally:
                process.send_signal(signal.SIGTERM)
                await process.wait()
    refused_ms = [ms for ms, _, _ in refusals]
    statuses = sorted({status for _, _, status in refusals})
    print(f"\n{args.samples} samples each; runner: `serve` in a child process\n")
    print("| figure | value |")
    print("| --- | ---: |")
    print(f"| signed webhook answered (baseline), median | {statistics.median(signed):.1f} ms |")
    print(f"| signed webhook answered (baseline), max | {max(signed):.1f} ms |")
    print(f"| runner CPU per signed webhook | {signed_cpu:.1f} ms |")
    print(
        f"| unsigned {args.size_mib} MiB POST refused, median | "
        f"{statistics.median(refused_ms):.1f} ms |"
    )
    print(f"| unsigned {args.size_mib} MiB POST refused, max | {max(refused_ms):.1f} ms |")
    print(f"| its statuses | {', '.join(statuses)} |")
    print(f"| runner CPU per refused {args.size_mib} MiB POST | {refused_cpu:.1f} ms |")
    print(f"| caller's largest gap, no flood | {quiet_gap:.0f} ms |")
    flood_total = sum(flooded.values())
    print(
        f"| caller's largest gap, flood of {args.flooders} clients "
        f"({flood_total} POSTs: {json.dumps(flooded)}) | {flood_gap:.0f} ms |"
    )


def main() -> None:
    """Parse the options and run; ``--flood PORT CLIENTS SIZE SECONDS`` is the flood's child."""
    if len(sys.argv) == 6 and sys.argv[1] == "--flood":
        port, clients, size = (int(value) for value in sys.argv[2:5])
        print(json.dumps(asyncio.run(flood(port, clients, size, float(sys.argv[5])))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20, help="webhooks and POSTs to time")
    parser.add_argument("--size-mib", type=int, default=8, help="size of an unsigned POST")
    parser.add_argument("--flooders", type=int, default=20, help="clients of the flood")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
