"""What the caller hears: marks, barge-in at heard ms, pacing, heard-on-the-phone events."""

import asyncio
import random

import pytest
from conftest import phone_call

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.phone.output import CHUNK_MS, MAX_LEAD_MS
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

INSTRUCTIONS = "You are a test bot."


def played_before(caller, when: float) -> int:
    """Bytes the simulated phone had played by loop time ``when``."""
    return sum(played for at, played, _ in caller.playback if at <= when)


@pytest.mark.parametrize("send_rate", [1.0, 0], ids=["while-generating", "after-generated"])
async def test_barge_in_clears_at_once_and_truncates_at_what_was_heard(send_rate):
    seed = random.randrange(1_000_000)
    cut_after_ms = random.Random(seed).uniform(800, 4000)
    agents = []
    turns = {}

    def pipeline(call):
        agent = RealtimeAgent(instructions=INSTRUCTIONS)
        agents.append(agent)
        original = agent._handle_evt_speech_started

        async def speech_started(evt):
            # A callback queued now runs only once the current loop turn yields.
            turn = {"over": False}
            asyncio.get_running_loop().call_soon(turn.update, {"over": True})
            turns["current"] = turn
            await original(evt)

        agent._handle_evt_speech_started = speech_started
        output = call.output()
        client_send = output._client.send

        async def send(data):
            if '"event":"clear"' in data:
                turns.setdefault("clears", []).append(turns["current"]["over"])
                turns["clear_sent_at"] = asyncio.get_running_loop().time()
            await client_send(data)

        output._client.send = send
        return [call.input(), agent, output]

    long_answer = Reply(text="A long answer. " * 20, duration_ms=8000)
    async with phone_call(pipeline=pipeline, replies=[long_answer], send_rate=send_rate) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.say(tone(600) + silence(700))
        await caller.wait_heard(cut_after_ms, timeout=10)
        await caller.say(tone(800) + silence(800))
        await caller.wait_until(lambda: caller.clears, timeout=5, message="a clear")
        await caller.wait_quiet(after=len(caller.heard), quiet_ms=1500, timeout=10)

        session = emulator.sessions[0]
        first, second = session.responses[0], session.responses[1]
        # In real time the model is still talking when the caller cuts in.
        assert first.status == ("cancelled" if send_rate == 1.0 else "completed"), f"seed {seed}"
        # The clear went out in the same event-loop turn as speech_started was handled.
        assert turns["clears"] == [False], f"seed {seed}"
        assert len(caller.clears) == 1

        # The truncation matches what the phone had played, within a mark interval. (The
        # moment of reference is when the clear left the server: on this loopback, delivery
        # to the simulated phone alone sometimes takes 20 ms, which is not the bot's doing.)
        [truncation] = session.truncations
        assert truncation.accepted and truncation.item_id == first.item_id
        played_ms = played_before(caller, turns["clear_sent_at"]) / BYTES_PER_MS
        assert abs(truncation.audio_end_ms - played_ms) <= CHUNK_MS, (seed, truncation, played_ms)
        assert truncation.audio_end_ms <= played_before(caller, caller.clears[0]) / BYTES_PER_MS
        assert truncation.audio_end_ms <= first.audio_ms

        # Nothing of the cancelled response played after the clear: what was heard is
        # its beginning, then the answer to the barge-in, byte for byte.
        cut = played_before(caller, caller.clears[0])
        assert bytes(caller.heard[:cut]) == bytes(first.audio[:cut])
        assert bytes(caller.heard[cut:]) == bytes(second.audio), f"seed {seed}"
        assert emulator.validation_errors == [] and emulator.server_event_errors == []

        # The model's memory and the transcript match the caller's ears.
        agent = agents[0]
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=5)
        bot_lines = [e for e in agent.transcript if e.role == "bot"]
        assert bot_lines[0].interrupted
        assert len(bot_lines[0].text) < len(long_answer.text)


async def test_a_long_response_plays_without_underruns_and_with_a_bounded_lead():
    heard_events = []

    def pipeline(call):
        output = call.output()

        @output.event_handler("on_bot_started_speaking")
        async def started(output):
            heard_events.append(("started", asyncio.get_running_loop().time()))

        @output.event_handler("on_bot_stopped_speaking")
        async def stopped(output, interrupted):
            heard_events.append(("stopped", asyncio.get_running_loop().time(), interrupted))

        return [call.input(), RealtimeAgent(instructions=INSTRUCTIONS, greeting="Hi."), output]

    speech = Reply(text="Twenty seconds of talk. " * 10, duration_ms=20000)
    async with phone_call(pipeline=pipeline, replies=[speech]) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=1000, timeout=40)
        response = emulator.sessions[0].responses[0]

        assert bytes(caller.heard) == bytes(response.audio)
        assert len(caller.heard) == 20000 * BYTES_PER_MS
        assert caller.gaps() == []
        assert max(ms for _, ms in caller.lead) <= MAX_LEAD_MS
        # Enough lead that the phone never ran dry, yet Twilio never held it all.
        assert max(ms for _, ms in caller.lead) >= MAX_LEAD_MS - 2 * CHUNK_MS
        # Every chunk is followed by a mark, echoed as the phone played it.
        assert len(caller.events("mark")) == len(caller.events("media")) + 1  # + start mark
        assert len(caller.marks_echoed) == len(caller.marks_received)

        # Bot speaking as heard: started when playback began, stopped after the last byte.
        first_played = caller.play_time_of(0)
        last_played = caller.play_time_of(len(caller.heard) - 1)
        assert [e[0] for e in heard_events] == ["started", "stopped"]
        assert heard_events[0][1] <= first_played + 0.05
        assert heard_events[1][1] >= last_played and heard_events[1][2] is False
