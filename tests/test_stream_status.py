"""Twilio's stream status callbacks, SIP dialling, and records amended when events come late."""

import asyncio
import json
import threading
import time

import aiohttp
import pytest
from conftest import LocalServer, phone_call
from fastapi import FastAPI, Request, Response

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.tools import transfer_call
from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.failures import FALLBACK_LINE, Failure, Stage, stream_error_code
from pipecat_realtime_twilio.phone.twiml import dial_twiml, stream_twiml
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.outbox import Outbox
from pipecat_realtime_twilio.runner.records import CallRecord, stream_event
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.twiml import parse_twiml

HANDSHAKE_ERROR = "31920 Stream - WebSocket - Handshake Error"


def bot(call):
    agent = RealtimeAgent(instructions="You are a test bot.", greeting="Hello there.")
    return [call.input(), agent, call.output()]


def verbs(result) -> list[tuple[str, str]]:
    return [(v.name, v.text) for v in result.verbs]


def line_free(runner) -> bool:
    return runner.admission.capacity_left() == runner.settings.max_calls


# --------------------------------------------------------------------------------------------
# Over real sockets
# --------------------------------------------------------------------------------------------


@pytest.mark.call
async def test_a_stream_error_before_the_stream_frees_the_call_and_answers_the_fallback():
    async with phone_call(pipeline=bot, replies=say_as_asked()) as (emulator, runner, caller):
        await caller.dial()  # the webhook: a line held, the session pre-warmed
        await emulator.wait_for(lambda: emulator.sessions, timeout=5)
        session = emulator.sessions[0]
        await emulator.wait_for(lambda: session.sent_of_type("session.updated"), timeout=5)
        assert not line_free(runner)

        # Twilio could not open the websocket: it says so on the statusCallback.
        loop = asyncio.get_running_loop()
        reported_at = loop.time()
        assert await caller.report_stream_error(HANDSHAKE_ERROR) == 204
        await emulator.wait_for(lambda: session.closed, timeout=2)
        assert session.closed_at - reported_at < 1.0  # closed at once, not at the timeout
        assert line_free(runner)

        [record] = runner.finished
        assert record.end_reason == "failed: stream: 31920"
        [event] = record.stream_events
        assert event["event"] == "stream-error" and event["error"] == HANDSHAKE_ERROR
        # The <Connect action> that follows answers the fallback line, not <Hangup/> alone.
        after = await caller.follow_action()
        assert verbs(after) == [("Say", FALLBACK_LINE), ("Hangup", "")]

        samples = runner.metrics.registry.get_sample_value
        assert samples("prt_call_failures_total", {"stage": "stream", "code": "31920"}) == 1
        calls = {"end_reason": "failed: stream: 31920", "bot": "test"}
        assert samples("prt_calls_total", calls) == 1
        assert samples("prt_stream_events_total", {"event": "stream-error"}) == 1
        assert samples("prt_prewarm_total", {"outcome": "dropped"}) == 1
        await runner.records.settle(timeout=5)
        assert runner.store.get(caller.call_sid).end_reason == "failed: stream: 31920"


@pytest.mark.call
async def test_the_action_url_before_any_stream_answers_the_fallback_and_a_late_error_amends():
    async with phone_call(pipeline=bot, settings={"prewarm": False}) as (_, runner, caller):
        await caller.dial()
        after = await caller.follow_action()  # Twilio gave up on the stream
        assert verbs(after) == [("Say", FALLBACK_LINE), ("Hangup", "")]
        assert line_free(runner)
        [record] = runner.finished
        assert record.end_reason == "failed: stream: stream_error" and record.revision == 0

        assert await caller.report_stream_error(HANDSHAKE_ERROR) == 204
        [record] = runner.finished
        assert record.revision == 1 and record.end_reason == "failed: stream: stream_error"
        assert [e["error"] for e in record.stream_events] == [HANDSHAKE_ERROR]
        await runner.records.settle(timeout=5)
        stored = runner.store.get(caller.call_sid)
        assert stored.revision == 1 and stored.stream_events == record.stream_events


@pytest.mark.call
async def test_a_late_stream_event_amends_the_record_which_is_stored_and_sent_again():
    received: list[dict] = []
    hook = FastAPI()

    @hook.post("/calls")
    async def calls(request: Request) -> Response:
        body = json.loads(await request.body())
        body["_key"] = request.headers.get("Idempotency-Key")
        received.append(body)
        return Response(status_code=204)

    async with LocalServer(hook) as receiver:
        settings = {"call_webhook_url": f"{receiver.url}/calls"}
        async with phone_call(pipeline=bot, settings=settings, replies=say_as_asked()) as (
            _,
            runner,
            caller,
        ):
            await caller.call()
            await caller.wait_heard(300, timeout=10)
            await caller.hangup()
            await caller.wait_until(lambda: runner.finished, timeout=5)
            await caller.wait_until(lambda: len(caller.stream_callbacks) == 2, timeout=5)
            first = runner.finished[0]
            assert [e["event"] for e in first.stream_events] == [
                "stream-started",
                "stream-stopped",
            ]
            await caller.wait_until(
                lambda: any(r["revision"] == first.revision for r in received), timeout=5
            )

            # An event after the record was kept (made up here: Twilio's may come late).
            assert await caller.report_stream_error("31924 Stream - Protocol Error") == 204
            [amended] = runner.finished
            assert amended.revision == first.revision + 1
            assert [e["event"] for e in amended.stream_events][-1] == "stream-error"
            await caller.wait_until(
                lambda: any(r["revision"] == amended.revision for r in received), timeout=5
            )
            latest = max(
                (r for r in received if r["call_sid"] == caller.call_sid),
                key=lambda r: r["revision"],
            )
            assert latest["stream_events"] == amended.stream_events
            # Each revision has its own idempotency key: a receiver keeps the amendment.
            keys = {r["revision"]: r["_key"] for r in received}
            assert first.revision == 0 and keys[0] == caller.call_sid
            assert keys[amended.revision] == f"{caller.call_sid}.{amended.revision}"
            await runner.records.settle(timeout=5)

            def delivered():
                stored = runner.store.get(caller.call_sid)
                return stored.revision == amended.revision and stored.webhook_delivered

            await caller.wait_until(delivered, timeout=5)
            assert amended.end_reason == "caller hung up"
            assert (
                runner.metrics.registry.get_sample_value(
                    "prt_stream_events_total", {"event": "stream-error"}
                )
                == 1
            )


@pytest.mark.call
async def test_stream_status_callbacks_must_be_signed():
    async with phone_call(pipeline=bot) as (_, runner, caller):
        form = {"CallSid": caller.call_sid, "StreamEvent": "stream-started"}
        async with aiohttp.ClientSession() as session:
            async with session.post(caller.server_url + "/stream-status", data=form) as answer:
                assert answer.status == 403
        assert (
            runner.metrics.registry.get_sample_value(
                "prt_stream_events_total", {"event": "stream-started"}
            )
            is None
        )


# --------------------------------------------------------------------------------------------
# In the process
# --------------------------------------------------------------------------------------------


def test_stream_twiml_asks_for_status_callbacks():
    twiml = stream_twiml(
        "wss://bot.example.com/media-stream",
        {"bot": "default"},
        action_url="https://bot.example.com/stream-ended",
        status_callback_url="https://bot.example.com/stream-status",
    )
    parsed = parse_twiml(twiml)
    assert parsed.stream_attributes["statusCallback"] == "https://bot.example.com/stream-status"
    assert parsed.stream_attributes["statusCallbackMethod"] == "POST"
    assert "statusCallback" not in parse_twiml(stream_twiml("wss://x/m")).stream_attributes


@pytest.mark.parametrize(
    "target",
    ["sip:alice@example.com", "SIP:alice@example.com", "sips:bob@example.com;transport=tls"],
)
def test_a_sip_uri_is_dialled_with_sip(target):
    [dial] = parse_twiml(dial_twiml(target)).verbs
    [sip] = dial.children
    assert (dial.name, dial.text, sip.name, sip.text) == ("Dial", "", "Sip", target)


def test_a_number_is_dialled_as_a_number_and_nonsense_is_refused():
    [dial] = parse_twiml(dial_twiml("+15557654321")).verbs
    assert (dial.name, dial.text, dial.children) == ("Dial", "+15557654321", [])
    for bad in ("alice@example.com", "tel:+1555", "", "sip:", "https://example.com"):
        with pytest.raises(CallControlError, match="cannot transfer") as refused:
            dial_twiml(bad)
        assert isinstance(refused.value, ValueError)


def test_a_wrong_target_fails_when_the_bot_is_built_not_when_the_caller_is_transferred():
    with pytest.raises(ValueError, match="cannot transfer to 'the front desk'"):
        transfer_call("the front desk")
    with pytest.raises(ValueError, match="cannot transfer to 'desk@pbx'"):
        RealtimeAgent(
            instructions="x", api_key="k", base_url="ws://x", model="m", fallback_number="desk@pbx"
        )
    assert transfer_call(" sip:desk@pbx.example.com ").name == "transfer_call"


def test_stream_error_codes_are_twilios_numbers_and_bounded():
    assert stream_error_code(HANDSHAKE_ERROR) == "31920"
    assert stream_error_code("something odd") == "stream_error"
    assert stream_error_code(None) == "stream_error"
    assert Failure(Stage.STREAM, "31920").metric_code == "31920"
    assert Failure(Stage.STREAM, "99999").metric_code == "other"
    assert Failure(Stage.STREAM, "31920").reason == "failed: stream: 31920"


def test_stream_events_are_counted_with_a_bounded_label():
    metrics = RunnerMetrics()
    for event in ("stream-started", "stream-stopped", "stream-error", "stream-exploded", ""):
        metrics.count_stream_event(event)
    samples = metrics.registry.get_sample_value
    assert samples("prt_stream_events_total", {"event": "stream-started"}) == 1
    assert samples("prt_stream_events_total", {"event": "other"}) == 2


def test_a_stream_event_as_the_record_keeps_it():
    form = {
        "AccountSid": "AC1",
        "CallSid": "CA1",
        "StreamSid": "MZ1",
        "StreamName": "MZ1",
        "StreamEvent": "stream-error",
        "StreamError": HANDSHAKE_ERROR,
        "Timestamp": "2026-01-15T10:30:00.000+00:00",
    }
    assert stream_event(form) == {
        "event": "stream-error",
        "at": 1768473000.0,
        "stream_sid": "MZ1",
        "error": HANDSHAKE_ERROR,
    }
    started = stream_event({**form, "StreamEvent": "stream-started", "StreamError": ""})
    assert "error" not in started
    assert abs(stream_event({"StreamEvent": "stream-stopped"})["at"] - time.time()) < 5


def test_records_keep_stream_events_and_old_ones_stay_readable():
    record = CallRecord(call_sid="CA1")
    record.stream_events.append({"event": "stream-started", "at": 1.0, "stream_sid": "MZ1"})
    record.add_stream_event({"event": "stream-stopped", "at": 2.0, "stream_sid": "MZ1"})
    assert record.revision == 1 and not record.webhook_delivered
    again = CallRecord.from_json(record.to_json())
    assert again == record
    old = json.loads(record.to_json())
    del old["stream_events"], old["revision"]
    assert CallRecord.from_dict(old).stream_events == [] and CallRecord.from_dict(old).revision == 0


def test_delivered_is_only_marked_on_the_revision_that_was_sent(tmp_path):
    with CallStore(f"sqlite:///{tmp_path}/calls.db") as store:
        record = CallRecord(call_sid="CA1")
        store.save(record)
        amended = CallRecord.from_dict(record.to_dict())
        amended.add_stream_event({"event": "stream-stopped", "at": 2.0, "stream_sid": "MZ1"})
        store.save(amended)
        assert store.mark_delivered("CA1", revision=0) is False  # the old one was sent
        assert store.get("CA1").webhook_delivered is False
        assert store.mark_delivered("CA1", revision=1) is True
        assert store.get("CA1").webhook_delivered is True
        assert store.mark_delivered("CA-missing", revision=0) is False


def test_a_newer_record_waits_for_the_claim_on_the_older_one(tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    path = outbox.put(CallRecord(call_sid="CA1", bot="old"))
    claim = outbox.claim(path)
    assert claim is not None
    newer = CallRecord(call_sid="CA1", bot="new")
    done = threading.Event()
    writer = threading.Thread(target=lambda: (outbox.put(newer), done.set()))
    writer.start()
    assert not done.wait(0.2)  # the older one is being stored: the newer waits
    outbox.remove(claim)  # stored
    claim.release()
    assert done.wait(5)
    writer.join()
    [left] = outbox.paths()
    assert outbox.claim(left).record.bot == "new"  # not removed with the older one


def test_removing_a_claim_spares_a_file_that_replaced_it(tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    path = outbox.put(CallRecord(call_sid="CA1", bot="old"))
    claim = outbox.claim(path)
    outbox._write(CallRecord(call_sid="CA1", bot="new"), path)  # as another writer would
    outbox.remove(claim)
    claim.release()
    assert outbox.claim(path).record.bot == "new"
