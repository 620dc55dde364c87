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
- a final function result asks the model to answer it (no context aggregators);
- a response that fails (``response.done`` status ``failed``) is asked for again
  once when the cause may pass (a rate limit, a server error), and falls back
  when it cannot (no quota) or fails again; an ``incomplete`` one is logged and
  the call goes on.
"""

import asyncio
import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import Frame, FunctionCallResultFrame, LLMFullResponseStartFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.realtime import events

from pipecat_realtime_twilio.agent.events import TOOL_FRAMES
from pipecat_realtime_twilio.agent.ledger import UNRECOGNISED_SPEECH, TranscriptEntry
from pipecat_realtime_twilio.agent.phone_audio import PhoneAudio
from pipecat_realtime_twilio.agent.session_keeper import FATAL_ERROR_CODES
from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.failures import Failure, Stage

_SPEECH_STARTS_KEPT = 16
"""Caller turns whose start is kept while their transcription is awaited."""

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
        self._greeting_done = False  # the greeting's response completed
        self._call_started = False
        self._last_instructions: str | None = None  # of the response asked for last
        self._failed_in_a_row = 0
        self.transcription_failures = 0
        self._queued_instructions: list[str | None] = []
        self._response_done = asyncio.Event()
        self.transcript: list[TranscriptEntry] = []
        self._speech_started_at: dict[str, float] = {}  # caller items not yet transcribed
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

    def _stage(self) -> Stage:
        if not self._audio_ready:
            return Stage.CONFIGURE
        return self._response_stage()

    def _response_stage(self) -> Stage:
        """``greet`` until the greeting's response completed, then ``respond``."""
        return Stage.GREET if self._greeting and not self._greeting_done else Stage.RESPOND

    async def _greet_early(self) -> None:
        if self._greeting and not self._greeted:
            self._greeted = True
            self._response_active = True
            self._response_done.clear()
            self._last_instructions = self._greeting_instructions()
            await self.send_client_event(self._response_event(self._last_instructions))

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
        self._last_instructions = instructions
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        await self.send_client_event(self._response_event(instructions))
        self._expect_first_byte(self._response_stage())

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
        self._response_began()
        await super()._handle_evt_response_created(evt)
        self._response_done.clear()
        self._ledger.response_started(evt.response.id)
        self._prune_heard()

    async def _handle_evt_response_done(self, evt):
        self._first_byte_came()
        await super()._handle_evt_response_done(evt)
        if evt.response.usage is not None:
            self.usage.add_response_usage(evt.response.usage.model_dump())
        entry = self._ledger.response_done(evt.response.id)
        if entry is not None:
            await self._add_transcript(entry)
        if evt.response.status == "failed":
            if await self._response_failed(evt.response):
                return
        else:
            self._failed_in_a_row = 0
            if evt.response.status == "completed":
                self._greeting_done = self._greeting_done or self._greeted
            elif evt.response.status == "incomplete":
                details = evt.response.status_details
                reason = details.get("reason") if isinstance(details, dict) else details
                logger.warning(
                    f"{self} response {evt.response.id} incomplete ({reason}); the call goes on"
                )
        self._last_instructions = None
        if self._queued_instructions and not self._response_active:
            await self._respond(self._queued_instructions.pop(0))
        if not self._response_active:
            self._response_done.set()

    async def _response_failed(self, response) -> bool:
        """A response failed: ask again once if the cause may pass, else fall back.

        Returns:
            True if the call is falling back (nothing more to do for this response).
        """
        details = response.status_details
        error = details.get("error") if isinstance(details, dict) else None
        if not isinstance(error, dict):
            error = {}
        code = str(error.get("code") or error.get("type") or "failed")
        self._failed_in_a_row += 1
        stage = self._response_stage()
        if code in FATAL_ERROR_CODES or self._failed_in_a_row > 1:
            await self._fatal(Failure(stage, code, str(error.get("message") or "")))
            return True
        logger.warning(f"{self} response {response.id} failed ({code}); asking again once")
        self._queued_instructions.insert(0, self._last_instructions)
        return False

    async def handle_evt_input_audio_transcription_failed(self, evt) -> None:
        """The caller's words could not be transcribed: keep the turn, marked; the call goes on.

        The transcript gets the caller's turn as :data:`UNRECOGNISED_SPEECH` with
        ``unrecognised`` set, so the record shows the caller spoke there.

        Args:
            evt: The ``conversation.item.input_audio_transcription.failed`` event.
        """
        self.transcription_failures += 1
        error = evt.error
        logger.warning(
            f"{self} the caller's turn {evt.item_id} could not be transcribed "
            f"({error.code or error.type}: {error.message}); the model heard the audio itself"
        )
        entry = TranscriptEntry(
            role="caller",
            text=UNRECOGNISED_SPEECH,
            unrecognised=True,
            started_at=self._speech_started_at.pop(evt.item_id, None),
        )
        await self._add_transcript(entry)

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
        started_at = self._speech_started_at.pop(evt.item_id, None)
        if text:
            entry = TranscriptEntry(role="caller", text=text, started_at=started_at)
            await self._add_transcript(entry)

    def _caller_began(self, item_id: str | None) -> None:
        """The caller's turn ``item_id`` began now (speech detected): its entry's start."""
        if item_id:
            if len(self._speech_started_at) >= _SPEECH_STARTS_KEPT:  # never transcribed
                self._speech_started_at.pop(next(iter(self._speech_started_at)))
            self._speech_started_at[item_id] = time.time()

    async def _add_transcript(self, entry: TranscriptEntry) -> None:
        self.transcript.append(entry)
        await self._call_event_handler("on_transcript", entry)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        """Push a frame; a final function call result also asks the model to answer it.

        Function-call frames going downstream are noted in :attr:`call_events` (the
        tool calls of the call record).

        Args:
            frame: The frame to push.
            direction: The direction of frame pushing.
        """
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, TOOL_FRAMES):
            self.call_events.tool_frame(frame)
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
