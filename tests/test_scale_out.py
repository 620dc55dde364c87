"""Three runners behind nginx, sharing Redis and PostgreSQL: the scale-out, measured for real.

Redis (``redis_url``) and PostgreSQL (``postgres_url``) are the workers' private servers; the
runners are ``pipecat-realtime-twilio serve`` processes with one ``PUBLIC_URL``, nginx's
address, and nginx runs docs/nginx.conf with the three of them as upstreams (round robin). The
callers talk to nginx only, as Twilio would, except where a test replays a stream straight
to one runner.
"""

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from conftest import AUTH_TOKEN, ROOT, free_port, serve_env, spawn, wait_for_port
from prometheus_client.parser import text_string_to_metric_families
from test_http_limits import NGINX, render_nginx_conf

from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.runner.incoming import BUSY_MESSAGE
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

RUNNERS = 3
MAX_CALLS_TOTAL = 4
CALLS = 30


def short_replies(session, trigger):
    """Every response a short line: calls take about a second."""
    return Reply(text="Hi.", duration_ms=400)


class Stack:
    """The runners' ports and processes, nginx's address, and what the test reads of them."""

    def __init__(self, public: str, ports: list[int], processes: list, redis_url: str):
        self.public = public
        self.ports = ports
        self.processes = processes
        self.redis = redis.Redis.from_url(redis_url)

    def caller(self, **options) -> TwilioCaller:
        """A caller that reaches the runners through nginx."""
        return TwilioCaller(
            server_url=self.public, public_url=self.public, auth_token=AUTH_TOKEN, **options
        )

    async def metric(self, port: int, name: str, **labels: str) -> float:
        """A sample of one runner's /metrics (0 when absent)."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return 0.0

    async def active(self, port: int) -> int:
        """The calls streaming on one runner now."""
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).json()["active_calls"]

    async def lines_free(self, timeout: float = 15.0) -> None:
        """Wait until no line of the account is held (every call over, every lease freed)."""
        deadline = time.monotonic() + timeout
        while await self.redis.zcard("prt:lines") > 0:
            assert time.monotonic() < deadline, "the account's lines were not freed"
            await asyncio.sleep(0.05)


async def complete(caller: TwilioCaller) -> None:
    """Place a call, hear the greeting, say something, hear the answer, hang up."""
    await caller.call()
    await caller.wait_quiet(quiet_ms=300, timeout=20)
    greeted = len(caller.heard)
    assert greeted > 0
    await caller.say(tone(600) + silence(700))
    await caller.wait_quiet(after=greeted, quiet_ms=300, timeout=20)
    assert len(caller.heard) > greeted  # the bot answered
    await caller.hangup()


async def stored(url: str, call_sids: set[str], timeout: float = 20.0) -> set[str]:
    """The CallSids among ``call_sids`` whose records are in the store, waiting for them."""
    deadline = time.monotonic() + timeout
    with CallStore(url) as store:
        while True:
            found = {sid for sid in call_sids if store.get(sid) is not None}
            if found == call_sids or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)


async def test_three_runners_behind_nginx_share_tokens_lines_prewarms_and_drain(
    tmp_path, redis_url, postgres_url
):
    if NGINX is None:
        if os.environ.get("REQUIRE_NGINX") == "1":
            pytest.fail("nginx is not installed (apt install nginx), and REQUIRE_NGINX=1")
        pytest.skip("nginx is not installed (apt install nginx)")
    async with RealtimeEmulator(replies=short_replies) as emulator:
        proxy_port = free_port()
        public = f"http://127.0.0.1:{proxy_port}"
        ports = [free_port() for _ in range(RUNNERS)]
        processes = []
        for n, port in enumerate(ports):
            folder = tmp_path / f"runner{n}"
            folder.mkdir()
            env = serve_env(
                emulator,
                port,
                folder,
                PUBLIC_URL=public,
                DATABASE_URL=postgres_url,
                REDIS_URL=redis_url,
                INSTANCE_ID=f"runner{n}",
                MAX_CALLS_TOTAL=str(MAX_CALLS_TOTAL),
                DRAIN_TIMEOUT_SECS="60",
            )
            processes.append(
                await spawn("-m", "pipecat_realtime_twilio", "serve", cwd=folder, env=env)
            )
        config = render_upstreams(tmp_path, listen=proxy_port, ports=ports)
        with open(tmp_path / "nginx-error.log", "wb") as errors:
            nginx = await asyncio.create_subprocess_exec(
                NGINX, "-p", str(tmp_path), "-c", str(config), "-e", "stderr", stderr=errors
            )
        stack = Stack(public, ports, processes, redis_url)
        callers: list[TwilioCaller] = []
        try:
            up = zip(ports, processes, strict=True)
            await asyncio.gather(*(wait_for_port(port, process) for port, process in up))
            await wait_for_port(proxy_port, timeout=20)
            completed = await thirty_calls(stack, callers)
            await token_used_once(stack, callers, completed)
            await account_cap(stack, callers)
            await sigterm_mid_call(stack, callers, completed)
            found = await stored(postgres_url, completed)
            assert found == completed, f"{len(completed - found)} records missing"
        finally:
            await asyncio.gather(*(c.close() for c in callers))
            nginx.terminate()
            await nginx.wait()
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await stack.redis.aclose()


async def thirty_calls(stack: Stack, callers: list[TwilioCaller]) -> set[str]:
    """30 calls, MAX_CALLS_TOTAL at a time, all complete; webhooks and streams spread out."""
    completed: set[str] = set()
    for start in range(0, CALLS, MAX_CALLS_TOTAL):
        batch = [stack.caller() for _ in range(min(MAX_CALLS_TOTAL, CALLS - start))]
        callers.extend(batch)
        await asyncio.gather(*(complete(c) for c in batch))
        completed |= {c.call_sid for c in batch}
        await stack.lines_free()
    prewarms = {
        port: {
            outcome: await stack.metric(port, "prt_prewarm_total", outcome=outcome)
            for outcome in ("used", "elsewhere", "expired", "dropped")
        }
        for port in stack.ports
    }
    # Each webhook pre-warmed a session: its stream took it on that instance (used), or
    # streamed on another one, which said so at once (elsewhere). None waited for its timeout.
    assert sum(p["used"] + p["elsewhere"] for p in prewarms.values()) == CALLS, prewarms
    assert sum(p["elsewhere"] for p in prewarms.values()) > 0, prewarms
    assert not any(p["expired"] or p["dropped"] for p in prewarms.values()), prewarms
    webhooks = [p["used"] + p["elsewhere"] for p in prewarms.values()]
    streams = [await stack.metric(port, "prt_calls_total") for port in stack.ports]
    assert sum(1 for n in webhooks if n) >= 2 and sum(1 for n in streams if n) >= 2
    return completed


async def token_used_once(stack: Stack, callers: list[TwilioCaller], completed: set[str]) -> None:
    """A live call's token, replayed straight to the other runners, is refused there."""
    live = stack.caller()
    callers.append(live)
    await live.call()
    await live.wait_quiet(quiet_ms=300, timeout=20)
    serving = [port for port in stack.ports if await stack.active(port)]
    assert len(serving) == 1
    for port in stack.ports:
        if port == serving[0]:
            continue
        replay = TwilioCaller(
            server_url=f"http://127.0.0.1:{port}",
            public_url=stack.public,
            auth_token=AUTH_TOKEN,
            call_sid=live.call_sid,
            account_sid=live.account_sid,
        )
        callers.append(replay)
        replay.dial_result = live.dial_result  # the same token, the same parameters
        await replay.connect()
        await replay.wait_ended(timeout=10)
        assert replay.close_code == 1008 and replay.heard == bytearray()
        assert await stack.metric(port, "prt_calls_rejected_total", reason="token") == 1
    await live.hangup()
    completed.add(live.call_sid)
    await stack.lines_free()


async def account_cap(stack: Stack, callers: list[TwilioCaller]) -> None:
    """Six calls at once over three runners: MAX_CALLS_TOTAL (4) stream, two hear busy."""
    batch = [stack.caller() for _ in range(6)]
    callers.extend(batch)
    answers = await asyncio.gather(*(c.dial() for c in batch))
    streaming = [c for c, a in zip(batch, answers, strict=True) if a.stream_url]
    busy = [a for a in answers if not a.stream_url]
    assert len(streaming) == MAX_CALLS_TOTAL
    assert [[v.text for v in a.verbs][:1] for a in busy] == [[BUSY_MESSAGE]] * 2
    await asyncio.gather(*(c.connect() for c in streaming))
    await asyncio.gather(*(c.wait_quiet(quiet_ms=300, timeout=20) for c in streaming))
    assert all(c.heard and not c.ended for c in streaming)
    assert sum([await stack.active(port) for port in stack.ports]) == MAX_CALLS_TOTAL
    await asyncio.gather(*(c.hangup() for c in streaming))
    await stack.lines_free()


async def sigterm_mid_call(stack: Stack, callers: list[TwilioCaller], completed: set[str]) -> None:
    """SIGTERM to a runner with calls: they go on to their end; new calls go to the others."""
    first = [stack.caller() for _ in range(2)]
    callers.extend(first)
    await asyncio.gather(*(c.call() for c in first))
    await asyncio.gather(*(c.wait_quiet(quiet_ms=300, timeout=20) for c in first))
    actives = [await stack.active(port) for port in stack.ports]
    draining = max(range(len(stack.ports)), key=actives.__getitem__)
    port, process = stack.ports[draining], stack.processes[draining]
    webhooks_before = await webhooks_answered(stack, port)
    process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # the registry shows it draining

    # New calls go to the other runners (a webhook or stream reaching the draining one gets
    # 503, and nginx asks the next).
    late = [stack.caller() for _ in range(MAX_CALLS_TOTAL - 2)]
    callers.extend(late)
    await asyncio.gather(*(complete(c) for c in late))
    completed |= {c.call_sid for c in late}
    assert await webhooks_answered(stack, port) == webhooks_before
    assert await stack.active(port) == actives[draining]  # its calls go on, no new one

    # Its calls go on: the callers still talk with the bot, then hang up; then it exits 0.
    for caller in first:
        before = len(caller.heard)
        await caller.say(tone(600) + silence(700))
        await caller.wait_quiet(after=before, quiet_ms=300, timeout=20)
        assert len(caller.heard) > before and not caller.ended
        await caller.hangup()
        completed.add(caller.call_sid)
    assert await asyncio.wait_for(process.wait(), timeout=30) == 0


async def webhooks_answered(stack: Stack, port: int) -> float:
    """The webhooks one runner answered with a stream (each pre-warmed a session)."""
    outcomes = ("used", "elsewhere", "expired", "dropped")  # "failed" comes on top of one
    return sum([await stack.metric(port, "prt_prewarm_total", outcome=o) for o in outcomes])


def render_upstreams(folder: Path, *, listen: int, ports: list[int]) -> Path:
    """docs/nginx.conf with the runners as its upstreams (and a webhook rate for one address).

    The callers all come from 127.0.0.1, where Twilio's requests come from a pool of
    addresses: the per-address webhook rate is raised so that it does not refuse them.
    """
    config = render_nginx_conf(folder, listen=listen, runner_port=ports[0])
    text = config.read_text()
    servers = "\n".join(f"    server 127.0.0.1:{port};" for port in ports)
    text = text.replace(f"    server 127.0.0.1:{ports[0]};", servers, 1)
    text = text.replace("rate=30r/s", "rate=1000r/s")
    upstreams = [line for line in text.splitlines() if line.startswith("    server 127.0.0.1:")]
    assert "proxy_next_upstream" in text and len(upstreams) == len(ports)
    config.write_text(text)
    return config


async def test_nginx_conf_passes_every_twilio_callback_and_operator_post(tmp_path):
    """Every route Twilio or the operator posts to reaches the runners through docs/nginx.conf."""
    settings = Settings(
        _env_file=None,
        twilio_auth_token=AUTH_TOKEN,
        public_url="https://bot.example.com",
        bots_dir=str(ROOT / "bots"),
        database_url=f"sqlite:///{tmp_path}/calls.db",
    )
    paths = create_app(settings, load_bots(settings.bots_dir)).openapi()["paths"]
    posts = {path for path, methods in paths.items() if "post" in methods}
    wanted = {p for p in posts if not p.startswith(("/api/", "/playground"))}  # kept inside
    assert {"/incoming", "/recording-status", "/campaign-status", "/campaigns"} <= wanted
    text = (ROOT / "docs" / "nginx.conf").read_text()
    locations = re.findall(r"^\s*location\s+(=|~)\s+(\S+)\s*\{(.*?)^\s*\}", text, re.M | re.S)
    proxied = [(kind, where) for kind, where, body in locations if "proxy_pass" in body]

    def passed(path: str) -> bool:
        return any(
            path == where if kind == "=" else re.search(where, path) for kind, where in proxied
        )

    assert [p for p in sorted(wanted | {"/media-stream"}) if not passed(p)] == []
    if NGINX is None:
        pytest.skip("nginx is not installed (apt install nginx)")
    config = render_nginx_conf(tmp_path, listen=free_port(), runner_port=free_port())
    checked = await asyncio.create_subprocess_exec(
        NGINX,
        "-t",
        "-p",
        str(tmp_path),
        "-c",
        str(config),
        "-e",
        "stderr",
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await checked.communicate()
    assert checked.returncode == 0, errors.decode()
