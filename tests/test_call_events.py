"""What happened on a call, as events with times: tool calls, keys, barge-ins, transfers, latency.

The unit tier checks the event log (``agent/events.py``), the ledger's heard ms at a
barge-in, how a call's end reads as a transfer and the latency sample's time; one real
call (runner, emulator, simulated caller) checks that the record carries them all.
"""

import json

import pytest
from conftest import phone_call
from pipecat.frames.frames import (
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallResultProperties,
)

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.events import (
    CANCELLED,
    EVENTS_KEPT,
    TOOL_TEXT_MAX_CHARS,
    UNFINISHED,
    CallEvents,
    TurnLatency,
    cut_text,
)
from pipecat_realtime_twilio.agent.latency import ResponseLatency
from pipecat_realtime_twilio.agent.ledger import HeardLedger
from pipecat_realtime_twilio.agent.realtime import TOOL_ERROR_MESSAGE
from pipecat_realtime_twilio.agent.tools import realtime_tool, transfer_call
from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.failures import Failure, Stage
from pipecat_realtime_twilio.phone.ending import CallEnd, EndKind
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.testing.emulator import FunctionCall, Reply
from pipecat_realtime_twilio.testing.model import last_keypad_input, words_to_say
from pipecat_realtime_twilio.testing.sounds import silence, tone


class Clocks:
    """A Unix clock and a monotonic one that tests move by hand."""

    def __init__(self) -> None:
        self.unix = 1_700_000_000.0
        self.mono = 50.0

    def advance(self, seconds: float) -> None:
        self.unix += seconds
        self.mono += seconds


def events_with(clocks: Clocks) -> CallEvents:
    return CallEvents(clock=lambda: clocks.unix, monotonic=lambda: clocks.mono)


def started(call_id: str, name: str, arguments) -> FunctionCallInProgressFrame:
    return FunctionCallInProgressFrame(name, call_id, arguments)


def result(call_id: str, value, *, error=None, final=True) -> FunctionCallResultFrame:
    return FunctionCallResultFrame(
        function_name="tool",
        tool_call_id=call_id,
        arguments={},
        result=value,
        properties=FunctionCallResultProperties(is_final=final),
        error=error,
    )


def test_a_tool_call_is_kept_with_its_arguments_result_time_and_duration():
    clocks = Clocks()
    events = events_with(clocks)
    events.tool_frame(started("c1", "order_status", {"order_number": 42}))
    at = clocks.unix
    clocks.advance(0.25)
    events.tool_frame(result("c1", {"status": "shipped"}, final=False))  # progress: goes on
    assert events.as_dict()["tool_calls"][0]["error"] == UNFINISHED
    clocks.advance(0.25)
    events.tool_frame(result("c1", {"status": "shipped"}))
    [call] = events.as_dict()["tool_calls"]
    assert call == {
        "name": "order_status",
        "call_id": "c1",
        "arguments": '{"order_number": 42}',
        "result": '{"status": "shipped"}',
        "error": None,
        "at": at,
        "duration_ms": pytest.approx(500),
    }
    assert json.loads(call["arguments"]) == {"order_number": 42}
    events.tool_frame(result("unknown", "a result of a call never started"))
    assert len(events.tool_calls) == 1


def test_failed_cancelled_and_unfinished_tool_calls_have_an_error_and_no_result():
    clocks = Clocks()
    events = events_with(clocks)
    # A tool that says it failed before its result went back (realtime_tool's apology).
    events.tool_frame(started("raised", "refund", {}))
    events.tool_failed("raised", "refund failed: down")
    events.tool_frame(result("raised", {"error": "refund failed: down"}))
    # Pipecat's own error: a handler registered with register_function raised.
    clocks.advance(1)
    events.tool_frame(started("pipecat", "plain", {}))
    events.tool_frame(result("pipecat", "stand-in text", error="RuntimeError: boom"))
    # A call that answered first, then could not act (transfer_call without a way).
    clocks.advance(1)
    events.tool_frame(started("transfer", "transfer_call", {}))
    events.tool_frame(result("transfer", {"status": "transferring the call"}))
    events.tool_failed("transfer", "transfer_call failed: no way")
    # Pipecat cancelled one (its deadline); another was still running at the end.
    clocks.advance(1)
    events.tool_frame(started("slow", "slow", {}))
    events.tool_frame(FunctionCallCancelFrame(function_name="slow", tool_call_id="slow"))
    clocks.advance(1)
    events.tool_frame(started("hung", "hung", {}))
    clocks.advance(2)

    calls = {call["call_id"]: call for call in events.as_dict()["tool_calls"]}
    assert list(calls) == ["raised", "pipecat", "transfer", "slow", "hung"]  # by start time
    assert calls["raised"]["error"] == "refund failed: down"
    assert calls["pipecat"]["error"] == "RuntimeError: boom"
    assert calls["transfer"]["error"] == "transfer_call failed: no way"
    assert calls["slow"]["error"] == CANCELLED
    assert calls["hung"]["error"] == UNFINISHED
    assert calls["hung"]["duration_ms"] == pytest.approx(2000)
    assert all(call["result"] is None for call in calls.values())
    events.tool_failed("never-started", "ignored")
    assert len(events.tool_calls) == 5


def test_long_tool_text_is_cut_and_marked():
    events = events_with(Clocks())
    long_text = "x" * (TOOL_TEXT_MAX_CHARS + 500)
    events.tool_frame(started("c", "dump", {"blob": long_text}))
    events.tool_frame(result("c", long_text))
    [call] = events.as_dict()["tool_calls"]
    assert call["result"].startswith("x" * TOOL_TEXT_MAX_CHARS)
    assert call["result"].endswith(f"[cut: {len(long_text)} characters]")
    assert len(call["result"]) < TOOL_TEXT_MAX_CHARS + 40
    assert len(call["arguments"]) < TOOL_TEXT_MAX_CHARS + 40
    assert cut_text("short") == "short"
    # Anything that is not JSON becomes text rather than an error.
    events.tool_frame(started("odd", "odd", {"when": object()}))
    events.tool_frame(result("odd", {1, 2}))
    odd = events.as_dict()["tool_calls"][1]
    assert "object" in odd["arguments"] and odd["result"]


def test_keys_barge_ins_and_latency_are_kept_in_order_and_bounded():
    clocks = Clocks()
    events = events_with(clocks)
    events.keypad_sent("12#")
    clocks.advance(1.5)
    events.barge_in(1234.5, "item_1")
    events.turn_latency(TurnLatency(at=clocks.unix - 0.6, response_ms=600.0))
    assert events.as_dict() == {
        "tool_calls": [],
        "keypad": [{"digits": "12#", "at": clocks.unix - 1.5}],
        "barge_ins": [{"at": clocks.unix, "heard_ms": 1234.5, "item_id": "item_1"}],
        "turn_latencies": [{"at": clocks.unix - 0.6, "response_ms": 600.0}],
    }
    for _ in range(EVENTS_KEPT + 10):
        events.keypad_sent("#")
    assert len(events.keypad) == EVENTS_KEPT
    assert events.dropped == {"keypad": 11}
    # The record takes the dicts as they are and gives them back through JSON.
    record = CallRecord(call_sid="CA1", barge_ins=events.as_dict()["barge_ins"])
    assert CallRecord.from_json(record.to_json()).barge_ins == events.as_dict()["barge_ins"]


def test_a_barge_in_tells_what_was_heard_of_the_cut_answer():
    ledger = HeardLedger()
    ledger.response_started("resp_1")
    ledger.audio("item_a", 0, "resp_1", 8000)  # 1000 ms, heard in full
    ledger.audio("item_b", 0, "resp_1", 8000)  # 1000 ms, cut at 250 ms
    cut = ledger.cut({"item_a": 8000, "item_b": 2000})
    assert cut.interrupted
    assert cut.heard_ms == 1250  # of the whole answer, both items
    assert cut.item_id == "item_b"
    # Nothing left to cut: no barge-in, nothing heard of a cut answer.
    quiet = ledger.cut({})
    assert (quiet.interrupted, quiet.heard_ms, quiet.item_id) == (False, 0.0, None)


def test_a_latency_sample_says_when_the_caller_stopped_speaking():
    import time

    meter = ResponseLatency(vad_silence_ms=0)
    assert meter.heard() is None  # nothing in progress
    meter.appended(160 * BYTES_PER_MS)
    meter.speech_stopped(audio_end_ms=160)
    before = time.time()
    sample = meter.heard()
    assert sample is not None and sample.response_ms >= 0
    assert sample.at <= before + 0.01 and sample.at >= before - 5
    assert meter.samples_ms == [sample.response_ms]


def test_a_call_end_reads_as_a_transfer_only_when_it_transfers():
    failure = Failure(Stage.CONNECT, "invalid_api_key")
    transfer = CallEnd(EndKind.TRANSFERRED, "+15557654321")
    assert transfer.transfer() == {"target": "+15557654321", "at": transfer.at, "kind": "transfer"}
    fallback = CallEnd(EndKind.FAILED, failure=failure, transfer_to="sip:desk@example.com")
    assert fallback.transfer() == {
        "target": "sip:desk@example.com",
        "at": fallback.at,
        "kind": "fallback",
    }
    assert CallEnd(EndKind.FAILED, failure=failure).transfer() is None  # the line is said
    assert CallEnd(EndKind.FAILED, failure=failure, transfer_to="desk").transfer() is None
    assert CallEnd(EndKind.HUNG_UP).transfer() is None
    assert CallEnd(EndKind.ENDED, "bye").transfer() is None
    # The time is not part of what an end is.
    assert CallEnd(EndKind.HUNG_UP, at=1.0) == CallEnd(EndKind.HUNG_UP, at=2.0)


SPEECH = tone(600) + silence(700)


@pytest.mark.call
async def test_the_record_has_the_calls_tools_keys_barge_in_transfer_and_latency():
    agents: list[RealtimeAgent] = []

    @realtime_tool
    async def order_status(order_number: int) -> dict:
        """Look up where an order is.

        Args:
            order_number: The order number.
        """
        return {"order": order_number, "status": "shipped"}

    @realtime_tool
    def refund(order_number: int) -> str:
        """Refund an order.

        Args:
            order_number: The order to refund.
        """
        raise RuntimeError("the refund service is down")

    long_menu = Reply(text="Here is a very long menu. " * 10, duration_ms=8000)
    replies = [
        Reply(function_call=FunctionCall("order_status", {"order_number": "42"})),
        Reply(text="Your order has shipped."),
        Reply(function_call=FunctionCall("refund", {"order_number": 42})),
        long_menu,  # the answer to the keys, cut off
        Reply(text="Putting you through.", function_call=FunctionCall("transfer_call", {})),
    ]

    def model(session, trigger):
        words = words_to_say(session, trigger)
        return Reply(text=words) if words else replies.pop(0)

    def pipeline(call):
        agent = RealtimeAgent(
            instructions="You are a test bot.",
            tools=[order_status, refund, transfer_call("+15557654321")],
        )
        agents.append(agent)
        return [call.input(), agent, call.output()]

    async with phone_call(pipeline=pipeline, replies=model) as (emulator, runner, caller):
        await caller.call()
        session = lambda: emulator.sessions[0]  # noqa: E731

        await caller.say(SPEECH)  # a tool that returns, then its answer
        await caller.wait_until(lambda: len(session().responses) >= 2, timeout=10)
        await caller.wait_quiet(quiet_ms=500, timeout=10)
        heard = len(caller.heard)

        await caller.say(SPEECH)  # a tool that raises: the apology
        await caller.wait_quiet(after=heard, quiet_ms=500, timeout=10)
        assert session().responses[-1].transcript == TOOL_ERROR_MESSAGE
        heard = len(caller.heard)

        await caller.press("1#")  # keys: answered by the long menu, which the caller cuts
        await caller.wait_until(lambda: last_keypad_input(session()) == "1#", timeout=5)
        await caller.wait_heard(heard / BYTES_PER_MS + 1000, timeout=10)
        await caller.say(SPEECH)
        await caller.wait_until(lambda: caller.clears, timeout=5, message="a clear")
        await caller.wait_ended(timeout=15)  # the answer to that: a transfer
        await caller.wait_until(lambda: runner.finished, timeout=5)

        [record] = runner.finished
        assert record.end_reason == "transferred to +15557654321"
        start, end = record.started_at, record.ended_at
        assert end is not None

        def within_call(at: float) -> bool:
            return start <= at <= end

        names = [(call["name"], call["error"] is None) for call in record.tool_calls]
        assert names == [("order_status", True), ("refund", False), ("transfer_call", True)]
        status, refunded, transfer = record.tool_calls
        assert json.loads(status["arguments"]) == {"order_number": "42"}  # as the model sent it
        assert json.loads(status["result"]) == {"order": 42, "status": "shipped"}
        assert refunded["result"] is None and "the refund service is down" in refunded["error"]
        assert json.loads(transfer["result"]) == {"status": "transferring the call"}
        assert {call["call_id"] for call in record.tool_calls} == {
            response.call_id for response in session().responses if response.call_id
        }
        for call in record.tool_calls:
            assert within_call(call["at"]) and 0 <= call["duration_ms"] < 10_000, call
        starts = [call["at"] for call in record.tool_calls]
        assert starts == sorted(starts)

        [keys] = record.keypad
        assert keys["digits"] == "1#" and within_call(keys["at"])

        [cut] = record.barge_ins
        [truncation] = session().truncations
        menu = next(r for r in session().responses if r.transcript.startswith("Here is"))
        assert cut["item_id"] == truncation.item_id == menu.item_id
        assert 1000 <= cut["heard_ms"] < menu.audio_ms
        assert abs(cut["heard_ms"] - truncation.audio_end_ms) < 1
        assert within_call(cut["at"]) and cut["at"] > keys["at"]

        [transferred] = record.transfers
        assert transferred["target"] == "+15557654321" and transferred["kind"] == "transfer"
        assert within_call(transferred["at"]) and transferred["at"] >= cut["at"]

        # Three caller turns were answered: the order, the apology, the transfer.
        assert len(record.turn_latencies) == 3
        assert [t["response_ms"] for t in record.turn_latencies] == record.latency["response_ms"]
        for turn in record.turn_latencies:
            assert within_call(turn["at"]) and turn["response_ms"] > 0, turn
        assert record.turn_latencies[-1]["at"] > cut["at"]  # the last: after the barge-in

        # Every utterance knows when it began (a recording plays a line from there): the
        # caller's when speech was detected, before its answer's latency sample; the bot's
        # with the answer's first audio, before the utterance was complete.
        for turn in record.transcript:
            assert within_call(turn["started_at"]) and turn["started_at"] < turn["at"], turn
        caller_starts = [t["started_at"] for t in record.transcript if t["role"] == "caller"]
        assert len(caller_starts) >= 3
        for began, answered in zip(caller_starts, record.turn_latencies, strict=False):
            assert began < answered["at"]

        # The cost, by kind, adds up to cost_usd.
        assert record.cost_usd is not None and record.cost_usd > 0
        assert set(record.cost) == {
            "audio_in",
            "cached_audio_in",
            "audio_out",
            "text_in",
            "cached_text_in",
            "text_out",
        }
        assert sum(record.cost.values()) == record.cost_usd
        assert agents[0].barge_ins == 1 and agents[0].keypad_groups == 1

        # The stored record is the same.
        await runner.records.settle(timeout=5)
        stored = runner.store.get(record.call_sid)
        assert stored.tool_calls == record.tool_calls and stored.transfers == record.transfers
        assert stored.barge_ins == record.barge_ins and stored.cost == record.cost


@pytest.mark.call
async def test_a_fallback_that_dials_is_a_transfer_on_the_record():
    def pipeline(call):
        agent = RealtimeAgent(
            instructions="You are a test bot.", fallback_number="sip:desk@example.com"
        )
        return [call.input(), agent, call.output()]

    async with phone_call(pipeline=pipeline, settings={"prewarm": False}) as (
        emulator,
        runner,
        caller,
    ):
        emulator.refuse_handshakes(99, 401)
        await caller.call()
        await caller.wait_ended(timeout=15)
        await caller.wait_until(lambda: runner.finished, timeout=5)
        [record] = runner.finished
        assert record.end_reason == "failed: connect: invalid_api_key"
        [fallback] = record.transfers
        assert fallback["target"] == "sip:desk@example.com" and fallback["kind"] == "fallback"
        assert record.started_at <= fallback["at"] <= (record.ended_at or 0)
        assert record.tool_calls == record.keypad == record.barge_ins == []
