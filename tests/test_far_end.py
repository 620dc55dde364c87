"""Surviving the far end: a dropped Realtime socket, fatal Realtime errors."""

import json

import pytest
from conftest import AUTH_TOKEN, phone_call
from test_operations import _sample

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.failures import FALLBACK_LINE
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

SPEECH = tone(600) + silence(700)


def bot(**options):
    def pipeline(call):
        agent = RealtimeAgent(
            instructions="You are a test bot.", greeting="Hello there.", **options
        )
        return [call.input(), agent, call.output()]

    return pipeline


async def test_a_dropped_socket_reconnects_replays_and_answers_the_next_utterance():
    replies = say_as_asked(Reply(text="Yes, I am still here."))
    async with phone_call(pipeline=bot(), replies=replies, transcripts=["Are you there?"]) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        await caller.say(SPEECH)
        first_answer = len(caller.heard)
        await caller.wait_quiet(after=first_answer, quiet_ms=300, timeout=10)
        # 3 s into the call the socket drops.
        await caller.wait_until(
            lambda: caller.playback and caller.playback[-1][0] - caller.started_at >= 3, timeout=5
        )
        await emulator.drop_connections()
        second = await emulator.wait_for_session(1, timeout=5)

        # The new session is configured before anything else, then the conversation replayed.
        await emulator.wait_for(lambda: len(second.client_events) >= 4, timeout=5)
        assert second.client_events[0]["type"] == "session.update"
        assert second.config["audio"]["output"]["format"]["type"] == "audio/pcmu"
        replayed = [
            e["item"] for e in second.client_events if e["type"] == "conversation.item.create"
        ]
        assert [(i["role"], i["content"][0]["text"]) for i in replayed] == [
            ("assistant", "Hello there."),
            ("user", "Are you there?"),
            ("assistant", "Yes, I am still here."),
        ]

        # The caller's next utterance is answered on the new session and heard.
        heard = len(caller.heard)
        await caller.say(SPEECH)
        await caller.wait_quiet(after=heard, quiet_ms=300, timeout=10)
        answer = second.responses[-1]
        assert answer.trigger == "vad" and bytes(caller.heard[heard:]) == bytes(answer.audio)
        assert emulator.validation_errors == []

        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "caller hung up"
        assert _sample(runner, "prt_realtime_reconnects_total") == 1


async def test_insufficient_quota_speaks_the_fallback_and_the_record_says_why():
    async with phone_call(pipeline=bot(), replies=say_as_asked()) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        session = emulator.sessions[0]
        await session.send_error(
            "insufficient_quota", "insufficient_quota", "You exceeded your current quota."
        )
        await caller.wait_ended(timeout=5)
        assert caller.hung_up_at is None  # the runner closed the stream
        after = await caller.follow_action()
        assert [v.name for v in after.verbs] == ["Say", "Hangup"]
        assert after.verbs[0].text == FALLBACK_LINE
        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.end_reason == "failed: respond: insufficient_quota"
        await caller.wait_until(lambda: runner.store.get(caller.call_sid), timeout=5)
        stored = runner.store.get(caller.call_sid)
        assert stored.end_reason == "failed: respond: insufficient_quota"
        assert len(emulator.sessions) == 1  # no pointless reconnect


async def test_fatal_error_transfers_to_the_fallback_number_when_the_bot_has_one():
    async with phone_call(pipeline=bot(fallback_number="+15550001234"), replies=say_as_asked()) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        await emulator.sessions[0].send_error(
            "invalid_request_error", "invalid_api_key", "Incorrect API key provided."
        )
        await caller.wait_ended(timeout=5)
        after = await caller.follow_action()
        assert [(v.name, v.text) for v in after.verbs] == [("Dial", "+15550001234")]
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "failed: respond: invalid_api_key"
        stored = json.loads(runner.finished[0].to_json())
        assert stored["end_reason"] == "failed: respond: invalid_api_key"


async def test_caller_drop_closes_the_realtime_socket_at_once_and_sends_no_rest_hangup():
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        settings = {"twilio_account_sid": rest.account_sid, "twilio_api_url": rest.url}
        async with phone_call(pipeline=bot(), settings=settings, replies=say_as_asked()) as (
            emulator,
            runner,
            caller,
        ):
            caller.account_sid = rest.account_sid
            rest.add_call(caller.call_sid)
            await caller.call()
            await caller.wait_heard(200, timeout=10)  # mid-greeting
            await caller.hangup()
            session = emulator.sessions[0]
            await emulator.wait_for(lambda: session.closed_at is not None, timeout=5)
            # A correctness bound (the OpenAI socket bills while open), not a speed target.
            assert session.closed_at - caller.hung_up_at <= 0.1
            await caller.wait_until(lambda: runner.finished, timeout=5)
            assert runner.finished[0].end_reason == "caller hung up"
            assert rest.requests == []


async def test_session_rotation_carries_the_conversation_into_a_fresh_session():
    agents = []

    def pipeline(call):
        agent = RealtimeAgent(instructions="Test bot.", greeting="Hello there.", session_max_secs=2)
        agents.append(agent)
        return [call.input(), agent, call.output()]

    replies = say_as_asked(Reply(text="Still with you."))
    async with phone_call(pipeline=pipeline, replies=replies, transcripts=["One.", "Two."]) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        await caller.say(SPEECH)
        await caller.wait_quiet(after=len(caller.heard) - 1, quiet_ms=300, timeout=10)
        second = await emulator.wait_for_session(1, timeout=10)
        # The first session was closed by us, at a turn boundary, not dropped.
        assert emulator.sessions[0].closed_at is not None
        await emulator.wait_for(lambda: len(second.client_events) >= 4, timeout=5)
        assert second.client_events[0]["type"] == "session.update"
        replayed = [
            (e["item"]["role"], e["item"]["content"][0]["text"])
            for e in second.client_events
            if e["type"] == "conversation.item.create"
        ]
        assert replayed == [
            ("assistant", "Hello there."),
            ("user", "One."),
            ("assistant", "Still with you."),
        ]
        heard = len(caller.heard)
        await caller.say(SPEECH)
        await caller.wait_quiet(after=heard, quiet_ms=300, timeout=10)
        assert second.responses[-1].trigger == "vad"
        assert bytes(caller.heard[heard:]) == bytes(second.responses[-1].audio)
        assert agents[0].rotations >= 1 and agents[0].reconnects == 0
        assert emulator.validation_errors == []
