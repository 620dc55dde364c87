"""Warm transfer: the caller on hold, the human dialled with a summary, then bridged.

The call tests run the real runner against the emulator, the fake REST API and its fake
conferences (Twilio's side: the human's call, what they hear, the rooms).
"""

import asyncio
import contextlib
import json

import aiohttp
import pytest
from conftest import AUTH_TOKEN, phone_call
from pydantic import SecretStr
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from pipecat_realtime_twilio import RealtimeAgent, warm_transfer
from pipecat_realtime_twilio.errors import BotError, SettingsError
from pipecat_realtime_twilio.phone.conference import (
    SUMMARY_INTRO,
    caller_leg_twiml,
    human_leg_twiml,
    twilio_ring_timeout,
)
from pipecat_realtime_twilio.phone.ending import EndKind
from pipecat_realtime_twilio.phone.hold_audio import hold_sound
from pipecat_realtime_twilio.phone.warm_transfer import WarmTransferEnd, warm_transfer_record
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.runner.preflight import check_runner
from pipecat_realtime_twilio.runner.prompt_bot import load_prompt_bot
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.emulator import FunctionCall, Reply
from pipecat_realtime_twilio.testing.fake_conference import FakeConferences
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest, TwilioApiError
from pipecat_realtime_twilio.testing.sounds import silence, tone
from pipecat_realtime_twilio.testing.twiml import parse_twiml

HUMAN = "+15557654321"
SUMMARY = "Jane Doe wants to move her Friday booking to Monday."
SPEECH = tone(600) + silence(700)
PLEASE_HOLD = Reply(
    text="Please hold while I find someone.",
    function_call=FunctionCall("warm_transfer", {"summary": SUMMARY}),
)


def agent_bot(**agent_options):
    def pipeline(call):
        agent = RealtimeAgent(instructions="You are a test bot.", **agent_options)
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


def held_audio(heard: bytes) -> bool:
    """Whether ``heard`` is the hold sound, looped, from its start."""
    sound = hold_sound()
    looped = sound * (len(heard) // len(sound) + 1)
    return bool(heard) and heard == looped[: len(heard)]


async def metric(caller, sample: str) -> float | None:
    async with aiohttp.ClientSession() as session:
        async with session.get(caller.server_url + "/metrics") as response:
            text = await response.text()
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample)]
    return float(values[0]) if values else None


# --- the call ---------------------------------------------------------------------------------


@pytest.mark.call
async def test_the_human_hears_the_summary_then_the_two_are_bridged_and_the_bot_leaves():
    bot = agent_bot(tools=[warm_transfer(HUMAN, ring_secs=10)])
    async with warm_call(bot, [PLEASE_HOLD], {HUMAN: "answer"}) as (
        emulator,
        runner,
        caller,
        rest,
        phones,
    ):
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=20)

        # The human was dialled from the call's own number, with a ring timeout...
        [leg] = phones.legs_to(HUMAN)
        params = rest.call_params[leg.call_sid]
        assert params["From"] == caller.to_number
        assert params["Timeout"] == str(twilio_ring_timeout(10))
        # ... heard the summary in Twilio's voice, then joined the call's room.
        assert leg.heard == [f"{SUMMARY_INTRO} {SUMMARY}"]
        room = phones.rooms[leg.room]
        assert room.name.startswith(f"warm-transfer-{caller.call_sid}-")
        assert room.status == "in-progress"
        # Both are in that one room now, the human first; the caller's stream was ended by
        # Twilio after the REST update (no 31921), its new TwiML is the room.
        human, moved = room.present()
        assert (human.call_sid, moved.call_sid) == (leg.call_sid, caller.call_sid)
        assert caller.ended_by_twilio_at is not None
        assert [code for _, code, _ in caller.debugger_errors] == []
        [dial] = caller.redirect_result.verbs
        assert dial.name == "Dial" and dial.children[0].name == "Conference"
        assert dial.children[0].text == room.name

        # The caller heard "please hold" in full, then the hold audio until the bridge.
        reply = emulator.sessions[0].responses[0]
        heard = bytes(caller.heard)
        assert heard.startswith(bytes(reply.audio))
        held = heard[len(reply.audio) :]
        assert held_audio(held)

        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.end_reason == f"warm transferred to {HUMAN}"
        transfer = record.warm_transfer
        assert transfer["outcome"] == "bridged" and transfer["attempts"] == 1
        assert transfer["human_call_sid"] == leg.call_sid
        assert (transfer["number"], transfer["summary"]) == (HUMAN, SUMMARY)
        assert transfer["conference"] == room.name and transfer["error"] is None
        assert 0 < transfer["rang_secs"] < transfer["held_secs"]
        assert [(t["target"], t["kind"]) for t in record.transfers] == [(HUMAN, "warm_transfer")]
        [tool] = record.tool_calls
        assert tool["name"] == "warm_transfer" and tool["error"] is None
        assert json.loads(tool["result"])["status"] == "bridged"
        assert await metric(caller, 'prt_warm_transfers_total{outcome="bridged"}') == 1.0
        assert await metric(caller, 'prt_calls_total{bot="test",end_reason="transferred"}') == 1
        assert phones.problems == [] and emulator.validation_errors == []
        polls = len([r for r in rest.requests if r.method == "GET"])
        print(
            f"\nwarm transfer: hold heard {len(held) / 8:.0f} ms; human answered after "
            f"{transfer['rang_secs']:.2f} s; caller on hold {transfer['held_secs']:.2f} s; "
            f"in the room {(moved.joined_at - human.joined_at) * 1000:.0f} ms after the human; "
            f"{polls} REST reads"
        )

        # The human hangs up later: the room ends, and so does the caller's call.
        await phones.hang_up(leg.call_sid)
        await caller.wait_until(lambda: rest.calls[caller.call_sid]["status"] == "completed")
        assert room.status == "completed"


@pytest.mark.call
@pytest.mark.parametrize(
    ("behaviour", "outcome", "human_status"),
    [
        ("no_answer", "no_answer", "canceled"),
        ("busy", "busy", "busy"),
        ("decline", "declined", "completed"),
    ],
)
async def test_unanswered_the_caller_is_back_with_the_bot_which_says_so(
    behaviour, outcome, human_status
):
    sorry = Reply(text="Sorry, nobody could take your call.")
    sure = Reply(text="Of course.")
    bot = agent_bot(tools=[warm_transfer(HUMAN, ring_secs=2)])
    async with warm_call(bot, [PLEASE_HOLD, sorry, sure], {HUMAN: behaviour}) as (
        emulator,
        runner,
        caller,
        rest,
        phones,
    ):
        await caller.call()
        await caller.say(SPEECH)
        session = lambda: emulator.sessions[0]  # noqa: E731
        await caller.wait_until(lambda: len(session().responses) >= 2, timeout=15)
        await caller.wait_quiet(after=len(caller.heard), quiet_ms=500, timeout=10)

        # The model was told, and the caller heard the bot say so after the hold audio.
        [output] = session().function_outputs
        assert json.loads(output.output)["status"] == outcome
        please_hold, told = session().responses[:2]
        assert told.trigger == "response.create" and told.transcript == sorry.text
        heard = bytes(caller.heard)
        assert heard.startswith(bytes(please_hold.audio)) and heard.endswith(bytes(told.audio))
        held = heard[len(please_hold.audio) : len(heard) - len(told.audio)]
        if behaviour == "no_answer":
            assert held_audio(held)
            print(f"\nno answer in 2 s: {len(held) / 8:.0f} ms of hold audio heard")
        else:
            assert not held or held_audio(held)
        assert not caller.ended

        # Nobody was bridged; the human's call ended (canceled by the runner at ring_secs).
        [leg] = phones.legs_to(HUMAN)
        await caller.wait_until(lambda: leg.final_status is not None, timeout=5)
        assert leg.final_status == human_status
        assert rest.calls[leg.call_sid]["status"] == human_status
        assert phones.room_of(caller.call_sid) is None

        # The bot listens again.
        await caller.say(SPEECH)
        await caller.wait_until(lambda: len(session().responses) >= 3, timeout=10)
        assert session().responses[2].transcript == sure.text
        await caller.hangup()

        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.end_reason == "caller hung up"
        assert record.warm_transfer["outcome"] == outcome
        assert record.warm_transfer["human_call_sid"] == leg.call_sid
        assert record.transfers == []
        if behaviour == "no_answer":
            assert record.warm_transfer["rang_secs"] >= 2.0
        assert await metric(caller, f'prt_warm_transfers_total{{outcome="{outcome}"}}') == 1.0
        assert phones.problems == [] and emulator.validation_errors == []


@pytest.mark.call
async def test_a_caller_hanging_up_on_hold_cancels_the_humans_call():
    bot = agent_bot(tools=[warm_transfer(HUMAN, ring_secs=20)])
    async with warm_call(bot, [PLEASE_HOLD], {HUMAN: "no_answer"}) as (
        emulator,
        runner,
        caller,
        rest,
        phones,
    ):
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_until(lambda: phones.legs_to(HUMAN), timeout=15)
        [leg] = phones.legs_to(HUMAN)
        reply = emulator.sessions[0].responses[0]
        await caller.wait_until(lambda: len(caller.heard) > len(reply.audio) + 4000, timeout=5)
        assert rest.calls[leg.call_sid]["status"] == "ringing"
        assert held_audio(bytes(caller.heard)[len(reply.audio) :])

        await caller.hangup()
        await caller.wait_until(lambda: leg.final_status is not None, timeout=5)
        assert leg.final_status == "canceled"
        [cancel] = rest.requests_to(leg.call_sid, "POST")
        assert cancel.form == {"Status": "canceled"}
        [stop_at] = [at for at, message in caller.sent if message.get("event") == "stop"]
        print(f"\nthe human's call canceled {(cancel.time - stop_at) * 1000:.0f} ms after the stop")

        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.end_reason == "caller hung up"
        assert record.warm_transfer["outcome"] == "caller_hung_up"
        assert phones.problems == []


@pytest.mark.call
async def test_a_number_twilio_refuses_leaves_the_caller_with_the_bot_which_apologizes():
    def refuse(call_sid, form):
        raise TwilioApiError(400, 21211, f"The 'To' number {form['To']} is not valid.")

    sorry = Reply(text="Sorry, I could not put you through.")
    bot = agent_bot(tools=[warm_transfer(HUMAN)])
    async with warm_call(bot, [PLEASE_HOLD, sorry], {}) as (emulator, runner, caller, rest, phones):
        rest.screen_create = refuse
        await caller.call()
        await caller.say(SPEECH)
        session = lambda: emulator.sessions[0]  # noqa: E731
        await caller.wait_until(lambda: len(session().responses) >= 2, timeout=15)
        await caller.wait_quiet(after=len(caller.heard), quiet_ms=500, timeout=10)
        assert json.loads(session().function_outputs[0].output)["status"] == "failed"
        assert bytes(caller.heard).endswith(bytes(session().responses[1].audio))
        assert phones.legs == {} and not caller.ended
        await caller.hangup()

        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.warm_transfer["outcome"] == "failed"
        assert (
            "21211" in record.warm_transfer["error"] or "not valid" in record.warm_transfer["error"]
        )
        [tool] = record.tool_calls
        assert tool["name"] == "warm_transfer" and tool["error"] == "warm_transfer failed"


@pytest.mark.call
async def test_the_fake_conference_answers_twilios_client_and_notes_mistakes():
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        async with FakeConferences(rest) as phones:
            client = Client(rest.account_sid, AUTH_TOKEN, http_client=AsyncTwilioHttpClient())
            client.api.base_url = rest.url
            try:
                twiml = "<Response><Dial><Conference>room-1</Conference></Dial></Response>"
                call = await client.calls.create_async(to=HUMAN, from_="+15550002222", twiml=twiml)
                leg = phones.legs[call.sid]
                await _until(lambda: leg.room == "room-1")
                [room] = await client.conferences.list_async(friendly_name="room-1")
                assert room.status == "in-progress"
                [participant] = await client.conferences(room.sid).participants.list_async()
                assert participant.call_sid == call.sid
                assert await client.conferences.list_async(friendly_name="room-2") == []
                await client.calls(call.sid).update_async(status="completed")
                await _until(lambda: leg.final_status == "completed")
                assert await client.conferences.list_async(friendly_name="room-1") == []
                assert await client.conferences(room.sid).participants.list_async() == []
            finally:
                await client.http_client.close()
    assert len(phones.problems) == 3, phones.problems
    timeout, heard_nothing, alone = phones.problems
    assert "Timeout=None" in timeout and "heard nothing" in heard_nothing
    assert "without endConferenceOnExit" in alone


async def _until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


# --- the parts --------------------------------------------------------------------------------


def test_the_human_hears_the_summary_then_joins_a_room_that_ends_when_either_leaves():
    document = parse_twiml(human_leg_twiml("Jane needs help.", "warm-transfer-CA1"))
    say, dial = document.verbs
    assert (say.name, say.text) == ("Say", f"{SUMMARY_INTRO} Jane needs help.")
    [conference] = dial.children
    assert conference.text == "warm-transfer-CA1"
    assert conference.attributes == {
        "beep": "false",
        "endConferenceOnExit": "true",
        "participantLabel": "human",
        "startConferenceOnEnter": "true",
    }
    [dial] = parse_twiml(caller_leg_twiml("warm-transfer-CA1")).verbs
    [conference] = dial.children
    assert conference.text == "warm-transfer-CA1"
    assert conference.attributes["endConferenceOnExit"] == "true"
    assert conference.attributes["participantLabel"] == "caller"


def test_twilio_rings_a_little_longer_than_the_runner_within_its_range():
    assert [twilio_ring_timeout(s) for s in (0.5, 2, 25, 24.2, 1000)] == [6, 7, 30, 30, 600]


def test_the_tool_asks_the_model_for_a_summary_and_checks_its_number():
    tool = warm_transfer("sip:desk@pbx.example.com")
    assert tool.name == "warm_transfer" and tool.schema.required == ["summary"]
    assert tool.schema.properties["summary"]["type"] == "string"
    with pytest.raises(ValueError, match="not a phone number"):
        warm_transfer("reception")
    with pytest.raises(ValueError, match="ring_secs"):
        warm_transfer(HUMAN, ring_secs=0)


def test_a_warm_transfer_ends_as_a_transfer_of_its_own_kind():
    end = WarmTransferEnd(EndKind.TRANSFERRED, HUMAN, next_twiml=caller_leg_twiml("r"))
    assert end.reason == f"warm transferred to {HUMAN}"
    assert end.transfer() == {"target": HUMAN, "at": end.at, "kind": "warm_transfer"}
    assert warm_transfer_record([]) is None
    first, last = {"outcome": "no_answer"}, {"outcome": "bridged"}
    assert warm_transfer_record([first, last]) == {"outcome": "bridged", "attempts": 2}


BOT = """\
---
tools: [end_call, warm_transfer]
warm_transfer:
  number: "+15551230000"
  ring_secs: 20
  caller_id: "+15550009999"
---
You are the receptionist of Acme.
"""


def test_a_prompt_bot_declares_the_warm_transfer_in_its_front_matter(tmp_path):
    path = tmp_path / "reception.md"
    path.write_text(BOT)
    bot = load_prompt_bot(path)
    spec = bot.spec.warm_transfer
    assert (spec.number, spec.ring_secs, spec.caller_id) == ("+15551230000", 20, "+15550009999")
    assert spec.tool().name == "warm_transfer"


@pytest.mark.parametrize(
    ("front", "says"),
    [
        ("tools: [warm_transfer]", "3: tools: warm_transfer needs warm_transfer:"),
        (
            "tools: [warm_transfer]\nwarm_transfer: {number: reception}",
            "4: warm_transfer.number: 'reception' is neither a phone number",
        ),
        (
            "tools: [warm_transfer]\nwarm_transfer:\n  number: '+15551230000'\n  ring_secs: 2",
            "6: warm_transfer.ring_secs: Input should be greater than or equal to 5",
        ),
        (
            "tools: [warm_transfer]\nwarm_transfer: {number: '+15551230000', caller_id: '555'}",
            "4: warm_transfer.caller_id: '555' is no E.164 phone number",
        ),
        (
            "tools: [warm_transfer]\nwarm_transfer: {number: '+15551230000', rings: 3}",
            "4: warm_transfer.rings: unknown key",
        ),
    ],
)
def test_a_wrong_warm_transfer_key_names_its_line(tmp_path, front, says):
    path = tmp_path / "bad.md"
    path.write_text(f"---\ndescription: x\n{front}\n---\nYou are a bot.\n")
    with pytest.raises(BotError) as error:
        load_prompt_bot(path)
    assert str(error.value).startswith(f"{path}:"), error.value
    assert says in str(error.value), error.value


@pytest.mark.parametrize(
    ("credentials", "says"),
    [
        ({}, "TWILIO_ACCOUNT_SID is not set: bot 'reception' uses warm_transfer"),
        ({"twilio_account_sid": "AC" + "1" * 32}, "TWILIO_AUTH_TOKEN is not set: bot"),
    ],
)
def test_a_runner_with_a_warm_transfer_bot_needs_rest_credentials(tmp_path, credentials, says):
    (tmp_path / "reception.md").write_text(BOT)
    bots = load_bots(tmp_path)
    settings = Settings(
        _env_file=None, bot="reception", twilio_validate_signatures=False, **credentials
    )
    with pytest.raises(SettingsError) as error:
        check_runner(settings, bots)
    assert str(error.value).startswith(says), error.value
    ready = settings.model_copy(
        update={"twilio_account_sid": "AC" + "1" * 32, "twilio_auth_token": SecretStr("t")}
    )
    check_runner(ready, bots)  # with both, it starts
