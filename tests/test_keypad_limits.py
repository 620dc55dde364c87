"""Keypad limits: bounded groups, and keypad input that cannot buy a response per key.

The unit tests drive :class:`Keypad` with a stand-in agent and a hand-turned clock; the
call tests (marked ``call``) press keys over real sockets (runner, emulator, caller) and
count the ``response.create`` events the emulator received.
"""

import asyncio
import contextlib
import math

import pytest
from conftest import phone_call
from loguru import logger

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.keypad import (
    KEYPAD_MAX_DIGITS,
    KEYPAD_RESPONSE_INTERVAL_SECS,
    Keypad,
)
from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.model import last_keypad_input, words_to_say
from pipecat_realtime_twilio.testing.sounds import silence, tone

# --- the keypad alone ---------------------------------------------------------------------------


class StandInAgent:
    """What the keypad uses of the agent: its state, and a task manager."""

    def __init__(self):
        self.responding = False
        self.phone_idle = True
        self.caller_speaking = False

    def create_task(self, coroutine, name=None):
        return asyncio.get_running_loop().create_task(coroutine, name=name)

    async def cancel_task(self, task, timeout=None):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Harness:
    """A keypad on a stand-in agent and a clock that moves only when told."""

    def __init__(self, **options):
        self.agent = StandInAgent()
        self.now = 0.0
        self.sent: list[str] = []
        self.asked = 0
        options.setdefault("timeout_secs", 60.0)  # groups end by '#' or size, not by time
        self.keypad = Keypad(self.agent, self.send, self.respond, clock=lambda: self.now, **options)

    async def send(self, keys: str) -> None:
        self.sent.append(keys)

    async def respond(self) -> None:
        self.asked += 1

    async def press(self, keys: str) -> None:
        for key in keys:
            await self.keypad.press(key)


async def until(predicate, timeout: float = 5.0) -> None:
    """Wait (in real time, the keypad polls) until ``predicate()``; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "the keypad did not get there"
        await asyncio.sleep(0.01)


async def a_few_polls() -> None:
    """Give a waiting keypad response several chances to start (it must not)."""
    await asyncio.sleep(0.25)


async def test_a_full_group_goes_at_once_and_no_key_is_lost():
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m), level="WARNING")
    try:
        pad = Harness(max_digits=4)
        await pad.press("1234567890")
        assert pad.sent == ["1234", "5678"]  # "90" waits for more keys
        await pad.press("#")
        assert pad.sent == ["1234", "5678", "90#"]
        await pad.press("1234" * 10)
        await pad.keypad.stop()
    finally:
        logger.remove(sink)
    assert all(len(group) <= 4 for group in pad.sent)
    assert "".join(pad.sent) == "1234567890#" + "1234" * 10
    assert pad.keypad.groups == len(pad.sent) == 13
    assert len(warnings) == 1  # once per call, however many groups fill up
    assert "4 keys" in warnings[0]


async def test_a_hash_that_fills_a_group_ends_it_once():
    pad = Harness(max_digits=3)
    await pad.press("12#3#")
    assert pad.sent == ["12#", "3#"]


async def test_keys_within_the_interval_share_one_later_response():
    pad = Harness(response_interval_secs=2.0)
    await pad.press("#")
    assert (pad.asked, pad.keypad.deferred) == (1, 0)  # the first answer starts at once
    await pad.press("####")
    await a_few_polls()
    assert pad.sent == ["#"] * 5  # every key reached the model
    assert pad.asked == 1 and pad.keypad.deferred == 4
    pad.now = 2.0
    await until(lambda: pad.asked == 2)  # one response for the four, once the interval passed
    await a_few_polls()
    assert pad.asked == 2 and pad.keypad.responses == 2
    pad.now = 3.0
    await pad.press("7#")  # within 2 s of the last keypad response
    await a_few_polls()
    assert pad.asked == 2 and pad.keypad.deferred == 5
    pad.now = 4.0
    await until(lambda: pad.asked == 3)
    pad.now = 6.5
    await pad.press("8#")  # the interval has passed: at once
    assert pad.asked == 4 and pad.keypad.deferred == 5
    assert pad.keypad.groups == 7
    await pad.keypad.stop()


async def test_no_keypad_response_starts_over_the_bot():
    pad = Harness(response_interval_secs=2.0)
    pad.agent.responding = True  # a response is being generated
    await pad.press("1#")
    await a_few_polls()
    assert pad.asked == 0 and pad.keypad.deferred == 0  # it waits for the bot, not the limit
    pad.agent.responding = False
    pad.agent.phone_idle = False  # generated, but the caller has not heard it all
    await a_few_polls()
    assert pad.asked == 0
    pad.agent.phone_idle = True
    await until(lambda: pad.asked == 1)
    await pad.press("2#")  # a group while the interval runs waits for it
    pad.now = 5.0
    pad.agent.caller_speaking = True  # ... and for the caller to stop talking
    await a_few_polls()
    assert pad.asked == 1
    pad.agent.caller_speaking = False
    await until(lambda: pad.asked == 2)
    assert pad.keypad.responses == 2 and pad.keypad.deferred == 1


async def test_the_callers_turn_answers_the_keys_instead():
    pad = Harness(response_interval_secs=2.0)
    await pad.press("1#2#")
    assert pad.asked == 1 and pad.keypad.deferred == 1
    await pad.keypad.caller_spoke()
    pad.now = 10.0
    await a_few_polls()
    assert pad.asked == 1  # the held response was dropped
    await pad.press("3#")  # later keys are answered as usual
    assert pad.asked == 2


async def test_stop_ends_the_wait():
    pad = Harness(response_interval_secs=2.0)
    await pad.press("1#2#")
    await pad.keypad.stop()
    pad.now = 10.0
    await a_few_polls()
    assert pad.asked == 1


@pytest.mark.parametrize(
    "options",
    [{"max_digits": 0}, {"response_interval_secs": -1.0}, {"timeout_secs": -0.5}],
)
def test_limits_out_of_range_are_refused(options):
    with pytest.raises(ValueError):
        Harness(**options)


def test_the_agent_takes_the_limits_and_reports_counters():
    agent = RealtimeAgent(
        instructions="x", api_key="sk-test", keypad_max_digits=8, keypad_response_interval_secs=0.5
    )
    assert (agent.keypad_groups, agent.keypad_responses, agent.keypad_deferred) == (0, 0, 0)
    with pytest.raises(ValueError):
        RealtimeAgent(instructions="x", api_key="sk-test", keypad_max_digits=0)


# --- over real sockets --------------------------------------------------------------------------


def keypad_bot(agents: list, **options):
    """A bot builder: a greeting agent whose instances land in ``agents``."""

    def pipeline(call):
        agent = RealtimeAgent(instructions="A keypad menu.", greeting="Press a key.", **options)
        agents.append(agent)
        return [call.input(), agent, call.output()]

    return pipeline


def keypad_groups(session) -> list[str]:
    """The keys of every keypad message the agent added to the conversation, in order."""
    groups = []
    for event in session.events_of_type("conversation.item.create"):
        for part in event["item"].get("content") or []:
            text = part.get("text") or ""
            if part.get("type") == "input_text" and text.startswith(KEYPAD_INPUT):
                groups.append(text[len(KEYPAD_INPUT) :])
    return groups


def keypad_items_received_at(session) -> list[float]:
    return [
        event.received_at
        for event in session.events_of_type("conversation.item.create")
        if any(
            (part.get("text") or "").startswith(KEYPAD_INPUT)
            for part in event["item"].get("content") or []
        )
    ]


def creates_after_greeting(session) -> list:
    """The ``response.create`` events received after the greeting's."""
    return session.events_of_type("response.create")[1:]


def answer_keys(session, trigger):
    """The scripted model: the greeting as asked, then what the keypad messages add up to."""
    words = words_to_say(session, trigger)
    if words:
        return Reply(text=words)
    return Reply(text=f"{len(keypad_groups(session))} groups, last {last_keypad_input(session)}")


async def ready(caller, agents) -> int:
    """Dial, hear the greeting, and wait until the bot is quiet; the bytes heard so far."""
    await caller.call()
    await caller.wait_quiet(quiet_ms=500, timeout=10)
    await caller.wait_until(lambda: agents and agents[0].phone_idle, timeout=5)
    await caller.wait_until(lambda: not agents[0].responding, timeout=5)
    return len(caller.heard)


def answered(session, text: str) -> bool:
    return any(r.transcript == text and r.status == "completed" for r in session.responses)


@pytest.mark.call
async def test_forty_hashes_start_a_bounded_number_of_responses():
    agents: list[RealtimeAgent] = []
    async with phone_call(pipeline=keypad_bot(agents), replies=answer_keys) as (
        emulator,
        runner,
        caller,
    ):
        await ready(caller, agents)
        await caller.press("#" * 40, gap_ms=150)  # ~6 s of a stranger leaning on '#'
        session = emulator.sessions[0]
        final = f"40 groups, last {'#'}"
        await caller.wait_until(lambda: answered(session, final), timeout=20, message=final)

        agent = agents[0]
        assert keypad_groups(session) == ["#"] * 40  # every key reached the model
        times = keypad_items_received_at(session)
        span = times[-1] - times[0]
        interval = KEYPAD_RESPONSE_INTERVAL_SECS
        # Keypad responses start >= interval apart, each after a group that came after the
        # previous one: at most span / interval + 2 (0.5 s for the hops to the emulator).
        bound = math.floor((span + 0.5) / interval) + 2
        creates = creates_after_greeting(session)
        assert len(creates) <= bound, (len(creates), span)
        assert len(creates) == agent.keypad_responses  # nothing else asked for one
        assert agent.keypad_groups == 40
        assert agent.keypad_deferred >= 40 - agent.keypad_responses
        codes = [e["error"].get("code") for e in session.errors_sent]
        assert "conversation_already_has_active_response" not in codes
        assert emulator.validation_errors == []


@pytest.mark.call
async def test_a_long_digit_run_reaches_the_model_in_bounded_groups():
    agents: list[RealtimeAgent] = []
    digits = "0123456789" * 300
    bot = keypad_bot(agents, dtmf_timeout_secs=0.3)
    async with phone_call(pipeline=bot, replies=answer_keys) as (emulator, runner, caller):
        await ready(caller, agents)
        await caller.press(digits, gap_ms=0)
        session = emulator.sessions[0]
        await caller.wait_until(
            lambda: "".join(keypad_groups(session)) == digits, timeout=20, message="every key"
        )
        groups = keypad_groups(session)
        assert all(len(group) == KEYPAD_MAX_DIGITS for group in groups[:-1])
        assert 0 < len(groups[-1]) <= KEYPAD_MAX_DIGITS
        assert len(groups) == math.ceil(len(digits) / KEYPAD_MAX_DIGITS)
        final = f"{len(groups)} groups, last {groups[-1]}"
        await caller.wait_until(lambda: answered(session, final), timeout=20, message=final)
        times = keypad_items_received_at(session)
        bound = math.floor((times[-1] - times[0] + 0.5) / KEYPAD_RESPONSE_INTERVAL_SECS) + 2
        creates = creates_after_greeting(session)
        assert len(creates) <= bound, (len(creates), times[-1] - times[0])
        assert len(creates) == agents[0].keypad_responses
        assert emulator.validation_errors == []


@pytest.mark.call
async def test_a_normal_entry_gets_one_prompt_answer():
    agents: list[RealtimeAgent] = []
    async with phone_call(pipeline=keypad_bot(agents), replies=answer_keys) as (
        emulator,
        runner,
        caller,
    ):
        heard = await ready(caller, agents)
        await caller.press("1234#")
        await caller.wait_quiet(after=heard, quiet_ms=500, timeout=10)
        session = emulator.sessions[0]
        assert keypad_groups(session) == ["1234#"]
        assert len(creates_after_greeting(session)) == 1
        answer = session.responses[-1]
        assert answer.transcript == "1 groups, last 1234#"
        assert bytes(caller.heard[heard:]) == bytes(answer.audio)
        agent = agents[0]
        assert (agent.keypad_groups, agent.keypad_responses, agent.keypad_deferred) == (1, 1, 0)


@pytest.mark.call
async def test_keys_pressed_meanwhile_are_answered_once_with_the_latest():
    agents: list[RealtimeAgent] = []
    bot = keypad_bot(agents, keypad_response_interval_secs=3.0)
    async with phone_call(pipeline=bot, replies=answer_keys) as (emulator, runner, caller):
        await ready(caller, agents)
        await caller.press("1#2#3#")
        session = emulator.sessions[0]
        final = "3 groups, last 3#"
        await caller.wait_until(lambda: answered(session, final), timeout=15, message=final)
        await caller.wait_quiet(quiet_ms=500, timeout=10)
        assert keypad_groups(session) == ["1#", "2#", "3#"]
        assert len(creates_after_greeting(session)) == 2  # "1#" at once, then one for both
        assert session.responses[-1].transcript == final
        agent = agents[0]
        assert (agent.keypad_responses, agent.keypad_deferred) == (2, 2)


@pytest.mark.call
async def test_the_callers_turn_answers_keys_held_back():
    agents: list[RealtimeAgent] = []
    bot = keypad_bot(agents, keypad_response_interval_secs=3.0)
    async with phone_call(pipeline=bot, replies=answer_keys) as (emulator, runner, caller):
        await ready(caller, agents)
        loop = asyncio.get_running_loop()
        pressed_at = loop.time()
        await caller.press("1#2#", gap_ms=50)
        await caller.say(tone(600) + silence(800))
        session = emulator.sessions[0]
        await caller.wait_until(
            lambda: any(r.trigger == "vad" and r.status == "completed" for r in session.responses),
            timeout=10,
            message="the answer to the caller's turn",
        )
        await caller.wait_quiet(quiet_ms=500, timeout=10)
        # Past the interval: the held-back response must not come.
        await asyncio.sleep(max(0.0, pressed_at + 3.5 - loop.time()))
        assert keypad_groups(session) == ["1#", "2#"]
        assert [r.trigger for r in session.responses] == ["response.create"] * 2 + ["vad"]
        assert session.responses[-1].transcript == "2 groups, last 2#"
        assert agents[0].keypad_responses == 1
