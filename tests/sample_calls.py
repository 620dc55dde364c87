"""Made-up call records over several days and bots, and a recording, for the console's tests."""

import io
import math
import time
import wave
from array import array

from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.runner.records import CallRecord, latency_summary

DAY = 86400.0
BOTS = ("default", "receptionist", "survey")
REASONS = ("caller hung up", "end_call", "failed: connect: quota", "transferred")
SHOWCASE = "CA" + "5" * 32
"""The call with everything: a recording, tool calls, keys, a barge-in, a transfer, analysis."""

SHOWCASE_LINES = (
    ("bot", 1.0, "Hello! Thanks for calling. How can I help?"),
    ("caller", 4.0, "I'd like to book a table for two, tomorrow at seven."),
    ("bot", 7.5, "Let me check that for you."),
    ("caller", 10.0, "And is there parking nearby?"),
    ("bot", 13.0, "Yes, there is a car park next door. Anything else?"),
)
"""Role, seconds from the start, text: the showcase call's transcript."""

SHOWCASE_SECONDS = 16.0


def sid(n: int) -> str:
    """The CallSid of the ``n``-th made-up call."""
    return f"CA{n:032x}"


def sample_records(now: float | None = None, count: int = 14) -> list[CallRecord]:
    """``count`` finished calls spread over the last five days and three bots.

    Args:
        now: The present (the clock's by default); calls start before it.
        count: How many.
    """
    now = time.time() if now is None else now
    records = []
    for n in range(count):
        started = now - (n % 5) * DAY - 3600 - n * 60
        duration = 30.0 + 7 * n
        latencies = [400.0 + 10 * n + 50 * k for k in range(3)]
        record = CallRecord(
            call_sid=sid(n + 1),
            bot=BOTS[n % len(BOTS)],
            from_number=f"+1555000{n:04d}",
            to_number="+15559990000",
            direction="outbound" if n % 4 == 3 else "inbound",
            model="gpt-realtime",
            started_at=started,
            usage=Usage(),
            cost_usd=round(0.01 * (n + 1), 4),
            cost={"audio_in": round(0.004 * (n + 1), 6), "audio_out": round(0.006 * (n + 1), 6)},
            latency=latency_summary(latencies),
            turn_latencies=[
                {"at": started + 5 + 8 * k, "response_ms": ms} for k, ms in enumerate(latencies)
            ],
        )
        record.add_turn("bot", "Hello! Thanks for calling.", at=started + 1)
        words = "parking" if n % 2 == 0 else "opening hours"
        record.add_turn("caller", f"Question number {n} about {words}.", at=started + 4)
        record.add_turn("bot", "Here is the answer.", at=started + 8)
        record.finish(REASONS[n % len(REASONS)], ended_at=started + duration)
        records.append(record)
    return records


def showcase_record(started: float, location: str | None) -> CallRecord:
    """The call with every kind of event, recorded at ``location``.

    Args:
        started: When it started (Unix time).
        location: Where its recording is (None: not recorded).
    """
    record = CallRecord(
        call_sid=SHOWCASE,
        bot="receptionist",
        from_number="+15551230000",
        to_number="+15559990000",
        direction="inbound",
        model="gpt-realtime",
        started_at=started,
        cost_usd=0.0421,
        cost={"audio_in": 0.0102, "audio_out": 0.0281, "text_in": 0.0008, "analysis": 0.003},
        latency=latency_summary([520.0, 610.0]),
        turn_latencies=[
            {"at": started + 5.2, "response_ms": 520.0},
            {"at": started + 11.0, "response_ms": 610.0},
        ],
        barge_ins=[{"at": started + 9.4, "heard_ms": 1400.0, "item_id": "item_7"}],
        tool_calls=[
            {
                "name": "check_availability",
                "call_id": "call_1",
                "arguments": '{"party": 2, "time": "19:00"}',
                "result": '{"available": true}',
                "error": None,
                "at": started + 6.0,
                "duration_ms": 840.0,
            },
            {
                "name": "find_parking",
                "call_id": "call_2",
                "arguments": "{}",
                "result": None,
                "error": "<script>alert(1)</script> timed out",
                "at": started + 11.5,
                "duration_ms": 1500.0,
            },
        ],
        keypad=[{"digits": "42#", "at": started + 3.0}],
        transfers=[{"target": "+15550001111", "at": started + 15.0, "kind": "transfer"}],
        analysis={
            "model": "gpt-4.1-mini",
            "fields": {
                "summary": "The caller booked a table for two and asked about parking.",
                "outcome": "booked",
                "callback_requested": False,
            },
            "error": None,
            "at": started + 20,
        },
    )
    if location is not None:
        record.recording = {
            "location": location,
            "bytes": 0,
            "duration_s": SHOWCASE_SECONDS,
            "sample_rate": 8000,
            "channels": 2,
        }
    for role, offset, text in SHOWCASE_LINES:
        record.add_turn(
            role,
            text,
            at=started + offset + 1.5,
            started_at=started + offset,
            interrupted=offset == 7.5,
        )
    record.finish("transferred", ended_at=started + SHOWCASE_SECONDS)
    return record


def showcase_wav(seconds: float = SHOWCASE_SECONDS) -> bytes:
    """A two-channel 8 kHz WAV: a tone on the left while the caller speaks, right for the bot."""
    rate = 8000
    frames = array("h", bytes(4 * int(seconds * rate)))
    for k, (role, offset, _) in enumerate(SHOWCASE_LINES):
        channel = 1 if role == "bot" else 0
        pitch = 300 + 80 * k
        for i in range(int(offset * rate), int(min(offset + 2.0, seconds) * rate)):
            frames[2 * i + channel] = int(6000 * math.sin(2 * math.pi * pitch * i / rate))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())
    return out.getvalue()
