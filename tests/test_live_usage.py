"""What a GPT-Live call is billed for, and how its record keeps it (no I/O)."""

import time

from pipecat_realtime_twilio.agent.live_usage import LiveUsage, add_backend_usage
from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.runner.records import CallRecord


def test_billed_seconds_are_the_latest_report_of_each_session_summed():
    usage = LiveUsage(backend_model="gpt-5.4-mini")
    usage.reported(5)  # no session yet: ignored
    assert usage.sessions == 0 and usage.billed_seconds == 0
    usage.opened()
    usage.reported(5)
    usage.reported(12)  # cumulative: the latest counts, not the sum
    usage.reported(3)  # never less than what was reported
    usage.opened()  # a reconnect: the first session is over
    usage.reported(7.0)
    for junk in (None, "9", float("nan"), -1, True):
        usage.reported(junk)
    assert usage.sessions == 2
    assert usage.billed_seconds == 19
    assert usage.as_dict() == {"billed_seconds": 19, "sessions": 2, "backend_model": "gpt-5.4-mini"}


def test_a_session_that_never_reported_counts_for_its_time_rounded_up():
    usage = LiveUsage()
    usage.opened()
    usage._sessions[-1].opened_at = time.monotonic() - 2.5
    usage.closed()
    assert usage.billed_seconds == 3


def test_backend_tokens_are_text_with_the_cached_ones_apart():
    usage = Usage()
    add_backend_usage(
        usage,
        {
            "input_tokens": 1200,
            "input_tokens_details": {"cached_tokens": 200},
            "output_tokens": 80,
            "output_tokens_details": {"reasoning_tokens": 30},
        },
    )
    add_backend_usage(usage, {"input_tokens": 100, "output_tokens": 5})
    add_backend_usage(usage, None)
    assert usage == Usage(input_text_tokens=1100, cached_text_tokens=200, output_text_tokens=85)


def test_the_record_keeps_the_engine_and_older_records_read_as_realtime():
    record = CallRecord(call_sid="CA1", model="gpt-live-1.1", engine="live")
    record.live = {"billed_seconds": 42.0, "sessions": 1, "backend_model": "gpt-5.4-mini"}
    again = CallRecord.from_json(record.to_json())
    assert again.engine == "live" and again.live == record.live
    old = {k: v for k, v in record.to_dict().items() if k not in ("engine", "live")}
    assert CallRecord.from_dict(old).engine == "realtime"
    assert CallRecord.from_dict(old).live is None
