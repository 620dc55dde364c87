"""Each example bot in bots/ on a whole simulated call, the emulated model scripted."""

import json
import sys

from conftest import phone_call

from pipecat_realtime_twilio.realtime import KEYPAD_INPUT
from pipecat_realtime_twilio.testing.emulator import FunctionCall, Reply
from pipecat_realtime_twilio.testing.model import last_keypad_input, words_to_say
from pipecat_realtime_twilio.testing.sounds import silence, tone

SPEECH = tone(600) + silence(700)


def scripted(*replies: Reply):
    """The emulated model: says the greeting (and other given words), then ``replies`` in order."""
    queue = list(replies)

    def reply(session, trigger):
        words = words_to_say(session, trigger)
        return Reply(text=words) if words else queue.pop(0)

    return reply


async def test_receptionist_takes_a_message_then_ends_the_call():
    model = scripted(
        Reply(text="Sure. May I have your name?"),
        Reply(
            text="Thanks, Dana. Someone will call you back today. Goodbye!",
            function_call=FunctionCall("end_call", {}),
        ),
    )
    async with phone_call(
        bot="receptionist",
        replies=model,
        transcripts=["I'd like to leave a message.", "Dana, 555 0100."],
    ) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        for _ in range(2):
            heard = len(caller.heard)
            await caller.say(SPEECH)
            await caller.wait_until(lambda h=heard: len(caller.heard) > h, timeout=10)
        await caller.wait_ended(timeout=15)
        session = emulator.sessions[0]
        assert session.config["audio"]["output"]["voice"] == "cedar"
        assert "receptionist of Acme Plumbing" in session.config["instructions"]
        assert [r.transcript for r in session.responses][0].startswith("Hello, you've reached Acme")
        after = await caller.follow_action()
        assert [v.name for v in after.verbs] == ["Hangup"]
        await caller.wait_until(lambda: runner.finished, timeout=5)
        record = runner.finished[0]
        assert record.bot == "receptionist" and record.end_reason == "bot ended the call"
        assert [t["role"] for t in record.transcript] == ["bot", "caller", "bot", "caller", "bot"]


async def test_receptionist_transfers_on_request():
    model = scripted(
        Reply(
            text="Of course, putting you through now.",
            function_call=FunctionCall("transfer_call", {}),
        ),
    )
    async with phone_call(bot="receptionist", replies=model) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)
        after = await caller.follow_action()
        assert [(v.name, v.text) for v in after.verbs] == [("Dial", "+15551230000")]


async def test_appointment_booker_finds_a_slot_and_books_it():
    model = scripted(
        Reply(function_call=FunctionCall("free_slots", {"day": "2030-01-07"})),
        Reply(text="I have nine, ten or eleven. Which suits you?"),
        Reply(
            function_call=FunctionCall(
                "book", {"day": "2030-01-07", "time": "10:00", "name": "Sam"}
            )
        ),
        Reply(
            text="You're booked for Monday at ten, Sam. Goodbye!",
            function_call=FunctionCall("end_call", {}),
        ),
    )
    async with phone_call(bot="appointments", replies=model) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        await caller.say(SPEECH)
        await caller.wait_quiet(after=len(caller.heard) - 1, quiet_ms=400, timeout=10)
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)
        outputs = [json.loads(o.output) for o in emulator.sessions[0].function_outputs]
        assert outputs[0]["open"][:3] == ["09:00", "10:00", "11:00"]
        assert outputs[1] == {"booked": True, "day": "2030-01-07", "time": "10:00", "name": "Sam"}
        appointments = sys.modules["pipecat_realtime_twilio_bots.appointments"]  # the runner's
        assert appointments.BOOKINGS[("2030-01-07", "10:00")] == "Sam"
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "bot ended the call"


async def test_dtmf_survey_takes_a_keypad_answer():
    def model(session, trigger):
        words = words_to_say(session, trigger)
        if words:
            return Reply(text=words)
        digits = last_keypad_input(session)
        answer = "Thanks, glad to hear it!" if digits == "1" else "Only 1 or 2 count."
        return Reply(text=answer + " Goodbye!", function_call=FunctionCall("end_call", {}))

    async with phone_call(bot="survey", replies=model) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        await caller.press("1")
        await caller.wait_ended(timeout=15)
        session = emulator.sessions[0]
        keypad = [i for i in session.items if i.get("role") == "user"]
        assert keypad[-1]["content"][0]["text"] == KEYPAD_INPUT + "1"
        assert session.responses[-1].transcript == "Thanks, glad to hear it! Goodbye!"
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "bot ended the call"
