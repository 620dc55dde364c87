"""Late news of a call reaches its record, whichever instance Twilio sends it to (amendments.py).

Unit tests of the amendments as data, the store's conditional save and the one-process
keeper; then two in-process runners on one Redis and one database, a webhook receiver
beside them: a late ``stream-stopped`` and a ``recording-status`` sent to the instance
that did not run the call, before and after its record was made, and at once on both.
"""

import asyncio
import contextlib
import json
import tempfile

import pytest
from conftest import AUTH_TOKEN, free_port
from fastapi import FastAPI, Request, Response
from test_shared_state import BALANCER, runners_on_one_redis

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.runner.amendments import (
    RecordAmender,
    RecordingUrlAmendment,
    StreamEventAmendment,
    apply_all,
)
from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
from pipecat_realtime_twilio.runner.bots import Bot
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.shared_state import SharedState
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.runner.twilio_recording import STATUS_PATH
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.server import LocalServer

"""The instances' PUBLIC_URL; each test request goes straight to one of them."""

RECORDING = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"


def record(call_sid: str = "CA1", **values) -> CallRecord:
    made = CallRecord(call_sid=call_sid, bot="test", started_at=1000.0, **values)
    made.finish("caller hung up", ended_at=1010.0)
    return made


def stopped(at: float, stream_sid: str = "MZ1") -> dict:
    return {"event": "stream-stopped", "at": at, "stream_sid": stream_sid}


#
# amendments as data
#


def test_an_amendment_travels_as_json_and_applies_to_a_record():
    from pipecat_realtime_twilio.runner.amendments import _AMENDMENT

    for amendment in (StreamEventAmendment(event=stopped(5.0)), RecordingUrlAmendment(url="x")):
        assert _AMENDMENT.validate_json(_AMENDMENT.dump_json(amendment)) == amendment
    made = record(stream_events=[{"event": "stream-started", "at": 1.0, "stream_sid": "MZ1"}])
    early = {"event": "stream-error", "at": 0.5, "stream_sid": "MZ0", "error": "31920"}
    apply_all(
        made,
        [
            StreamEventAmendment(event=stopped(5.0)),
            StreamEventAmendment(event=early),  # came late, happened first: goes first
            StreamEventAmendment(event=stopped(6.0)),  # the same callback again: not twice
            RecordingUrlAmendment(url=RECORDING),
        ],
    )
    assert [(e["event"], e["at"]) for e in made.stream_events] == [
        ("stream-error", 0.5),
        ("stream-started", 1.0),
        ("stream-stopped", 5.0),
    ]
    assert made.twilio_recording_url == RECORDING


def test_the_store_replaces_a_record_only_from_the_revision_it_was_changed_from(tmp_path):
    with CallStore(f"sqlite:///{tmp_path}/calls.db") as store:
        assert not store.save_if(record(), revision=0)  # nothing stored yet
        store.save(record())
        first, second = record(), record()
        first.twilio_recording_url, first.revision = RECORDING, 1
        second.stream_events, second.revision = [stopped(5.0)], 1
        assert store.save_if(first, revision=0)
        assert not store.save_if(second, revision=0)  # made from what is no longer stored
        stored = store.get("CA1")
        assert stored.revision == 1 and stored.twilio_recording_url == RECORDING
        assert not stored.stream_events


async def test_without_redis_news_waits_in_the_process_until_the_record_is_made():
    settings = Settings(_env_file=None, database_url="sqlite://")
    keeper = RecordKeeper(settings)
    amender = RecordAmender(keeper, SharedState(settings, RunnerMetrics()))
    try:
        assert await amender.amend("CA1", RecordingUrlAmendment(url=RECORDING)) == "waiting"
        assert await amender.amend("CA1", StreamEventAmendment(event=stopped(5.0))) == "waiting"
        assert amender.take_stream_events("CA1") == [stopped(5.0)]  # for the call, as it runs
        made = record()
        keeper.finished.append(made)
        amender.fill(made)
        assert made.twilio_recording_url == RECORDING and made.revision == 0
        keeper.keep(made)
        assert await amender.amend("CA1", StreamEventAmendment(event=stopped(9.0))) == "amended"
        [amended] = keeper.finished
        assert amended.revision == 1 and amended.stream_events == [stopped(9.0)]
        assert await amender.amend("CA1", StreamEventAmendment(event=stopped(9.5))) == "amended"
        assert keeper.finished[0].revision == 1  # nothing new: no new revision
        await keeper.settle(timeout=5)
        assert keeper.store.get("CA1").stream_events == [stopped(9.0)]
    finally:
        await amender.close()
        await keeper.close()


@pytest.mark.call
async def test_news_that_comes_as_the_call_starts_is_the_calls_while_redis_is_asked(redis_url):
    """A stream-started callback racing the stream: the call takes it, however slow Redis is."""
    settings = Settings(_env_file=None, database_url="sqlite://", redis_url=redis_url)
    keeper = RecordKeeper(settings)
    shared = SharedState(settings, RunnerMetrics())
    amender = RecordAmender(keeper, shared)
    asked = shared.ask

    async def slow(operation, request):
        await asyncio.sleep(0.3)  # a Redis that answers slowly, under load
        return await asked(operation, request)

    shared.ask = slow  # type: ignore[method-assign]
    try:
        started = {"event": "stream-started", "at": 1.0, "stream_sid": "MZ1"}
        news = asyncio.create_task(amender.amend("CA1", StreamEventAmendment(event=started)))
        await asyncio.sleep(0.05)  # the stream starts while the callback still asks Redis
        assert amender.take_stream_events("CA1") == [started]
        await news
    finally:
        await amender.close()
        await shared.close()
        await keeper.close()


#
# two runners on one Redis and one database
#


def agent_bot(call):
    return [call.input(), RealtimeAgent(instructions="You are a test bot."), call.output()]


class Receiver:
    """A webhook receiver on a local port: the records it got, in order."""

    def __init__(self):
        self.received: list[dict] = []
        app = FastAPI()

        @app.post("/calls")
        async def calls(request: Request) -> Response:
            self.received.append(json.loads(await request.body()))
            return Response(status_code=204)

        self.server = LocalServer(app)

    def revisions(self, call_sid: str) -> list[int]:
        return [r["revision"] for r in self.received if r["call_sid"] == call_sid]


@contextlib.asynccontextmanager
async def two_runners(redis_url: str):
    """Runners ``a`` and ``b`` on one Redis and one database, sending records to a receiver."""
    database = f"sqlite:///{tempfile.mkdtemp(prefix='calls-')}/calls.db"
    receiver = Receiver()
    async with RealtimeEmulator() as emulator, receiver.server:
        async with runners_on_one_redis(
            emulator,
            redis_url,
            {"test": Bot("test", "a test bot", agent_bot)},
            bot="test",
            database_url=database,
            call_webhook_url=f"{receiver.server.url}/calls",
        ) as (servers, runners):
            async with TwilioCaller(
                server_url=servers[0].url, public_url=BALANCER, auth_token=AUTH_TOKEN
            ) as caller:
                yield servers, runners, caller, receiver


async def send_recording(caller: TwilioCaller, server: LocalServer, url: str) -> int:
    caller.server_url = server.url
    form = {
        "AccountSid": caller.account_sid,
        "CallSid": caller.call_sid,
        "RecordingSid": url.rsplit("/", 1)[-1],
        "RecordingStatus": "completed",
        "RecordingUrl": url,
    }
    return (await caller.send_signed(BALANCER + STATUS_PATH, form)).status


async def send_stream_stopped(caller: TwilioCaller, server: LocalServer) -> int:
    caller.server_url = server.url
    form = {
        "AccountSid": caller.account_sid,
        "CallSid": caller.call_sid,
        "StreamSid": caller.stream_sid or "MZ1",
        "StreamEvent": "stream-stopped",
        "Timestamp": "2030-01-01T00:00:00.000Z",  # after everything else on the record
    }
    return (await caller.send_signed(BALANCER + "/stream-status", form)).status


async def call_on_a(caller: TwilioCaller, a, b) -> CallRecord:
    """A call that runs on ``a``; Twilio's own ``stream-stopped`` lost on the way."""
    await caller.call()
    await caller.wait_until(lambda: a.admission.active, timeout=5)
    caller.server_url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    await caller.hangup()
    await caller.wait_until(lambda: a.finished, timeout=5)
    await a.records.settle(timeout=5)
    assert not b.finished
    return a.finished[-1]


def stored(runner, call_sid: str) -> CallRecord:
    found = runner.store.get(call_sid)
    assert found is not None
    return found


@pytest.mark.call
@pytest.mark.parametrize("a_is", ["alive", "gone"])
async def test_a_late_stream_stopped_on_b_reaches_the_record_a_made(redis_url, a_is):
    async with two_runners(redis_url) as (servers, (a, b), caller, receiver):
        made = await call_on_a(caller, a, b)
        sid = caller.call_sid
        await caller.wait_until(lambda: receiver.revisions(sid) == [0], timeout=5)
        if a_is == "gone":
            await servers[0].stop()  # its memory with it: b amends the stored record
        assert await send_stream_stopped(caller, servers[1]) == 204

        await caller.wait_until(lambda: stored(b, sid).revision == 1, timeout=5)
        amended = stored(b, sid)
        assert [e["event"] for e in amended.stream_events] == [
            *(e["event"] for e in made.stream_events),
            "stream-stopped",
        ]
        await caller.wait_until(lambda: receiver.revisions(sid) == [0, 1], timeout=5)
        await asyncio.gather(a.records.settle(timeout=5), b.records.settle(timeout=5))
        await caller.wait_until(lambda: stored(b, sid).webhook_delivered, timeout=5)
        assert receiver.revisions(sid) == [0, 1]  # the amended record, once
        assert receiver.received[-1]["stream_events"] == amended.stream_events
        assert not b.finished
        if a_is == "alive":  # its maker amended it, so its memory has it too
            assert a.finished[-1].revision == 1


@pytest.mark.call
@pytest.mark.parametrize("sent_to", ["b", "a"])
async def test_a_recording_that_comes_before_the_record_is_on_it(redis_url, sent_to):
    async with two_runners(redis_url) as (servers, (a, b), caller, _):
        await caller.call()
        await caller.wait_until(lambda: a.admission.active, timeout=5)
        server = servers[1] if sent_to == "b" else servers[0]
        assert await send_recording(caller, server, RECORDING) == 204  # the call still runs on a
        caller.server_url = servers[0].url
        await caller.hangup()
        await caller.wait_until(lambda: a.finished, timeout=5)
        await caller.wait_until(lambda: a.finished[-1].twilio_recording_url == RECORDING, timeout=5)
        await a.records.settle(timeout=5)
        assert stored(a, caller.call_sid).twilio_recording_url == RECORDING
        assert not b.finished


@pytest.mark.call
@pytest.mark.parametrize("a_is", ["alive", "gone"])
async def test_news_on_both_instances_at_once_all_ends_up_on_the_record(redis_url, a_is):
    async with two_runners(redis_url) as (servers, (a, b), caller, receiver):
        await call_on_a(caller, a, b)
        sid = caller.call_sid
        if a_is == "gone":  # b gets both, at once: two changes of one stored record
            await servers[0].stop()
            first, second = servers[1], servers[1]
        else:  # a amends its own record while b parks its news for a
            first, second = servers[0], servers[1]
        twin = TwilioCaller(  # the same call, as Twilio's requests to the other instance
            server_url=second.url,
            public_url=BALANCER,
            auth_token=AUTH_TOKEN,
            account_sid=caller.account_sid,
            call_sid=sid,
        )
        try:
            statuses = await asyncio.gather(
                send_stream_stopped(caller, first), send_recording(twin, second, RECORDING)
            )
        finally:
            await twin.close()
        assert statuses == [204, 204]

        def both() -> bool:
            found = stored(b, sid)
            return found.twilio_recording_url == RECORDING and any(
                e["event"] == "stream-stopped" for e in found.stream_events
            )

        await caller.wait_until(both, timeout=10)
        await asyncio.gather(a.records.settle(timeout=5), b.records.settle(timeout=5))
        assert both()  # nothing lost since
        assert stored(b, sid).revision == 2  # two amendments, one after the other


@pytest.mark.call
async def test_with_redis_unreachable_news_waits_in_the_process_and_is_counted():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(_env_file=None, database_url="sqlite://", redis_url=dead, instance_id="a")
    keeper, metrics = RecordKeeper(settings), RunnerMetrics()
    amender = RecordAmender(keeper, SharedState(settings, metrics))
    try:
        assert await amender.amend("CA1", RecordingUrlAmendment(url=RECORDING)) == "waiting"
        made = record()
        amender.fill(made)
        assert made.twilio_recording_url == RECORDING
        errors = metrics.registry.get_sample_value(
            "prt_shared_state_errors_total", {"operation": "amend"}
        )
        assert errors and errors >= 1
    finally:
        await amender.close()
        await keeper.close()
