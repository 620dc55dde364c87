"""Caller audio reaches OpenAI at most a little faster than real time, per call.

A flood (a minute of audio in a moment) is cut to the burst allowance plus 1.25x real time and
the rest is counted as dropped; a caller at real time, or catching up after a short stall,
loses nothing. The unit tests drive the budget with a fake clock; the call tests assert
amounts, never timings.
"""

import asyncio
import base64
import json

import pytest
from conftest import phone_call
from loguru import logger
from websockets.asyncio.client import connect as ws_connect

from pipecat_realtime_twilio.audio import BYTES_PER_MS, ULAW_SILENCE
from pipecat_realtime_twilio.phone.inbound import (
    CALLER_AUDIO_BURST_MS,
    CALLER_AUDIO_RATE_FACTOR,
    InboundBudget,
)
from pipecat_realtime_twilio.phone.serializer import TwilioSerializer
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.sounds import silence

PACKET = 160  # 20 ms of 8 kHz μ-law
BURST_BYTES = CALLER_AUDIO_BURST_MS * BYTES_PER_MS


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def media(ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode()
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})


# --- the budget -------------------------------------------------------------------------------


def test_a_flood_gets_the_burst_then_a_little_more_than_real_time():
    clock = FakeClock()
    budget = InboundBudget(clock=clock)
    passed = 0
    for i in range(3000):  # 60 s of audio over 0.4 s
        clock.now = 1000.0 + 0.4 * i / 3000
        passed += PACKET if budget.take(PACKET) else 0
    allowed = BURST_BYTES + 0.4 * 8000 * CALLER_AUDIO_RATE_FACTOR
    assert allowed - PACKET <= passed <= allowed
    assert budget.dropped_bytes == 3000 * PACKET - passed
    assert budget.dropped_ms == budget.dropped_bytes / BYTES_PER_MS
    assert budget.dropped_packets == budget.dropped_bytes // PACKET


def test_real_time_with_jitter_and_a_stall_loses_nothing():
    clock = FakeClock()
    budget = InboundBudget(clock=clock)
    # An hour at real time, each packet up to 15 ms late or early (jitter)...
    for i in range(180_000):
        clock.now = 1000.0 + i * 0.02 + (0.015 if i % 7 == 0 else -0.015 if i % 5 == 0 else 0)
        assert budget.take(PACKET)
    # ... then a network stall: 1.9 s of audio arrives at once, and real time goes on.
    clock.now += 1.9
    for _ in range(95):
        assert budget.take(PACKET)
    for _ in range(500):
        clock.now += 0.02
        assert budget.take(PACKET)
    assert budget.dropped_bytes == 0 and budget.dropped_packets == 0


def test_the_budget_refills_at_the_factor_and_caps_at_the_burst():
    clock = FakeClock()
    budget = InboundBudget(rate_factor=1.5, burst_ms=100, clock=clock)
    assert budget.take(800) and not budget.take(1)  # the burst: 100 ms, then nothing left
    clock.now += 0.125  # refills 0.125 s x 8000 x 1.5 = 1500 bytes, capped at 800
    assert budget.take(800) and not budget.take(1)
    clock.now += 0.0625  # 750 bytes (times a binary float holds exactly)
    assert not budget.take(751) and budget.take(750)
    assert budget.dropped_bytes == 1 + 1 + 751 and budget.dropped_packets == 3


@pytest.mark.parametrize("options", [{"rate_factor": 0}, {"burst_ms": -1}])
def test_a_budget_needs_a_positive_rate_and_burst(options):
    with pytest.raises(ValueError):
        InboundBudget(**options)


# --- the serializer applies it on both paths --------------------------------------------------


class _Setup:
    audio_in_sample_rate = 8000


@pytest.mark.parametrize("fast_path", [True, False], ids=["caller_audio", "frames"])
async def test_the_serializer_drops_the_excess_before_forwarding_and_warns_once(fast_path):
    clock = FakeClock()
    serializer = TwilioSerializer("MZ1", "CA1", inbound=InboundBudget(clock=clock))
    await serializer.setup(_Setup())  # type: ignore[arg-type]
    forwarded: list[int] = []

    async def caller_audio(payload: str, size: int) -> None:
        forwarded.append(size)

    if fast_path:
        serializer.caller_audio = caller_audio
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        packet = media(bytes([0x7E]) * PACKET)
        for _ in range(3000):  # 60 s of audio, all at one instant
            frame = await serializer.deserialize(packet)
            if frame is not None:
                forwarded.append(len(frame.audio) // 2)  # PCM16 back to μ-law bytes
    finally:
        logger.remove(sink)
    assert sum(forwarded) == BURST_BYTES
    assert serializer.caller_audio_dropped_bytes == 3000 * PACKET - BURST_BYTES
    assert serializer.caller_audio_dropped_ms == 60_000 - CALLER_AUDIO_BURST_MS
    assert serializer.dropped_messages == 0  # well-formed: not counted as malformed
    assert len(warnings) == 1 and "faster than real time" in warnings[0]


# --- over real sockets ------------------------------------------------------------------------

FLOOD_BYTE = 0x7E  # μ-law just above silence: no speech for the emulator's VAD
FLOOD_PACKETS = 3000  # 60 s


@pytest.mark.call
async def test_a_minute_of_audio_sent_at_once_mostly_never_reaches_openai():
    async with phone_call() as (emulator, runner, caller):
        dial = await caller.dial()  # the call's session opens (pre-warm)
        assert dial.stream_url is not None
        ws = await ws_connect(
            caller.local_url(dial.stream_url, websocket=True),
            additional_headers=caller.signed_headers(dial.stream_url),
            max_size=None,
        )

        async def drain() -> None:  # the bot's greeting: read and ignored
            async for _ in ws:
                pass

        reader = asyncio.create_task(drain())
        try:
            stream_sid = "MZ" + "1" * 32
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
            start = {
                "accountSid": caller.account_sid,
                "streamSid": stream_sid,
                "callSid": caller.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": dial.parameters,
            }
            await ws.send(json.dumps({"event": "start", "start": start, "streamSid": stream_sid}))
            packet = media(bytes([FLOOD_BYTE]) * PACKET)
            for _ in range(FLOOD_PACKETS):  # as fast as the socket takes them
                await ws.send(packet)

            sent = FLOOD_PACKETS * PACKET
            await caller.wait_until(lambda: caller.call_sid in runner.active, timeout=10)
            call = runner.active[caller.call_sid]
            session = emulator.sessions[0]
            # Every byte either reached the model, unchanged, or was counted as dropped.
            await emulator.wait_for(
                lambda: (
                    len(session.input_audio) + call.serializer.caller_audio_dropped_bytes == sent
                ),
                timeout=20,
            )
            assert len(emulator.sessions) == 1
            received = bytes(session.input_audio)
            assert received == bytes([FLOOD_BYTE]) * len(received)
            # At least the burst went through, and far less than the minute.
            assert BURST_BYTES <= len(received) < 10_000 * BYTES_PER_MS
            assert call.caller_audio_dropped_ms > 50_000
            assert call.caller_audio_dropped_ms == call.serializer.caller_audio_dropped_ms
            assert not caller.ended and call.ended is None  # the call itself goes on
            dropped = call.caller_audio_dropped_ms
        finally:
            reader.cancel()
            await ws.close()
        # The record and the metric say so once the call is over.
        await caller.wait_until(lambda: runner.finished, timeout=10)
        [record] = runner.finished
        assert record.caller_audio_dropped_ms == dropped
        metric = runner.metrics.registry.get_sample_value
        assert metric("prt_caller_audio_dropped_seconds_total") == dropped / 1000


@pytest.mark.call
async def test_a_real_time_caller_loses_nothing_even_catching_up_after_a_stall():
    async with phone_call(replies=say_as_asked(Reply(text="Got it."))) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        call = runner.active[caller.call_sid]
        session = emulator.sessions[0]
        spoken = bytes((i * 37) % 120 + 1 for i in range(3 * 8000))  # 3 s, never 0x7E
        await caller.say(spoken + silence(500))  # sent in real time
        # A network stall ends: 1.5 s of audio arrives at once, then real time goes on.
        catch_up = media(bytes([FLOOD_BYTE]) * PACKET)
        for _ in range(75):
            await caller.send_raw(catch_up)
        await caller.say(silence(1000))
        await emulator.wait_for(
            lambda: bytes(session.input_audio).count(bytes([FLOOD_BYTE]) * PACKET) == 75,
            timeout=10,
        )
        assert spoken in bytes(session.input_audio)
        assert call.caller_audio_dropped_ms == 0
        assert bytes([ULAW_SILENCE]) * PACKET in bytes(session.input_audio)
