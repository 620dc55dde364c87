"""Each example bot in bots/, on a whole call scripted with the testing kit's Scenario."""

import sys

import pytest
from conftest import ROOT

from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT
from pipecat_realtime_twilio.testing.model import last_keypad_input
from pipecat_realtime_twilio.testing.scenario import Scenario

pytestmark = pytest.mark.call

BOTS = ROOT / "bots"


async def test_receptionist_takes_a_message_then_ends_the_call():
    async with Scenario("receptionist", bots_dir=BOTS) as call:
        await call.start()
        call.model.says("Sure. May I have your name?")
        await call.caller_says("I'd like to leave a message.")
        call.model.calls("end_call", saying="Thanks, Dana. Someone will call you back. Goodbye!")
        await call.caller_says("Dana, on 555 0100, about a leaking tap.")
        await call.ended()

        assert call.hung_up_by_bot and call.transferred_to is None
        assert [name for name, _, _ in call.tool_calls] == ["end_call"]
        assert call.record.bot == "receptionist"
        assert call.record.end_reason == "bot ended the call"
        assert call.transcript == [
            ("bot", "Hello, you've reached Acme Plumbing. How can I help you today?"),
            ("caller", "I'd like to leave a message."),
            ("bot", "Sure. May I have your name?"),
            ("caller", "Dana, on 555 0100, about a leaking tap."),
            ("bot", "Thanks, Dana. Someone will call you back. Goodbye!"),
        ]
        session = call.emulator.sessions[0]
        assert session.config["audio"]["output"]["voice"] == "cedar"
        assert call.model.unscripted == 0 and call.emulator.validation_errors == []


async def test_receptionist_transfers_on_request():
    async with Scenario("receptionist", bots_dir=BOTS) as call:
        await call.start()
        call.model.calls("transfer_call", saying="Of course, putting you through now.")
        await call.caller_says("Can I talk to a person, please?")
        await call.ended()
        assert call.transferred_to == "+15551230000"
        assert call.record.end_reason == "transferred to +15551230000"


async def test_appointment_booker_finds_a_slot_and_books_it():
    async with Scenario("appointments", bots_dir=BOTS) as call:
        await call.start()
        call.model.calls("free_slots", {"day": "2030-01-07"})
        call.model.says("I have nine, ten or eleven. Which suits you?")
        await call.caller_says("Monday the seventh of January 2030, please.")
        call.model.calls("book", {"day": "2030-01-07", "time": "10:00", "name": "Sam"})
        call.model.calls("end_call", saying="You're booked for ten, Sam. Goodbye!")
        await call.caller_says("Ten, please. I'm Sam.")
        await call.ended()

        [slots, booking, end] = call.tool_calls
        assert slots[0] == "free_slots" and slots[2]["open"][:3] == ["09:00", "10:00", "11:00"]
        assert booking == (
            "book",
            {"day": "2030-01-07", "time": "10:00", "name": "Sam"},
            {"booked": True, "day": "2030-01-07", "time": "10:00", "name": "Sam"},
        )
        assert end[0] == "end_call" and call.hung_up_by_bot
        appointments = sys.modules["pipecat_realtime_twilio_bots.appointments"]  # the runner's
        assert appointments.BOOKINGS[("2030-01-07", "10:00")] == "Sam"


async def test_dtmf_survey_takes_a_keypad_answer():
    async with Scenario("survey", bots_dir=BOTS) as call:
        await call.start()
        call.model.calls("end_call", saying="Thanks, glad to hear it! Goodbye!")
        await call.caller_presses("1")
        await call.ended()
        session = call.emulator.sessions[0]
        assert last_keypad_input(session) == "1"
        assert any(
            i["content"][0].get("text") == KEYPAD_INPUT + "1"
            for i in session.items
            if i.get("role") == "user"
        )
        assert call.hung_up_by_bot and call.record.end_reason == "bot ended the call"
