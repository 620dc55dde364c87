"""Pre-warm: the Realtime session opens, and the greeting starts, while the webhook is answered."""

import asyncio

import pytest
from conftest import phone_call

from pipecat_realtime_twilio.frames import RealtimeAudioFrame
from pipecat_realtime_twilio.phone.output import TwilioOutputTransport
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call


def _prewarm_count(runner, outcome: str) -> float:
    return runner.metrics.registry.get_sample_value("prt_prewarm_total", {"outcome": outcome}) or 0


async def test_greeting_is_asked_for_before_the_stream_starts_and_plays_at_once():
    # Sent in real time, the greeting is partly in before the stream starts, partly after.
    greeting_reply = Reply("Hello, thanks for calling.", duration_ms=2000)
    async with phone_call(ttfb_ms=300, send_rate=1.0, replies=[greeting_reply]) as (
        emulator,
        runner,
        caller,
    ):
        await caller.dial()
        session = await emulator.wait_for_session(0)
        await emulator.wait_for(lambda: session.responses, timeout=5)
        # Twilio takes a while between the webhook's answer and the stream's start.
        await asyncio.sleep(0.5)
        await caller.connect()
        await caller.wait_heard(200, timeout=5)
        first_update = session.events_of_type("session.update")[0]
        first_response = session.events_of_type("response.create")[0]
        assert first_update.received_at < first_response.received_at < caller.started_at
        assert session.responses[0].first_audio_at < caller.started_at  # greeting ready
        await caller.wait_quiet(quiet_ms=600, timeout=10)
        greeting = len(caller.heard)
        sent = session.responses[0]
        assert sent.deltas[-1].sent_at > caller.started_at  # some of it came after the start
        assert bytes(caller.heard) == bytes(sent.audio)  # in order, bit for bit
        await caller.say(tone(800) + silence(900))
        await caller.wait_quiet(after=greeting, quiet_ms=600, timeout=10)
        assert len(caller.heard) > greeting  # the call goes on in the same session
        assert len(emulator.sessions) == 1
        assert not emulator.validation_errors
        assert _prewarm_count(runner, "used") == 1
        await caller.hangup()
        await session.wait_closed()


async def test_stream_that_starts_at_once_shares_the_session_being_opened():
    async with phone_call() as (emulator, runner, caller):
        await caller.call()  # dial and connect with no delay: pre-warm still opening
        await caller.wait_heard(200, timeout=5)
        await caller.wait_quiet(quiet_ms=600, timeout=10)
        assert len(emulator.sessions) == 1
        assert len(emulator.sessions[0].events_of_type("response.create")) == 1
        assert _prewarm_count(runner, "used") == 1


async def test_session_without_a_stream_is_closed_after_the_timeout():
    async with phone_call(settings={"prewarm_timeout_secs": 0.3}) as (emulator, runner, caller):
        await caller.dial()
        session = await emulator.wait_for_session(0)
        await session.wait_closed(timeout=5)
        assert _prewarm_count(runner, "expired") == 1
        assert len(runner.prewarmed) == 0
        assert not runner.active


async def test_without_prewarm_the_session_opens_when_the_stream_starts():
    async with phone_call(settings={"prewarm": False}) as (emulator, runner, caller):
        await caller.dial()
        await asyncio.sleep(0.3)
        assert emulator.sessions == []
        await caller.connect()
        await caller.wait_heard(200, timeout=5)
        assert len(emulator.sessions) == 1
        assert _prewarm_count(runner, "used") == 0


async def test_failed_prewarm_is_counted_and_the_call_connects_at_stream_start():
    async with phone_call() as (emulator, runner, caller):
        # 503s all through the pre-warm's retry budget: it gives up...
        emulator.refuse_handshakes(99, 503)
        await caller.dial()
        await emulator.wait_for(lambda: _prewarm_count(runner, "failed") == 1, timeout=10)
        assert len(emulator.rejected_handshakes) >= 3  # retried with backoff meanwhile
        # ...the outage is over by the time the stream starts: the call connects then.
        emulator.refuse_handshakes(0, 503)
        await caller.connect()
        await caller.wait_heard(200, timeout=5)
        assert len(emulator.sessions) == 1
        assert runner.active[caller.call_sid].end_reason is None


async def test_stream_url_sends_the_stream_to_this_instance_and_its_signature_holds():
    settings = {"stream_url": "https://runner-3.bot.example.com"}
    async with phone_call(settings=settings) as (emulator, runner, caller):
        await caller.dial()
        assert caller.dial_result.stream_url == "wss://runner-3.bot.example.com/media-stream"
        await caller.connect()  # signed over the STREAM_URL address, as Twilio would
        await caller.wait_heard(200, timeout=5)
        assert _prewarm_count(runner, "used") == 1


async def test_audio_before_and_after_the_start_takes_one_path_to_the_phone(monkeypatch):
    # Audio that came while pre-warmed and audio that comes later must not take two
    # paths to the phone (through the pipeline's queue, and straight): the straight one
    # would overtake the queue and the phone would play the greeting out of order.
    queued = []
    handle_frame = TwilioOutputTransport._handle_frame

    async def spy(self, frame):
        if isinstance(frame, RealtimeAudioFrame):
            queued.append(frame)
        await handle_frame(self, frame)

    monkeypatch.setattr(TwilioOutputTransport, "_handle_frame", spy)
    async with phone_call(ttfb_ms=100) as (emulator, runner, caller):
        await caller.dial()
        session = await emulator.wait_for_session(0)
        await emulator.wait_for(lambda: session.responses and session.responses[0].deltas)
        await caller.connect()
        await caller.wait_quiet(quiet_ms=500, timeout=10)
        assert session.responses[0].deltas[0].sent_at < caller.started_at
        assert bytes(caller.heard) == bytes(session.responses[0].audio)
        assert queued == []  # every frame went straight to the phone


async def test_webhook_asked_again_replaces_the_prewarmed_session():
    async with phone_call() as (emulator, runner, caller):
        await caller.dial()
        first = await emulator.wait_for_session(0)
        await caller.dial()  # Twilio retried the webhook: same CallSid
        await first.wait_closed(timeout=5)
        assert _prewarm_count(runner, "dropped") == 1
        await caller.connect()
        await caller.wait_heard(200, timeout=5)
        assert len(emulator.sessions) == 2 and _prewarm_count(runner, "used") == 1
