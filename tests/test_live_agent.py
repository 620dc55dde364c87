"""LiveAgent on a phone call: barge-in, keys, transfers and limits, against the Live emulator.

Real sockets on 127.0.0.1: the runner, the emulator speaking GPT-Live and a simulated
Twilio caller. GPT-Live decides turns itself; these tests check what the agent does
around that: the phone cleared when the caller talks over the bot (and what the
record says), keypad digits reaching the model, call control after what was said was
heard, and the transcript.
"""

import asyncio

import pytest
from conftest import phone_call

from pipecat_realtime_twilio.agent.limits import CallLimits
from pipecat_realtime_twilio.agent.live import LiveAgent
from pipecat_realtime_twilio.agent.live_ledger import is_quiet
from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT
from pipecat_realtime_twilio.agent.tools import transfer_call
from pipecat_realtime_twilio.testing.emulator import FunctionCall, Reply
from pipecat_realtime_twilio.testing.model import last_keypad_input, say_as_asked
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

GREETING = "Hello, you are through to the test line."
LONG_ANSWER = " ".join(["Here is a long answer that goes on and on for a good while."] * 6)
TRANSFER_TO = "+15557654321"


def bot(**options):
    """A Live bot with a greeting."""

    def pipeline(call):
        agent = LiveAgent(instructions="You are a test bot.", greeting=GREETING, **options)
        return [call.input(), agent, call.output()]

    return pipeline


def speech(audio: bytes) -> bytes:
    """``audio`` without its quiet bytes."""
    return bytes(b for b in audio if not is_quiet(bytes([b])))


async def greeted(caller) -> None:
    """Dial, and wait until the greeting was heard and the bot is quiet."""
    await caller.call()
    await caller.wait_heard(300, timeout=10)
    await caller.wait_quiet(quiet_ms=600, timeout=10)


def scripted(*turns: Reply):
    """Say what the agent asks for; answer the caller with ``turns`` in order, then briefly."""
    left = list(turns)

    def reply(session, trigger):
        words = say_as_asked()(session, trigger)
        return words or (left.pop(0) if left else Reply("Okay."))

    return reply


async def test_the_caller_talking_over_the_bot_clears_the_phone_and_cuts_the_transcript():
    async with phone_call(pipeline=bot(), replies=scripted(Reply(LONG_ANSWER))) as (
        emulator,
        runner,
        caller,
    ):
        await greeted(caller)
        clears = len(caller.clears)
        await caller.say(tone(500) + silence(600))
        heard = len(caller.heard)
        await caller.wait_heard(heard / 8 + 800, timeout=10)  # well into the long answer
        cut_at = asyncio.get_running_loop().time()
        await caller.say(tone(900) + silence(700))  # the caller talks over it
        await caller.wait_until(lambda: len(caller.clears) > clears, timeout=5)
        print(
            f"\nbarge-in: phone cleared {caller.clears[-1] - cut_at:.3f} s after the caller began"
        )
        await caller.wait_quiet(quiet_ms=600, timeout=15)
        agent = runner.active[caller.call_sid].agent
        assert agent.barge_ins == 1
        answer = next(e for e in agent.transcript if e.role == "bot" and e.text != GREETING)
        assert answer.interrupted
        assert 0 < len(answer.text) < len(LONG_ANSWER)
        session = emulator.live_sessions[0]
        long_turn = next(r for r in session.responses if r.reply and r.reply.text == LONG_ANSWER)
        assert len(speech(bytes(caller.heard))) < len(speech(bytes(session.output_audio)))
        assert len(speech(long_turn.audio)) > 0
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        record = runner.finished[0]
        assert len(record.barge_ins) == 1 and record.barge_ins[0]["heard_ms"] > 0
        assert emulator.validation_errors == []


async def test_keys_reach_gpt_live_as_commentary_and_stop_the_bot():
    async with phone_call(pipeline=bot(), replies=say_as_asked(Reply("You pressed keys."))) as (
        emulator,
        runner,
        caller,
    ):
        await greeted(caller)
        heard = len(caller.heard)
        await caller.press("42#")
        await caller.wait_heard(heard / 8 + 200, timeout=10)
        session = emulator.live_sessions[0]
        assert last_keypad_input(session) == "42#"
        keys = [c for c in session.contexts if c.content.startswith(KEYPAD_INPUT)]
        assert [c.kind for c in keys] == ["commentary"]
        agent = runner.active[caller.call_sid].agent
        assert agent.keypad_groups == 1
        assert emulator.validation_errors == []
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        assert [k["digits"] for k in runner.finished[0].keypad] == ["42#"]


async def test_transfer_call_after_the_announcement_was_heard():
    replies = scripted(
        Reply(function_call=FunctionCall("transfer_call", {})),
        Reply("Putting you through to the front desk now."),
    )
    pipeline = bot(tools=[transfer_call(TRANSFER_TO)])
    async with phone_call(pipeline=pipeline, replies=replies) as (emulator, runner, caller):
        await greeted(caller)
        await caller.say(tone(500) + silence(600))
        await caller.wait_ended(timeout=20)
        result = await caller.follow_action()
        assert [(v.name, v.text) for v in result.verbs] == [("Dial", TRANSFER_TO)]
        session = emulator.live_sessions[0]
        announcement = next(
            r for r in session.responses if r.reply and "front desk" in r.reply.text
        )
        assert announcement.status == "completed"
        assert speech(bytes(caller.heard)).endswith(speech(announcement.audio))
        await caller.wait_until(lambda: runner.finished, timeout=10)
        record = runner.finished[0]
        assert record.transfers and record.transfers[0]["target"] == TRANSFER_TO
        assert [c["name"] for c in record.tool_calls] == ["transfer_call"]
        assert emulator.validation_errors == []


async def test_a_silent_caller_is_prompted_then_the_call_ends_after_the_goodbye():
    limits = CallLimits(silence_timeout_secs=1.0)
    async with phone_call(pipeline=bot(limits=limits), replies=say_as_asked()) as (
        emulator,
        runner,
        caller,
    ):
        await greeted(caller)
        await caller.wait_ended(timeout=20)
        session = emulator.live_sessions[0]
        said = [r.reply.text for r in session.responses if r.reply is not None]
        assert said == [GREETING, limits.silence_prompt, limits.silence_goodbye]
        goodbye = session.responses[-1]
        assert speech(bytes(caller.heard)).endswith(speech(goodbye.audio))
        await caller.wait_until(lambda: runner.finished, timeout=10)
        assert runner.finished[0].end_reason == "silence timeout"
