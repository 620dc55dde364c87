"""Warm transfer on GPT-Live: the caller on hold while the Responses backend's tool dials a human.

The same runner, fake REST API and fake conferences as ``test_warm_transfer.py``, with a
``LiveAgent``: the ``warm_transfer`` call comes from the delegated Responses backend, the
"please hold" is heard before the hold (no deadlock on the delegation in flight), the
caller is muted to the model with ``session.input_audio.mute`` while the human is dialled,
and the outcome goes back as the ``function_call_output``. Every Live client event is
valid (``openai.types.live``): the emulator refuses any other.
"""

import contextlib
import json

import pytest
from conftest import AUTH_TOKEN, phone_call

from pipecat_realtime_twilio.agent.live import LiveAgent
from pipecat_realtime_twilio.agent.live_ledger import is_quiet
from pipecat_realtime_twilio.agent.warm_transfer import warm_transfer
from pipecat_realtime_twilio.phone.hold_audio import hold_sound
from pipecat_realtime_twilio.testing.emulator import FunctionCall, Reply
from pipecat_realtime_twilio.testing.fake_conference import FakeConferences
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

HUMAN = "+15557654321"
SUMMARY = "Jane Doe wants to move her Friday booking to Monday."
SPEECH = tone(600) + silence(700)
PLEASE_HOLD = Reply(
    text="Please hold while I find someone.",
    function_call=FunctionCall("warm_transfer", {"summary": SUMMARY}),
)


def live_bot(ring_secs: float):
    def pipeline(call):
        agent = LiveAgent(
            instructions="You are a test bot.", tools=[warm_transfer(HUMAN, ring_secs=ring_secs)]
        )
        return [call.input(), agent, call.output()]

    return pipeline


@contextlib.asynccontextmanager
async def warm_call(bot, replies, people):
    """A runner with REST credentials, Twilio's conferences, and a caller attached."""
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        async with FakeConferences(rest, people=people) as phones:
            settings = {"twilio_account_sid": rest.account_sid, "twilio_api_url": rest.url}
            async with phone_call(pipeline=bot, settings=settings, replies=replies) as (
                emulator,
                runner,
                caller,
            ):
                caller.account_sid = rest.account_sid
                rest.attach(caller)
                yield emulator, runner, caller, rest, phones


def speech(audio: bytes) -> bytes:
    """``audio`` without its quiet bytes."""
    return bytes(b for b in audio if not is_quiet(bytes([b])))


def split_at_hold(heard: bytes) -> tuple[bytes, bytes, bytes]:
    """``heard`` as (before the hold audio, the hold audio, after it)."""
    sound = hold_sound()
    start = heard.find(sound[:800])  # the first note: the hold audio starts there
    assert start > 0, "no hold audio heard"
    end = start
    while end < len(heard) and heard[end] == sound[(end - start) % len(sound)]:
        end += 1
    return heard[:start], heard[start:end], heard[end:]


def heard_at(caller, offset: int) -> float:
    """``loop.time()`` when the phone played byte ``offset`` of what the caller heard."""
    return next(when for when, played, start in caller.playback if offset < start + played)


def client_events(emulator, kind: str) -> list:
    return [e for s in emulator.live_sessions for e in s.events_of_type(kind)]


async def test_on_live_the_human_hears_the_summary_then_is_bridged_and_the_bot_leaves():
    async with warm_call(live_bot(ring_secs=10), [PLEASE_HOLD], {HUMAN: "answer"}) as (
        emulator,
        runner,
        caller,
        rest,
        phones,
    ):
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=20)

        session = emulator.live_sessions[0]
        assert session.delegation["type"] == "responses"
        [tool] = session.delegation["responses"]["tools"]
        assert tool["name"] == "warm_transfer"
        # The backend called the tool; the human was dialled and heard the summary.
        [leg] = phones.legs_to(HUMAN)
        assert leg.heard[-1].endswith(SUMMARY)
        room = phones.rooms[leg.room]
        human, moved = room.present()
        assert (human.call_sid, moved.call_sid) == (leg.call_sid, caller.call_sid)
        assert caller.ended_by_twilio_at is not None
        # The outcome went back as the function_call_output, then the delegation went on.
        [output] = session.function_outputs
        assert json.loads(output.output)["status"] == "bridged"
        assert [e["item"]["type"] for e in session.events_of_type("response.item.create")] == [
            "function_call_output"
        ]
        assert session.events_of_type("response.create")

        # "Please hold" heard in full, then the hold audio alone until the bridge.
        please_hold = session.responses[0]
        assert please_hold.reply is PLEASE_HOLD and please_hold.status == "completed"
        heard = bytes(caller.heard)
        before, held, after = split_at_hold(heard)
        assert speech(before) == speech(bytes(please_hold.audio))
        assert len(held) >= 8 * 200 and speech(after) == b""
        # Muted to the model once "please hold" was heard, before the human was dialled.
        [mute] = session.events_of_type("session.input_audio.mute")
        [created] = [r for r in rest.requests if r.method == "POST" and r.form.get("To") == HUMAN]
        heard_please_hold = heard_at(caller, len(before) - 1)
        assert heard_please_hold <= mute.received_at <= created.time
        assert session.sent_of_type("session.input_audio.muted")
        # The bot left still on hold: the backend's answer to "bridged" was never played.
        assert session.events_of_type("session.input_audio.unmute") == []

        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.engine == "live"
        assert record.end_reason == f"warm transferred to {HUMAN}"
        assert record.warm_transfer["outcome"] == "bridged"
        assert record.warm_transfer["human_call_sid"] == leg.call_sid
        assert [t["text"] for t in record.transcript if t["role"] == "bot"] == [PLEASE_HOLD.text]
        assert [(t["target"], t["kind"]) for t in record.transfers] == [(HUMAN, "warm_transfer")]
        [call_record] = record.tool_calls
        assert call_record["name"] == "warm_transfer" and call_record["error"] is None
        assert phones.problems == []
        assert emulator.validation_errors == [] and emulator.server_event_errors == []
        print(
            f"\nLive warm transfer: 'please hold' heard, muted "
            f"{(mute.received_at - heard_please_hold) * 1000:.0f} ms later, human dialled "
            f"{(created.time - mute.received_at) * 1000:.0f} ms after that; "
            f"{len(held) / 8:.0f} ms of hold audio; on hold {record.warm_transfer['held_secs']} s"
        )


async def test_on_live_no_answer_brings_the_caller_back_and_the_model_says_so():
    sorry = Reply(text="Sorry, nobody could take your call.")
    sure = Reply(text="Of course.")
    async with warm_call(
        live_bot(ring_secs=2), [PLEASE_HOLD, sorry, sure], {HUMAN: "no_answer"}
    ) as (
        emulator,
        runner,
        caller,
        rest,
        phones,
    ):
        await caller.call()
        await caller.say(SPEECH)
        session = emulator.live_sessions[0]
        told = lambda: [r for r in session.responses if r.reply is sorry]  # noqa: E731
        await caller.wait_until(lambda: told() and told()[0].status == "completed", timeout=20)
        await caller.wait_quiet(after=len(caller.heard), quiet_ms=500, timeout=10)

        # The outcome went back as the function_call_output, and the backend's answer to it
        # (the next response of the same delegation) is what the model said.
        [output] = session.function_outputs
        assert json.loads(output.output)["status"] == "no_answer"
        [answer] = told()
        assert answer.trigger == "response.create"
        assert answer.delegation_id == session.responses[0].delegation_id
        # Heard: "please hold", the hold audio, then the bot saying nobody answered.
        before, held, after = split_at_hold(bytes(caller.heard))
        assert speech(before) == speech(bytes(session.responses[0].audio))
        assert speech(after) == speech(bytes(answer.audio))
        print(f"\nLive, no answer in 2 s: {len(held) / 8:.0f} ms of hold audio heard")
        # Muted while the human's phone rang; unmuted before the outcome went back.
        [mute] = session.events_of_type("session.input_audio.mute")
        [unmute] = session.events_of_type("session.input_audio.unmute")
        [leg] = phones.legs_to(HUMAN)
        [created] = [r for r in rest.requests if r.method == "POST" and r.form.get("To") == HUMAN]
        assert mute.received_at <= created.time
        assert unmute.received_at <= output.at
        assert not session.muted
        await caller.wait_until(lambda: leg.final_status is not None, timeout=5)
        assert leg.final_status == "canceled" and phones.room_of(caller.call_sid) is None

        # The bot listens again: the caller's next words reach the model.
        await caller.say(SPEECH)
        await caller.wait_until(lambda: any(r.reply is sure for r in session.responses), 10)
        await caller.hangup()

        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.end_reason == "caller hung up"
        assert record.warm_transfer["outcome"] == "no_answer"
        assert record.warm_transfer["rang_secs"] >= 2.0 and record.transfers == []
        bot_words = [t["text"] for t in record.transcript if t["role"] == "bot"]
        assert bot_words == [PLEASE_HOLD.text, sorry.text, sure.text]
        assert phones.problems == []
        assert emulator.validation_errors == [] and emulator.server_event_errors == []


async def test_a_session_lost_on_hold_is_replaced_muted_and_the_model_still_hears_the_outcome():
    sorry = Reply(text="Sorry, nobody could take your call.")
    async with warm_call(live_bot(ring_secs=3), [PLEASE_HOLD, sorry], {HUMAN: "no_answer"}) as (
        emulator,
        runner,
        caller,
        rest,
        phones,
    ):
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_until(lambda: phones.legs_to(HUMAN), timeout=15)
        first = emulator.live_sessions[0]
        assert first.muted
        await emulator.drop_connections()  # the socket dies while the human's phone rings
        await caller.wait_until(lambda: len(emulator.live_sessions) == 2, timeout=5)
        second = emulator.live_sessions[1]
        await caller.wait_until(lambda: second.started and second.muted, timeout=5)
        # The new session is muted before any of the caller's audio reaches it.
        kinds = [e.get("type") for e in second.client_events]
        assert kinds[:2] == ["session.start", "session.input_audio.mute"]
        told = lambda: [r for r in second.responses if r.reply is sorry]  # noqa: E731
        await caller.wait_until(lambda: told() and told()[0].status == "completed", timeout=15)
        await caller.wait_quiet(after=len(caller.heard), quiet_ms=500, timeout=10)

        # The call the backend made belonged to the lost session: its outcome reached the
        # model of the new one as commentary, which it answered.
        assert second.function_outputs == []
        [answer] = told()
        assert answer.trigger == "commentary"
        [commentary] = [c for c in second.contexts if c.kind == "commentary"]
        assert "warm_transfer" in commentary.content and '"no_answer"' in commentary.content
        assert second.events_of_type("session.input_audio.unmute") and not second.muted
        # Heard: "please hold", the hold audio, the bot saying nobody answered.
        before, held, after = split_at_hold(bytes(caller.heard))
        assert speech(before) == speech(bytes(first.responses[0].audio))
        assert speech(after) == speech(bytes(answer.audio))
        await caller.hangup()

        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.warm_transfer["outcome"] == "no_answer"
        assert emulator.validation_errors == [] and emulator.server_event_errors == []
