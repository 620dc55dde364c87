"""The state instances share (runner/shared_state.py): in this process, and in Redis.

Each "instance" is a ``SharedState`` of its own; with Redis two of them share one database,
as two runner processes would. Tests that both flavours pass are parametrized; the Redis
flavour opens sockets, so it is marked ``call``.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import AUTH_TOKEN, free_port, phone_call, runner_settings
from loguru import logger
from websockets.exceptions import InvalidStatus

from pipecat_realtime_twilio.runner import shared_state
from pipecat_realtime_twilio.runner.admission import Admission
from pipecat_realtime_twilio.runner.app import CallRunner, create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.runner.incoming import BUSY_MESSAGE
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.shared_state import SharedState
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.server import LocalServer

FLAVOURS = ["local", pytest.param("redis", marks=pytest.mark.call)]

BALANCER = "https://bot.example.com"
"""The instances' PUBLIC_URL; each test request goes straight to one of them."""


def sid(n: int) -> str:
    return f"CA{n:032x}"


def errors(metrics: RunnerMetrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "prt_shared_state_errors_total", {"operation": operation}
    )
    return value or 0.0


@pytest.fixture
async def instances(request):
    """``make(name, **settings)``: a SharedState per instance, all on one Redis or none."""
    flavour = request.param
    url = request.getfixturevalue("redis_url") if flavour == "redis" else None
    made: list[SharedState] = []

    def make(name: str = "a", **settings) -> SharedState:
        values = {"redis_url": url, "instance_id": name, **settings}
        state = SharedState(Settings(_env_file=None, **values), RunnerMetrics())
        made.append(state)
        return state

    make.flavour = flavour
    yield make
    for state in made:
        await state.close()


async def subscribed(*states: SharedState) -> None:
    """Wait until every instance of ``states`` (started) listens on the channel of handovers."""
    channel = states[0].key("streams")
    for _attempt in range(200):
        [(_, listening)] = await states[0].ask("test", lambda r: r.pubsub_numsub(channel))
        if listening >= len(states):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(states)} instances did not all subscribe to {channel}")


@contextlib.asynccontextmanager
async def runners_on_one_redis(
    emulator, redis_url: str, bots=None, *, each: dict | None = None, **settings
) -> AsyncIterator[tuple[list[LocalServer], list[CallRunner]]]:
    """Runners ``a`` and ``b`` on one Redis behind one public address, both listening.

    Args:
        emulator: The Realtime emulator they talk to.
        redis_url: Their Redis.
        bots: Their bots; ``BOTS_DIR``'s by default.
        each: Settings of one runner by name (``{"a": {...}}``), over ``settings``.
        **settings: Settings of both.

    Yields:
        The servers and their runners, ``a`` first.
    """
    servers = [LocalServer(), LocalServer()]
    for name, server in zip("ab", servers, strict=True):
        values = {**settings, **(each or {}).get(name, {})}
        config = runner_settings(
            emulator, BALANCER, redis_url=redis_url, instance_id=name, **values
        )
        server.app = create_app(config, bots if bots is not None else load_bots(config.bots_dir))
    async with servers[0], servers[1]:
        runners = [server.app.state.runner for server in servers]
        await subscribed(*(runner.admission.shared for runner in runners))
        yield servers, runners


async def settled(*states: SharedState) -> None:
    """Wait for the background writes (remember_call, free_line) of ``states``."""
    for state in states:
        if state._pending:
            await asyncio.wait(list(state._pending), timeout=5)


#
# tokens and calls
#


@pytest.mark.parametrize("instances", FLAVOURS, indirect=True)
async def test_a_stream_token_is_good_once_across_instances(instances):
    a = instances("a")
    b = instances("b") if instances.flavour == "redis" else a  # one process: one instance
    assert await a.use_token("signature-1", 2_000_000_000)
    assert not await b.use_token("signature-1", 2_000_000_000)  # another instance: refused
    assert not await a.use_token("signature-1", 2_000_000_000)
    assert await b.use_token("signature-2", 2_000_000_000)


@pytest.mark.parametrize("instances", FLAVOURS, indirect=True)
async def test_a_call_that_had_its_call_is_remembered_across_instances(instances):
    a = instances("a")
    b = instances("b") if instances.flavour == "redis" else a
    assert not await b.call_seen(sid(1))
    a.remember_call(sid(1))
    await settled(a)
    assert await b.call_seen(sid(1)) and not await b.call_seen(sid(2))


#
# the account's lines
#


@pytest.mark.parametrize("instances", FLAVOURS, indirect=True)
async def test_max_calls_total_holds_across_instances_and_leases_expire(instances):
    a = instances("a", max_calls_total=2)
    b = instances("b", max_calls_total=2) if instances.flavour == "redis" else a
    assert await a.take_line(sid(1), lease_secs=0.3)  # a webhook's short reservation
    assert await b.take_line(sid(2))  # a streaming call
    assert await a.account_full() and await b.account_full()
    assert not await a.take_line(sid(3)) and not await b.take_line(sid(3), lease_secs=5)
    assert await b.take_line(sid(2))  # its own line: renewed, not counted twice
    await asyncio.sleep(0.5)  # the reservation's lease runs out: its line is free
    assert not await a.account_full()
    assert await b.take_line(sid(3), lease_secs=5)
    b.free_line(sid(2))
    await settled(b)
    assert await a.take_line(sid(4))
    assert a._metrics.account_calls._value.get() == 2


@pytest.mark.call
async def test_a_stream_on_another_instance_takes_the_line_over(instances_redis):
    a, b = instances_redis("a", max_calls_total=1), instances_redis("b", max_calls_total=1)
    assert await a.take_line(sid(1), lease_secs=10)  # a's webhook
    assert await b.take_line(sid(1))  # its stream on b: the same line, now b's
    a.free_line(sid(1))  # a's reservation ends: b's line stays taken
    await settled(a)
    assert not await a.take_line(sid(2), lease_secs=10)
    b.free_line(sid(1))
    await settled(b)
    assert await a.take_line(sid(2), lease_secs=10)


@pytest.mark.call
async def test_a_crashed_instances_lines_free_themselves(instances_redis, monkeypatch):
    monkeypatch.setattr(shared_state, "LEASE_SECS", 1.0)
    crashed = instances_redis("crashed", max_calls_total=2)
    alive = instances_redis("alive", max_calls_total=2)
    assert await crashed.take_line(sid(1)) and await alive.take_line(sid(2))
    assert await alive.account_full()
    for _ in range(6):  # 1.8 s: the crashed one never renews, the heartbeat renews the other
        await asyncio.sleep(0.3)
        await alive.heartbeat()
    assert await alive.take_line(sid(3), lease_secs=5)  # the crashed one's line came free
    assert not await alive.take_line(sid(4), lease_secs=5)  # the live call's line is still held


@pytest.fixture
async def instances_redis(redis_url):
    made: list[SharedState] = []

    def make(name: str, **settings) -> SharedState:
        values = {"redis_url": redis_url, "instance_id": name, **settings}
        state = SharedState(Settings(_env_file=None, **values), RunnerMetrics())
        made.append(state)
        return state

    yield make
    for state in made:
        await state.close()


async def test_without_redis_max_calls_total_caps_this_process():
    settings = Settings(_env_file=None, max_calls=5, max_calls_total=2)
    admission = Admission(settings, RunnerMetrics())
    assert admission.shared.status == "off"
    assert await admission.reserve(sid(1), {}) and await admission.reserve(sid(2), {})
    assert await admission.busy_reason() == "MAX_CALLS_TOTAL=2 reached"
    assert await admission.reserve(sid(3), {}) is None
    assert admission.capacity_left() == 3  # MAX_CALLS itself has room
    admission.release(sid(1))
    assert await admission.busy_reason() is None
    assert await admission.reserve(sid(3), {})


#
# the registry, the handover, Redis going down
#


@pytest.mark.call
async def test_registry_entries_expire_without_a_heartbeat(instances_redis, monkeypatch):
    monkeypatch.setattr(shared_state, "INSTANCE_TTL_SECS", 1)
    a, b = instances_redis("a"), instances_redis("b")
    await a.start(lambda: {"active": 1, "reserved": 2, "max_calls": 20, "draining": False})
    await b.start(lambda: {"active": 0, "reserved": 0, "max_calls": 20, "draining": True})
    seen = {i.id: i for i in await a.instances()}
    assert sorted(seen) == ["a", "b"] and a._metrics.instances._value.get() == 2
    assert (seen["a"].active, seen["a"].reserved, seen["a"].draining) == (1, 2, False)
    assert seen["b"].draining and not seen["b"].ready and seen["a"].ready
    assert await b.another_ready() and not await a.another_ready()
    for task in a._tasks:  # a stops beating (as if it hung); b goes on
        task.cancel()
    await asyncio.sleep(1.5)
    await b.heartbeat()
    assert [i.id for i in await b.instances()] == ["b"]


@pytest.mark.call
async def test_the_handover_message_reaches_the_instance_that_prewarmed(instances_redis):
    a, b = instances_redis("a"), instances_redis("b")
    told_a, told_b = asyncio.Queue(), asyncio.Queue()
    a.on_stream_elsewhere, b.on_stream_elsewhere = told_a.put_nowait, told_b.put_nowait
    describe = dict
    await a.start(describe)
    await b.start(describe)
    await subscribed(a, b)
    await b.stream_started(sid(7))
    assert await asyncio.wait_for(told_a.get(), 5) == sid(7)
    assert told_b.empty()  # not its own message


@pytest.mark.call
async def test_a_handler_that_raises_does_not_stop_the_listening(instances_redis):
    a, b = instances_redis("a"), instances_redis("b")
    told: asyncio.Queue = asyncio.Queue()

    def handler(call_sid: str) -> None:
        if call_sid == sid(1):
            raise RuntimeError("a bug in a handler")
        told.put_nowait(call_sid)

    a.on_stream_elsewhere = handler
    logged: list[str] = []
    sink = logger.add(lambda m: logged.append(str(m)), level="ERROR")
    await a.start(dict)
    await b.start(dict)
    await subscribed(a, b)
    await b.stream_started(sid(1))
    await b.stream_started(sid(2))
    assert await asyncio.wait_for(told.get(), 5) == sid(2)  # the next message still comes
    logger.remove(sink)
    assert errors(a._metrics, "subscribe") == 0  # not taken for Redis going away
    assert any("a bug in a handler" in line for line in logged)


@pytest.mark.call
async def test_the_registry_is_read_in_one_step_whatever_else_redis_holds(instances_redis):
    a, b = instances_redis("a"), instances_redis("b")
    await a.start(dict)
    await b.start(dict)
    await a.ask("test", lambda r: r.mset({a.key("call", sid(n)): "1" for n in range(20_000)}))
    assert [i.id for i in await a.instances()] == ["a", "b"]
    assert a.status == "ok" and errors(a._metrics, "registry") == 0
    assert await a.alive("b") and not await a.alive("c")


@pytest.mark.call
async def test_redis_going_down_falls_back_on_what_the_instance_knows(redis_server, redis_url):
    a = SharedState(
        Settings(_env_file=None, redis_url=redis_url, instance_id="a", max_calls_total=2),
        RunnerMetrics(),
    )
    try:
        await a.start(dict)
        assert a.status == "ok" and await a.take_line(sid(1))
        redis_server.stop()
        assert await a.use_token("signature", 2_000_000_000)  # answered: this instance's record
        assert not await a.use_token("signature", 2_000_000_000)
        assert await a.take_line(sid(2))  # its own lines against MAX_CALLS_TOTAL
        assert not await a.take_line(sid(3))
        assert [i.id for i in await a.instances()] == ["a"]  # itself alone
        assert a.status == "unreachable"
        assert sum(errors(a._metrics, op) for op in ("token", "lines", "registry")) >= 3
    finally:
        await a.close()
        redis_server.start()


@pytest.mark.call
async def test_calls_are_answered_while_redis_is_unreachable():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with phone_call(settings={"redis_url": dead, "instance_id": "alone"}) as (
        _,
        runner,
        caller,
    ):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        assert len(caller.heard) > 0  # greeted
        async with httpx.AsyncClient(base_url=caller.server_url) as client:
            ready = (await client.get("/readyz")).json()
        assert ready["instance"] == "alone" and ready["shared_state"] == "unreachable"
        assert errors(runner.metrics, "token") + errors(runner.metrics, "lines") >= 1


#
# two runners on one Redis
#


@pytest.mark.call
async def test_a_stream_on_another_instance_closes_the_prewarmed_session_at_once(redis_url):
    async with RealtimeEmulator() as emulator:
        async with runners_on_one_redis(
            emulator,
            redis_url,
            max_calls=2,
            prewarm_timeout_secs=60,  # closed before that: by the handover
        ) as (servers, (a, b)):
            async with TwilioCaller(
                server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
            ) as caller:
                await caller.dial()  # a answers the webhook and pre-warms a session
                prewarmed = await emulator.wait_for_session(0)
                assert a.admission.capacity_left() == 1
                caller.server_url = servers[1].url  # the balancer sends the stream to b
                await caller.connect()
                await emulator.wait_for(lambda: prewarmed.closed, timeout=5)  # not after 60 s
                await caller.wait_quiet(quiet_ms=300, timeout=10)
                assert len(caller.heard) > 0 and list(b.active) == [caller.call_sid]
                elsewhere = a.metrics.registry.get_sample_value(
                    "prt_prewarm_total", {"outcome": "elsewhere"}
                )
                assert elsewhere == 1 and a.admission.capacity_left() == 2  # a's line freed
                assert not a.awaits_stream(caller.call_sid)

                # Draining with b ready, a sends webhooks and streams to the balancer's next.
                await a.drain(timeout=0.5)
                other = TwilioCaller(
                    server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
                )
                form = other.webhook_params()
                async with httpx.AsyncClient() as client:
                    answer = await client.post(
                        other.local_url(other.webhook_url),
                        data=form,
                        headers=other.signed_headers(other.webhook_url, form),
                    )
                assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
                other.server_url = servers[1].url  # the balancer's retry: b answers
                await other.dial()
                other.server_url = servers[0].url  # its stream reaches a, draining: 503 too
                with pytest.raises(InvalidStatus) as refused:
                    await other.connect()
                assert refused.value.response.status_code == 503
                await other.close()
                # b alone, draining too: the busy line, never an error.
                b.admission.draining = True
                await b.admission.shared.heartbeat()
                async with TwilioCaller(
                    server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
                ) as last:
                    busy = await last.dial()
                assert [v.text for v in busy.verbs][:1] == [BUSY_MESSAGE]


@pytest.mark.call
async def test_a_stream_refused_as_busy_on_another_instance_hears_the_busy_line(redis_url):
    async with RealtimeEmulator() as emulator:
        async with runners_on_one_redis(
            emulator,
            redis_url,
            each={"a": {"max_calls": 2}, "b": {"max_calls": 1}},
            prewarm_timeout_secs=60,  # closed before that: b says it took the stream
        ) as (servers, (a, b)):
            async with (
                TwilioCaller(
                    server_url=servers[1].url, public_url=BALANCER, auth_token=AUTH_TOKEN
                ) as first,
                TwilioCaller(
                    server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
                ) as second,
            ):
                await first.call()  # b's one line
                await first.wait_until(lambda: b.active, timeout=5)
                await second.dial()  # a answers the webhook and pre-warms
                prewarmed = await emulator.wait_for_session(1)
                second.server_url = servers[1].url  # the stream lands on b, full
                await second.connect()
                await second.wait_ended(timeout=5)
                await emulator.wait_for(lambda: prewarmed.closed, timeout=5)  # not after 60 s
                second.server_url = servers[0].url  # the <Connect action> reaches a
                after = await second.follow_action()
                assert [v.text for v in after.verbs][:1] == [BUSY_MESSAGE]
                assert a.admission.capacity_left() == 2  # a's line freed at once
                assert list(b.active) == [first.call_sid]


@pytest.mark.call
async def test_without_prewarm_a_stream_elsewhere_frees_the_webhooks_line_and_wait(redis_url):
    async with RealtimeEmulator() as emulator:
        async with runners_on_one_redis(emulator, redis_url, max_calls=2, prewarm=False) as (
            servers,
            (a, b),
        ):
            async with TwilioCaller(
                server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
            ) as caller:
                await caller.dial()  # a answers the webhook: a line held for the token's life
                assert a.admission.capacity_left() == 1 and a.awaits_stream(caller.call_sid)
                caller.server_url = servers[1].url  # the stream lands on b
                await caller.connect()
                await caller.wait_quiet(quiet_ms=300, timeout=10)
                assert len(caller.heard) > 0 and list(b.active) == [caller.call_sid]
                # a is told: its line and its wait end now, not when the token expires.
                await caller.wait_until(lambda: a.admission.capacity_left() == 2, timeout=5)
                assert not a.awaits_stream(caller.call_sid)
                await caller.hangup()
                await caller.wait_until(lambda: b.finished, timeout=5)
                # The <Connect action> reaching a: no "stream never came" record of a's own.
                caller.server_url = servers[0].url
                after = await caller.follow_action()
                assert [v.name for v in after.verbs] == ["Hangup"]
                assert not a.finished and [r.call_sid for r in b.finished] == [caller.call_sid]


@pytest.mark.call
async def test_a_draining_runner_serves_a_stream_at_its_own_stream_url(redis_url):
    async with RealtimeEmulator() as emulator:
        async with runners_on_one_redis(
            emulator,
            redis_url,
            each={"a": {"stream_url": "https://a.bot.example.com"}},  # b: the balancer's
            max_calls=2,
        ) as (servers, (a, b)):
            async with TwilioCaller(
                server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
            ) as caller:
                answer = await caller.dial()  # a answers the webhook: the stream goes to a alone
                assert answer.stream_url.startswith("wss://a.bot.example.com/")
                await a.drain(timeout=0.5)  # SIGTERM before the stream starts
                await b.admission.shared.heartbeat()
                assert await a.admission.shared.another_ready()  # b would take new calls
                await caller.connect()  # not 503: nobody else can take this stream
                await caller.wait_quiet(quiet_ms=300, timeout=10)
                assert len(caller.heard) > 0 and list(a.active) == [caller.call_sid]
                await caller.hangup()
