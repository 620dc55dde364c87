#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What the bot says: responses one at a time, the greeting, the transcript of both sides.

:class:`Conversation` sits between the audio path
(:class:`~pipecat_realtime_twilio.agent.phone_audio.PhoneAudio`) and
:class:`~pipecat_realtime_twilio.agent.realtime.RealtimeAgent`:

- responses are asked for one at a time: one asked for while another runs (or
  before the session is configured) waits its turn, with its own instructions;
- the greeting is asked for once the call and the session are both up, or at
  once on a pre-warmed session;
- the transcript keeps both sides, each bot entry cut to what the caller heard
  (from the :class:`~pipecat_realtime_twilio.agent.ledger.HeardLedger`);
- a final function result asks the model to answer it (no context aggregators).
"""

import asyncio
from typing import Any

from loguru import logger
from pipecat.frames.frames import Frame, FunctionCallResultFrame, LLMFullResponseStartFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.realtime import events

from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
from pipecat_realtime_twilio.agent.phone_audio import PhoneAudio
from pipecat_realtime_twilio.agent.usage import Usage

SAY_INSTRUCTION = "Now say exactly this to the caller, word for word, and nothing else: "
"""Appended to the instructions, with the words, for a response that says given words."""


class Conversation(PhoneAudio):
    """Responses one at a time, the greeting, and the transcript of a call."""

    def __init__(self, *, instructions: str, greeting: str | None, **kwargs):
        """Initialize the conversation.

        Args:
            instructions: The system prompt.
            greeting: What the bot says first; None: it waits for the caller.
            **kwargs: :class:`PhoneAudio` arguments.
        """
        super().__init__(**kwargs)
        self._instructions = instructions
        self._greeting = greeting
        self._greeted = False
        self._call_started = False
        self._queued_instructions: list[str | None] = []
        self._response_done = asyncio.Event()
        self.transcript: list[TranscriptEntry] = []
        self.usage = Usage()
        # No context aggregators: the agent keeps its own (empty) context, so
        # Pipecat's function calling and response bookkeeping have one.
        self._context = LLMContext()
        self._llm_needs_conversation_setup = False
        self._register_event_handler("on_transcript")

    #
    # responses, one at a time
    #

    @property
    def responding(self) -> bool:
        """Whether a response is in progress or waiting to start."""
        return self._response_active or bool(self._queued_instructions)

    async def _greet_early(self) -> None:
        if self._greeting and not self._greeted:
            self._greeted = True
            self._response_active = True
            self._response_done.clear()
            await self.send_client_event(self._response_event(self._greeting_instructions()))

    def _forget_responses(self) -> None:
        self._ledger.forget_session()  # those items are gone with the old session
        self._response_done.set()

    async def _handle_evt_session_updated(self, evt):
        await super()._handle_evt_session_updated(evt)
        if self._queued_instructions and not self._response_active:
            await self._respond(self._queued_instructions.pop(0))
        await self._maybe_greet()

    async def _maybe_greet(self) -> None:
        if self._greeted or not self._greeting:
            return
        if not (self._call_started and self._api_session_ready):
            return
        self._greeted = True
        logger.debug(f"{self} greeting the caller")
        await self._respond(self._greeting_instructions())

    def _greeting_instructions(self) -> str:
        return self._say_instructions(self._greeting or "", "The call has just been answered.")

    def _say_instructions(self, text: str, context: str | None) -> str:
        prefix = f"{context} " if context else ""
        return f"{self._instructions}\n\n{prefix}{SAY_INSTRUCTION}{text}"

    async def say(self, text: str, *, context: str | None = None) -> None:
        """Make the bot say ``text`` (as soon as no other response is in progress).

        Args:
            text: The words to say.
            context: A line of situation for the model, before the words.
        """
        await self._respond(self._say_instructions(text, context))

    async def _respond(self, instructions: str | None = None) -> None:
        """Ask for a response now, or when the one in progress is done.

        Args:
            instructions: Instructions for this response only; None keeps the session's.
        """
        if self._response_active or not self._api_session_ready:
            self._queued_instructions.append(instructions)
            return
        self._response_active = True
        self._response_done.clear()
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        await self.send_client_event(self._response_event(instructions))

    @staticmethod
    def _response_event(instructions: str | None) -> events.ResponseCreateEvent:
        return events.ResponseCreateEvent(
            response=events.ResponseProperties(
                output_modalities=["audio"], instructions=instructions
            )
        )

    async def _create_response(self):
        # Pipecat's path (e.g. after a function result) joins the same queue.
        await self._respond()

    async def _handle_evt_response_created(self, evt):
        await super()._handle_evt_response_created(evt)
        self._response_done.clear()
        self._ledger.response_started(evt.response.id)
        self._prune_heard()

    async def _handle_evt_response_done(self, evt):
        await super()._handle_evt_response_done(evt)
        if evt.response.usage is not None:
            self.usage.add_response_usage(evt.response.usage.model_dump())
        entry = self._ledger.response_done(evt.response.id)
        if entry is not None:
            await self._add_transcript(entry)
        if self._queued_instructions and not self._response_active:
            await self._respond(self._queued_instructions.pop(0))
        if not self._response_active:
            self._response_done.set()

    async def wait_heard(self, timeout: float = 60.0) -> bool:
        """Wait until no response is in progress and the caller heard all the bot's audio.

        Args:
            timeout: Most seconds to wait.

        Returns:
            Whether that happened in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.responding:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._response_done.wait(), remaining)
            except TimeoutError:
                return False
        if self._phone is None:
            return True
        pending = self._ledger.unconfirmed
        return await self._phone.wait_played(pending, max(0.0, deadline - loop.time()))

    #
    # the transcript, and function results
    #

    async def _handle_evt_audio_transcript_delta(self, evt):
        await super()._handle_evt_audio_transcript_delta(evt)
        if evt.delta:
            self._ledger.text(evt.response_id, evt.delta)

    async def handle_evt_input_audio_transcription_completed(self, evt):
        """Record the caller's words, then let Pipecat push them as a transcription.

        Args:
            evt: The transcription completed event.
        """
        await super().handle_evt_input_audio_transcription_completed(evt)
        text = (evt.transcript or "").strip()
        if text:
            await self._add_transcript(TranscriptEntry(role="caller", text=text))

    async def _add_transcript(self, entry: TranscriptEntry) -> None:
        self.transcript.append(entry)
        await self._call_event_handler("on_transcript", entry)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        """Push a frame; a final function call result also asks the model to answer it.

        Args:
            frame: The frame to push.
            direction: The direction of frame pushing.
        """
        await super().push_frame(frame, direction)
        if (
            direction == FrameDirection.DOWNSTREAM
            and isinstance(frame, FunctionCallResultFrame)
            and _wants_answer(frame)
        ):
            await self._respond()


def _wants_answer(frame: FunctionCallResultFrame) -> bool:
    properties: Any = frame.properties
    if properties is None:
        return frame.run_llm is not False
    return properties.is_final and properties.run_llm is not False and frame.run_llm is not False
