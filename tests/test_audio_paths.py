"""Audio between the agent and its neighbours: the short cuts, and the pipeline when needed."""

import os

import pytest
from conftest import phone_call
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.audio import BYTES_PER_MS, pcm16_to_ulaw
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.sounds import silence

pytestmark = pytest.mark.call


class Tap(FrameProcessor):
    """Keeps the audio of the frames of one type that pass it."""

    def __init__(self, kind: type):
        super().__init__()
        self.kind = kind
        self.audio = bytearray()

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, self.kind):
            self.audio += frame.audio
        await self.push_frame(frame, direction)


def _random_ulaw(ms: int) -> bytes:
    return os.urandom(ms * BYTES_PER_MS)


async def test_processors_between_the_agent_and_the_phone_get_frames_and_audio_stays_exact():
    greeting = _random_ulaw(1000)
    spoken = _random_ulaw(1200)
    taps = {}

    def bot(call):
        taps["in"] = Tap(InputAudioRawFrame)
        taps["out"] = Tap(OutputAudioRawFrame)
        agent = RealtimeAgent(instructions="Answer.", greeting="Hello.")
        return [call.input(), taps["in"], agent, taps["out"], call.output()]

    async with phone_call(pipeline=bot, replies=[Reply(audio=greeting)]) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.wait_quiet()
        assert runner.active[caller.call_sid].serializer.caller_audio is None  # no short cut
        await caller.say(spoken + silence(600))
        await caller.wait_until(lambda: spoken in bytes(emulator.sessions[0].input_audio))
        assert bytes(caller.heard[: len(greeting)]) == greeting
        # The processors saw the audio as frames: the caller's, and the bot's.
        assert spoken in pcm16_to_ulaw(bytes(taps["in"].audio))
        assert pcm16_to_ulaw(bytes(taps["out"].audio)).startswith(greeting)


async def test_caller_audio_goes_straight_to_an_agent_right_after_the_input():
    spoken = _random_ulaw(1200)
    async with phone_call() as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet()
        call = runner.active[caller.call_sid]
        assert call.serializer.caller_audio == call.agent._append_caller_audio
        await caller.say(spoken + silence(600))
        await caller.wait_until(lambda: spoken in bytes(emulator.sessions[0].input_audio))


async def test_the_agents_realtime_socket_offers_no_compression():
    async with phone_call() as (emulator, _, caller):
        await caller.call()
        session = await emulator.wait_for_session(0)
        offered = {k.lower(): v for k, v in session.headers.items()}
        assert "sec-websocket-extensions" not in offered  # no permessage-deflate
