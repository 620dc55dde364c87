"""A call's stream callbacks answered by whichever instance gets them (runner/stream_handoff.py).

Behind a balancer, the ``<Connect action>`` and the stream status callbacks of one call may
reach another instance than the one that answered its webhook or ran its stream. Two
``SharedState``s on one Redis stand for two instances; then two in-process runners.
"""

import asyncio
import contextlib
import tempfile

import pytest
from conftest import AUTH_TOKEN, free_port
from test_shared_state import BALANCER, runners_on_one_redis, subscribed

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.tools import transfer_call
from pipecat_realtime_twilio.failures import FALLBACK_LINE
from pipecat_realtime_twilio.runner.bots import Bot
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.shared_state import SharedState
from pipecat_realtime_twilio.runner.stream_handoff import StreamClaim, StreamHandoff
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import FunctionCall, RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.sounds import silence, tone

"""The instances' PUBLIC_URL; each test request goes straight to one of them."""

HANDSHAKE_ERROR = "31920 Stream - WebSocket - Handshake Error"
PARAMETERS = {"bot": "test", "from": "+15551230000", "to": "+15559870000"}


def sid(n: int) -> str:
    return f"CA{n:032x}"


def errors(metrics: RunnerMetrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "prt_shared_state_errors_total", {"operation": operation}
    )
    return value or 0.0


@pytest.fixture
async def handoffs(request):
    """``make(name)``: a StreamHandoff per instance, on the test's Redis (or on none)."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else request.param
    made: list[SharedState] = []

    def make(name: str) -> StreamHandoff:
        state = SharedState(
            Settings(_env_file=None, redis_url=url, instance_id=name), RunnerMetrics()
        )
        made.append(state)
        return StreamHandoff(state)

    yield make
    for state in made:
        await state.close()


async def settled(*handoffs: StreamHandoff) -> None:
    """Wait for the background writes of ``handoffs``."""
    for handoff in handoffs:
        pending = handoff._shared._pending
        if pending:
            await asyncio.wait(list(pending), timeout=5)


#
# the handoff, two instances on one Redis
#


@pytest.mark.call
@pytest.mark.parametrize("handoffs", ["redis"], indirect=True)
async def test_an_action_answer_written_on_one_instance_is_taken_once_on_another(handoffs):
    a, b = handoffs("a"), handoffs("b")
    a.put_action(sid(1), "<Response><Dial>+15557654321</Dial></Response>")
    await settled(a)
    assert await b.take_action(sid(1)) == "<Response><Dial>+15557654321</Dial></Response>"
    assert await b.take_action(sid(1)) is None  # taken once
    await a.share_action(sid(2), "<Response><Hangup/></Response>")
    assert await a.take_action(sid(2)) == "<Response><Hangup/></Response>"  # here first
    await settled(a)
    assert await b.take_action(sid(2)) is None  # and gone from Redis too


@pytest.mark.call
@pytest.mark.parametrize("handoffs", ["redis"], indirect=True)
async def test_a_stream_that_never_came_is_claimed_by_one_instance_only(handoffs):
    a, b, c = handoffs("a"), handoffs("b"), handoffs("c")
    a.expect_stream(sid(1), PARAMETERS)  # a answered the webhook
    await settled(a)
    claims = await asyncio.gather(b.claim(sid(1)), c.claim(sid(1)), a.claim(sid(1)))
    mine = [claim for claim in claims if claim.parameters is not None]
    assert len(mine) == 1 and mine[0].parameters == PARAMETERS
    assert sum(claim.elsewhere for claim in claims) == 2
    assert mine[0].remote == (mine[0] is not claims[2])  # a itself answered the webhook
    assert not a.awaits_stream(sid(1))

    a.expect_stream(sid(2), PARAMETERS)
    await settled(a)
    b.stream_came(sid(2))  # its stream started on b
    await settled(b)
    assert await a.claim(sid(2)) == StreamClaim(PARAMETERS)  # a's own view; Redis forgot it
    assert await b.claim(sid(2)) == StreamClaim()
    assert await b.claim(sid(3)) == StreamClaim()  # never heard of


@pytest.mark.call
@pytest.mark.parametrize("handoffs", ["redis"], indirect=True)
async def test_the_action_waits_for_an_answer_another_instance_is_writing(handoffs):
    a, b = handoffs("a"), handoffs("b")
    assert await a._shared.take_line(sid(1))  # the call streams on a

    async def ending_on_a():
        await asyncio.sleep(0.2)
        a.put_action(sid(1), "<Response><Dial>+15557654321</Dial></Response>")

    writer = asyncio.create_task(ending_on_a())
    assert await b.take_action(sid(1)) is None  # not written yet
    answer = await b.wait_action(sid(1), claimed_elsewhere=False)
    await writer
    assert answer == "<Response><Dial>+15557654321</Dial></Response>"

    # The call ended on a without asking for anything: its line is freed, nothing to wait for.
    a._shared.free_line(sid(1))
    await settled(a)
    assert await b.wait_action(sid(1), claimed_elsewhere=False) is None
    assert await a.wait_action(sid(2), claimed_elsewhere=False) is None  # nobody's call


@pytest.mark.parametrize("handoffs", [None], indirect=True)
async def test_without_redis_the_handoff_is_this_process_alone(handoffs):
    a = handoffs("a")
    a.expect_stream(sid(1), PARAMETERS)
    assert a.awaits_stream(sid(1))
    assert await a.claim(sid(1)) == StreamClaim(PARAMETERS)
    assert await a.claim(sid(1)) == StreamClaim()  # once
    a.put_action(sid(2), "<Response><Hangup/></Response>")
    assert await a.take_action(sid(2)) == "<Response><Hangup/></Response>"
    assert await a.take_action(sid(2)) is None
    assert await a.wait_action(sid(2), claimed_elsewhere=True) is None


@pytest.mark.call
async def test_with_redis_unreachable_the_local_view_decides():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    state = SharedState(Settings(_env_file=None, redis_url=dead, instance_id="a"), RunnerMetrics())
    handoff = StreamHandoff(state)
    try:
        handoff.expect_stream(sid(1), PARAMETERS)
        assert await handoff.claim(sid(1)) == StreamClaim(PARAMETERS)
        handoff.put_action(sid(2), "<Response><Hangup/></Response>")
        assert await handoff.take_action(sid(2)) == "<Response><Hangup/></Response>"
        assert await handoff.take_action(sid(3)) is None
        assert await handoff.wait_action(sid(3), claimed_elsewhere=True) is None
        await settled(handoff)
        assert errors(state._metrics, "awaiting") >= 2 and errors(state._metrics, "action") >= 1
    finally:
        await state.close()


@pytest.mark.call
async def test_a_failed_stream_message_reaches_the_webhooks_instance(redis_url):
    made = [
        SharedState(Settings(_env_file=None, redis_url=redis_url, instance_id=n), RunnerMetrics())
        for n in "ab"
    ]
    a, b = made
    try:
        failed, elsewhere = asyncio.Queue(), asyncio.Queue()
        a.on_stream_failed, a.on_stream_elsewhere = failed.put_nowait, elsewhere.put_nowait
        await a.start(dict)
        await b.start(dict)
        await subscribed(a, b)
        await b.ask("publish", lambda r: r.publish(b.key("streams"), '{"call_sid": 1}'))
        await b.ask(
            "publish",
            lambda r: r.publish(b.key("streams"), '{"call_sid": "x", "instance": "b", "event": 1}'),
        )
        await b.stream_failed(sid(4))
        assert await asyncio.wait_for(failed.get(), 5) == sid(4)
        assert elsewhere.empty()  # the malformed messages were dropped, nothing else told
    finally:
        for state in made:
            await state.close()


#
# two runners on one Redis (and one database)
#


def agent_bot(**options):
    def pipeline(call):
        return [
            call.input(),
            RealtimeAgent(instructions="You are a test bot.", **options),
            call.output(),
        ]

    return pipeline


@contextlib.asynccontextmanager
async def two_runners(redis_url: str, pipeline, **emulator_options):
    """Runners ``a`` and ``b`` on one Redis and one database, behind one public address."""
    database = f"sqlite:///{tempfile.mkdtemp(prefix='calls-')}/calls.db"
    bots = {"test": Bot("test", "a test bot", pipeline)}
    async with RealtimeEmulator(**emulator_options) as emulator:
        async with runners_on_one_redis(
            emulator,
            redis_url,
            bots,
            bot="test",
            max_calls=2,
            database_url=database,
            prewarm_timeout_secs=30,
        ) as (servers, runners):
            yield emulator, servers, runners


@pytest.mark.call
async def test_a_transfer_on_one_runner_is_dialled_by_the_action_on_another(redis_url):
    transfer = Reply(
        text="Let me put you through.", function_call=FunctionCall("transfer_call", {})
    )
    bot = agent_bot(tools=[transfer_call("+15557654321")])
    async with two_runners(redis_url, bot, replies=[transfer]) as (_, servers, (a, b)):
        async with TwilioCaller(
            server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
        ) as caller:
            await caller.call()  # webhook and stream on a
            await caller.say(tone(600) + silence(700))
            await caller.wait_ended(timeout=15)
            caller.server_url = servers[1].url  # the balancer sends the action to b
            after = await caller.follow_action()
            assert [(v.name, v.text) for v in after.verbs] == [("Dial", "+15557654321")]
            await caller.wait_until(lambda: a.finished, timeout=5)
            assert a.finished[0].end_reason == "transferred to +15557654321"
            assert not b.finished


@pytest.mark.call
@pytest.mark.parametrize("action_to", ["b", "a"])
async def test_a_stream_error_on_another_runner_fails_the_call_once_and_frees_it(
    redis_url, action_to
):
    async with two_runners(redis_url, agent_bot(greeting="Hello there.")) as (
        emulator,
        servers,
        (a, b),
    ):
        async with TwilioCaller(
            server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
        ) as caller:
            await caller.dial()  # a answers the webhook: a line held, a session pre-warmed
            prewarmed = await emulator.wait_for_session(0)
            assert a.admission.capacity_left() == 1

            caller.server_url = servers[1].url  # Twilio's stream-error reaches b
            assert await caller.report_stream_error(HANDSHAKE_ERROR) == 204
            await emulator.wait_for(lambda: prewarmed.closed, timeout=5)  # not after 30 s
            await caller.wait_until(lambda: a.admission.capacity_left() == 2, timeout=2)
            assert not a.awaits_stream(caller.call_sid)
            dropped = a.metrics.registry.get_sample_value(
                "prt_prewarm_total", {"outcome": "dropped"}
            )
            assert dropped == 1

            # The <Connect action> answers the fallback line, wherever it lands.
            caller.server_url = servers[0 if action_to == "a" else 1].url
            after = await caller.follow_action()
            assert [(v.name, v.text) for v in after.verbs] == [
                ("Say", FALLBACK_LINE),
                ("Hangup", ""),
            ]
            # The same error again, to a: not a second record.
            caller.server_url = servers[0].url
            assert await caller.report_stream_error(HANDSHAKE_ERROR) == 204

            assert not a.finished and [r.end_reason for r in b.finished] == [
                "failed: stream: 31920"
            ]
            await b.records.settle(timeout=5)
            [stored] = a.store.list()  # the runners' one database: one record
            assert stored.call_sid == caller.call_sid
            assert stored.end_reason == "failed: stream: 31920"
            assert [e["event"] for e in stored.stream_events] == ["stream-error"]


@pytest.mark.call
async def test_a_stream_error_and_the_action_on_two_runners_at_once_record_the_call_once(
    redis_url,
):
    async with two_runners(redis_url, agent_bot()) as (_, servers, (a, b)):
        async with TwilioCaller(
            server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
        ) as caller:
            await caller.dial()  # a answers the webhook
            twin = TwilioCaller(  # the same call, as Twilio's requests to b
                server_url=servers[1].url,
                public_url=BALANCER,
                auth_token=AUTH_TOKEN,
                account_sid=caller.account_sid,
                call_sid=caller.call_sid,
            )
            twin.dial_result = caller.dial_result
            error, after = await asyncio.gather(
                twin.report_stream_error(HANDSHAKE_ERROR),  # to b
                caller.follow_action(),  # to a, at the same time
            )
            assert error == 204
            assert [(v.name, v.text) for v in after.verbs] == [
                ("Say", FALLBACK_LINE),
                ("Hangup", ""),
            ]
            await twin.close()
            assert len(a.finished) + len(b.finished) == 1
            await caller.wait_until(lambda: a.admission.capacity_left() == 2, timeout=2)
            runner = a if a.finished else b
            await runner.records.settle(timeout=5)
            [stored] = runner.store.list()
            assert stored.call_sid == caller.call_sid
            assert stored.end_reason.startswith("failed: stream: ")
