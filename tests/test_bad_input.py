"""Bad input, property-based (hypothesis): arbitrary and mutated Twilio messages and Realtime
server events. No exception escapes, and no call ends because of bad data.

Example counts are bounded so CI stays fast: the call-level properties run a whole call per
example."""

import asyncio
import base64
import json

import pytest
from conftest import phone_call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.session_keeper import FATAL_ERROR_CODES
from pipecat_realtime_twilio.phone.serializer import TwilioSerializer
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.sounds import silence, tone

SPEECH = tone(600) + silence(700)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


def mutated(template: dict):
    """Strategy: ``template`` with one key deleted, replaced by junk, or a junk key added."""
    keys = sorted(template)
    return st.one_of(
        st.sampled_from(keys).map(lambda k: {x: v for x, v in template.items() if x != k}),
        st.tuples(st.sampled_from(keys), json_values).map(lambda kv: {**template, kv[0]: kv[1]}),
        st.tuples(st.text(min_size=1, max_size=10), json_values).map(
            lambda kv: {**template, kv[0]: kv[1]}
        ),
    )


def as_text(messages):
    """Strategy: JSON text of the messages, or broken text."""
    return st.one_of(
        messages.map(json.dumps),
        messages.map(lambda m: json.dumps(m)[: max(1, len(json.dumps(m)) // 2)]),
        st.text(max_size=200),
    )


TWILIO_TEMPLATES = [
    {
        "event": "media",
        "streamSid": "MZx",
        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
    },
    {"event": "dtmf", "streamSid": "MZx", "dtmf": {"track": "inbound_track", "digit": "5"}},
    {"event": "mark", "streamSid": "MZx", "mark": {"name": "m1"}},
    {"event": "connected", "protocol": "Call", "version": "1.0.0"},
]
twilio_messages = as_text(st.sampled_from(TWILIO_TEMPLATES).flatmap(mutated))


@settings(max_examples=300, deadline=None)
@given(st.one_of(twilio_messages, st.binary(max_size=300)))
def test_the_serializer_never_raises_on_any_message(message):
    async def check():
        serializer = TwilioSerializer("MZx", "CAx")
        await serializer.deserialize(message)

    asyncio.run(check())


@pytest.mark.call
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(twilio_messages, min_size=5, max_size=25))
def test_bad_twilio_messages_never_end_a_call(messages):
    async def scenario():
        async with phone_call(replies=say_as_asked(Reply(text="Got it."))) as (
            emulator,
            runner,
            caller,
        ):
            await caller.call()
            await caller.wait_quiet(quiet_ms=300, timeout=10)
            for message in messages:
                await caller.send_raw(message)
            heard = len(caller.heard)
            await caller.say(SPEECH)
            await caller.wait_quiet(after=heard, quiet_ms=300, timeout=10)
            assert not caller.ended and len(runner.active) == 1
            assert emulator.sessions[0].responses[-1].transcript == "Got it."

    asyncio.run(scenario())


SERVER_TEMPLATES = [
    {
        "type": "response.output_audio.delta",
        "event_id": "e1",
        "response_id": "resp_x",
        "item_id": "item_x",
        "output_index": 0,
        "content_index": 0,
        "delta": "//8=",
    },
    {
        "type": "response.done",
        "event_id": "e2",
        "response": {"id": "resp_x", "status": "completed"},
    },
    {
        "type": "input_audio_buffer.speech_stopped",
        "event_id": "e3",
        "audio_end_ms": 100,
        "item_id": "item_y",
    },
    {
        "type": "response.output_audio_transcript.delta",
        "event_id": "e4",
        "response_id": "resp_x",
        "item_id": "item_x",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
    },
    {
        "type": "response.function_call_arguments.done",
        "event_id": "e5",
        "response_id": "resp_x",
        "item_id": "item_f",
        "output_index": 0,
        "call_id": "call_x",
        "name": "nope",
        "arguments": "{",
    },
    {
        "type": "error",
        "event_id": "e6",
        "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "bad"},
    },
    {"type": "conversation.item.added", "event_id": "e7", "item": {"id": "item_z"}},
]


def not_fatal(event) -> bool:
    error = event.get("error") if isinstance(event, dict) else None
    return not (isinstance(error, dict) and error.get("code") in FATAL_ERROR_CODES)


server_events = as_text(st.sampled_from(SERVER_TEMPLATES).flatmap(mutated).filter(not_fatal))


@pytest.mark.call
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(server_events, min_size=5, max_size=25))
def test_bad_server_events_never_end_a_call(messages):
    def pipeline(call):
        agent = RealtimeAgent(instructions="Test bot.", greeting="Hello.")
        return [call.input(), agent, call.output()]

    async def scenario():
        async with phone_call(pipeline=pipeline, replies=say_as_asked(Reply(text="Got it."))) as (
            emulator,
            runner,
            caller,
        ):
            await caller.call()
            await caller.wait_quiet(quiet_ms=300, timeout=10)
            session = emulator.sessions[0]
            for message in messages:
                await session.send_raw(message)
            await asyncio.sleep(0.3)
            heard = len(caller.heard)
            await caller.say(SPEECH)
            await caller.wait_until(
                lambda: session.responses[-1].transcript == "Got it.", timeout=10
            )
            await caller.wait_quiet(after=heard, quiet_ms=300, timeout=10)
            assert not caller.ended and len(runner.active) == 1
            assert len(emulator.sessions) == 1  # bad data is dropped, not a reason to reconnect

    asyncio.run(scenario())
