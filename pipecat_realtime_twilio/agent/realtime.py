#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""RealtimeAgent: Pipecat's OpenAI Realtime service, tuned for an 8 kHz phone line."""

import asyncio
import base64
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    Frame,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    ProposedUserStartedSpeakingFrame,
    StartFrame,
    TTSStartedFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import CurrentAudioResponse, OpenAIRealtimeLLMService

from pipecat_realtime_twilio.agent.limits import CallLimits, LimitsWatcher
from pipecat_realtime_twilio.agent.session_keeper import (
    FALLBACK_LINE,
    SESSION_MAX_SECS,
    SessionKeeper,
)
from pipecat_realtime_twilio.agent.tools import RealtimeTool
from pipecat_realtime_twilio.audio import BYTES_PER_MS, SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16
from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.frames import RealtimeAudioFrame
from pipecat_realtime_twilio.runner.pricing import Usage
from pipecat_realtime_twilio.settings import (
    DEFAULT_REALTIME_URL,
    SettingsError,
    current_settings,
)

if TYPE_CHECKING:
    from pipecat_realtime_twilio.phone.call import CallSession
    from pipecat_realtime_twilio.phone.output import TwilioOutputTransport

DEFAULT_VOICE = "marin"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
_NO_KEY_NEEDED = "no-key-needed"

SAY_INSTRUCTION = "Now say exactly this to the caller, word for word, and nothing else: "
"""Appended to the instructions, with the words, for a response that says given words."""

KEYPAD_INPUT = "The caller pressed these keys on the phone keypad: "
"""How keypad digits reach the model, as a user message followed by the digits."""

TOOL_ERROR_MESSAGE = "Sorry, I couldn't do that just now."
"""What the bot says when a tool fails or times out."""

DTMF_TIMEOUT_SECS = 1.0
"""Keypad digits pressed within this long of each other reach the model together."""

_HEARD_EXTRA_SECS = 5.0
_ENTRIES_KEPT = 8


@dataclass
class TranscriptEntry:
    """One utterance of the call.

    Parameters:
        role: ``"caller"`` or ``"bot"``.
        text: What was said.
        at: Unix time the utterance was complete.
        interrupted: The caller cut the bot off; ``text`` is cut to about what was heard.
    """

    role: Literal["caller", "bot"]
    text: str
    at: float = field(default_factory=time.time)
    interrupted: bool = False


class RealtimeAgent(SessionKeeper, OpenAIRealtimeLLMService):
    """A speech-to-speech agent for phone calls, on the OpenAI Realtime API.

    It is Pipecat's ``OpenAIRealtimeLLMService`` set up for a phone line:

    - Audio stays 8 kHz μ-law end to end. The session asks for ``audio/pcmu``
      in both directions and the agent only converts between μ-law and the
      pipeline's 8 kHz PCM, which is exact, so nothing is resampled, delayed or
      lost at the end of an utterance.
    - The session configuration is sent as soon as the socket opens, before any
      caller audio, so no audio is ever read in the wrong format.
    - OpenAI's server VAD decides turns; no local turn model is loaded.
    - The bot speaks first: with a ``greeting`` it greets as soon as both the
      call and the session are up.
    - Barge-in acts on what the caller heard: when the caller starts speaking
      the phone is cleared at once, the model's item is truncated at the ms the
      caller actually heard (from Twilio's marks), and late audio of the
      cancelled response is dropped.
    - Keypad digits reach the model as conversation input (and the pipeline as
      ``InputDTMFFrame``).
    - Tools made with :func:`~pipecat_realtime_twilio.agent.tools.realtime_tool`, and the
      call-control tools ``end_call()`` and ``transfer_call(number)``, are
      registered by passing them in ``tools``; a failing tool becomes a spoken
      apology.
    - It keeps a transcript of both sides (:attr:`transcript`).

    The smallest bot is ``[call.input(), RealtimeAgent(instructions=...), call.output()]``;
    inside a :class:`~pipecat_realtime_twilio.phone.call.CallSession` pipeline the agent
    finds the call and its phone output by itself.

    Event handlers available (besides the service's own):

    - on_transcript(agent, entry: TranscriptEntry): an utterance of either side is complete.
    - on_keypad(agent, digits: str): keypad digits went to the model.
    """

    def __init__(
        self,
        *,
        instructions: str,
        greeting: str | None = None,
        voice: str = DEFAULT_VOICE,
        model: str | None = None,
        tools: list | ToolsSchema | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        turn_detection: events.TurnDetection | events.SemanticTurnDetection | None = None,
        transcribe_caller: bool = True,
        transcription_model: str = DEFAULT_TRANSCRIPTION_MODEL,
        speed: float | None = None,
        limits: CallLimits | None = None,
        tool_error_message: str = TOOL_ERROR_MESSAGE,
        dtmf_timeout_secs: float = DTMF_TIMEOUT_SECS,
        fallback_line: str = FALLBACK_LINE,
        fallback_number: str | None = None,
        session_max_secs: float = SESSION_MAX_SECS,
        **kwargs,
    ):
        """Initialize the agent.

        Args:
            instructions: The system prompt: who the bot is and how it talks.
            greeting: What the bot says when the call connects (it is told to
                greet with these words). None: the bot waits for the caller.
            voice: The Realtime voice, e.g. ``"marin"`` or ``"cedar"``.
            model: Realtime model; defaults to ``OPENAI_REALTIME_MODEL``.
            tools: Tools the model may call: :class:`RealtimeTool` objects (from
                ``@realtime_tool``, ``end_call()``, ``transfer_call(...)``), whose
                handlers are registered here, and/or Pipecat ``FunctionSchema``
                objects or a ``ToolsSchema`` (register those handlers with
                ``register_function``).
            api_key: OpenAI API key; defaults to ``OPENAI_API_KEY``.
            base_url: Realtime websocket URL; defaults to ``OPENAI_REALTIME_URL``.
            turn_detection: Server turn detection; defaults to server VAD.
            transcribe_caller: Whether to ask for a transcript of the caller.
            transcription_model: Model that transcribes the caller.
            speed: Speaking speed of the voice (0.25 to 1.5), default the model's.
            limits: Maximum call duration and silence timeout, if any.
            tool_error_message: What the bot says when a tool fails or times out.
            dtmf_timeout_secs: Keypad digits pressed within this long of each
                other go to the model together (``#`` sends at once).
            fallback_line: Said in Twilio's voice when the Realtime API is gone
                for good (invalid key, no quota, reconnects exhausted).
            fallback_number: If set, such a call is transferred there instead.
            session_max_secs: Move to a fresh session, at the next turn boundary,
                once the session is this old (the API's cap is 60 minutes).
            **kwargs: Further ``OpenAIRealtimeLLMService`` arguments.

        Raises:
            SettingsError: If no API key is given or configured for OpenAI's own URL.
        """
        settings = None
        if api_key is None or base_url is None or model is None:
            settings = current_settings()
        base_url = base_url or settings.openai_realtime_url
        model = model or settings.openai_realtime_model
        if api_key is None:
            if settings.openai_api_key is not None:
                api_key = settings.openai_api_key.get_secret_value()
            elif base_url.rstrip("/") == DEFAULT_REALTIME_URL:
                raise SettingsError("OPENAI_API_KEY is not set: the Realtime API needs a key")
            else:
                api_key = _NO_KEY_NEEDED  # a local emulator or a keyless gateway

        realtime_tools, tools_schema = _split_tools(tools)
        turn_detection = turn_detection or events.TurnDetection()
        audio_input = events.AudioInput(
            format=events.PCMUAudioFormat(),
            turn_detection=turn_detection,
            transcription=(
                events.InputAudioTranscription(model=transcription_model)
                if transcribe_caller
                else None
            ),
        )
        audio_output = events.AudioOutput(format=events.PCMUAudioFormat(), voice=voice, speed=speed)
        session = events.SessionProperties(
            output_modalities=["audio"],
            audio=events.AudioConfiguration(input=audio_input, output=audio_output),
            tools=tools_schema,
        )
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            settings=OpenAIRealtimeLLMService.Settings(
                model=model, system_instruction=instructions, session_properties=session
            ),
            **kwargs,
        )
        for tool in realtime_tools:
            self.register_function(tool.name, tool.handler)
        self._instructions = instructions
        self._greeting = greeting
        self._greeted = False
        self._call_started = False
        self._session_sent = False
        # The server cancels the response on speech unless told not to.
        self._barge_in_enabled = getattr(turn_detection, "interrupt_response", None) is not False
        # speech_stopped's audio_end_ms includes server VAD's trailing silence.
        self._vad_silence_ms = getattr(turn_detection, "silence_duration_ms", None) or 0
        self.tool_error_message = tool_error_message
        self.transcript: list[TranscriptEntry] = []
        # No context aggregators: the agent keeps its own (empty) context, so
        # Pipecat's function calling and response bookkeeping have one.
        self._context = LLMContext()
        self._llm_needs_conversation_setup = False

        self._call: CallSession | None = None
        self._phone: TwilioOutputTransport | None = None
        # Per assistant item with audio not yet known to be heard: [content_index, bytes].
        self._item_audio: dict[str, list[int]] = {}
        self._item_response: dict[str, str] = {}
        self._response_id: str | None = None
        self._dropped_responses: set[str] = set()
        self._response_text: dict[str, list[str]] = {}
        self._heard_fraction: dict[str, float] = {}
        self._bot_entries: OrderedDict[str, TranscriptEntry] = OrderedDict()
        self._queued_instructions: list[str | None] = []
        self._response_done = asyncio.Event()
        self.caller_speaking = False

        self.model = model
        self.usage = Usage()
        self.barge_ins = 0
        self.response_latencies_ms: list[float] = []
        self._appended_ms = 0.0
        self._appends: deque[tuple[float, float]] = deque(maxlen=500)  # (end ms, when)
        self._speech_ended_at: float | None = None

        self._init_session_keeper(
            fallback_line=fallback_line,
            fallback_number=fallback_number,
            session_max_secs=session_max_secs,
        )

        self._dtmf_timeout_secs = dtmf_timeout_secs
        self._digits: list[str] = []
        self._dtmf_task: asyncio.Task | None = None
        self._limits = LimitsWatcher(self, limits) if limits else None
        self._register_event_handler("on_transcript")
        self._register_event_handler("on_keypad")

    @property
    def call(self) -> "CallSession | None":
        """The phone call this agent talks on (None outside a ``CallSession`` pipeline)."""
        return self._call

    @property
    def responding(self) -> bool:
        """Whether a response is in progress or waiting to start."""
        return self._response_active or bool(self._queued_instructions)

    #
    # lifecycle
    #

    async def start(self, frame: StartFrame):
        """Start the agent; find the call; greet once the session is ready.

        Args:
            frame: The pipeline's start frame.
        """
        from pipecat_realtime_twilio.phone.call import CALL_METADATA_KEY

        self._call = frame.metadata.get(CALL_METADATA_KEY)
        self._phone = self._call.output() if self._call is not None else None
        if self._call is not None:
            self._call.agent = self
            self._phone.event_handler("on_bot_started_speaking")(self._on_heard_start)
            if self.previous is self._call.input():
                # Nothing between the caller and the agent could see the audio frames:
                # take Twilio's payloads as they are (base64 μ-law, the API's format),
                # with no decoding, frames or queues on the way.
                self._call.serializer.caller_audio = self._append_caller_audio
        # Pipecat connects at setup, before the phone is known; a pre-warmed session
        # is taken over only now, so its early audio takes the same path as the rest.
        if await self._take_prewarmed():
            if self._response_active:  # the greeting asked for while pre-warmed
                await self.push_frame(LLMFullResponseStartFrame())
        elif self._websocket is None:
            await self._connect()  # the pre-warm failed: connect as usual
        await super().start(frame)
        self._call_started = True
        if self._limits:
            self._limits.start()
        self._rotation_task = self.create_task(self._rotate_when_due(), "session-rotation")
        await self._maybe_greet()

    async def stop(self, frame):
        """Stop the agent and its timers.

        Args:
            frame: The end frame.
        """
        self._release_caller_audio()
        await self._stop_timers()
        await super().stop(frame)

    async def cancel(self, frame):
        """Cancel the agent and its timers.

        Args:
            frame: The cancel frame.
        """
        self._release_caller_audio()
        await self._stop_timers()
        await super().cancel(frame)

    def _release_caller_audio(self):
        if self._call is not None and self._call.serializer.caller_audio is not None:
            self._call.serializer.caller_audio = None

    async def _stop_timers(self):
        if self._rotation_task:
            await self.cancel_task(self._rotation_task)
            self._rotation_task = None
        if self._limits:
            await self._limits.stop()
        if self._dtmf_task:
            await self.cancel_task(self._dtmf_task)
            self._dtmf_task = None

    async def _connect(self):
        if self._prewarm_task is not None:
            return  # start() takes the pre-warmed session over, once it knows the phone
        if self._websocket is None:
            try:
                self._websocket = await self._open_socket()
            except Exception as e:
                await self.push_error(error_msg=f"Error connecting: {e}", exception=e)
                return
            self._receive_task = self.create_task(self._receive_task_handler())
        self._session_opened_at = time.monotonic()
        if self._websocket and not self._session_sent:
            # Configure the session before any caller audio is appended, so the
            # server never reads μ-law as its default 24 kHz PCM.
            self._session_sent = True
            await self._send_session_update()

    async def _disconnect(self):
        await super()._disconnect()
        self._session_sent = False

    def _forget_session(self) -> None:
        """Drop what belonged to the session that is gone (see :class:`SessionKeeper`)."""
        self._session_sent = False
        self._api_session_ready = False
        self._response_active = False
        self._response_id = None
        self._current_audio_response = None
        self._item_audio.clear()  # those items are gone with the old session
        self._item_response.clear()
        self._open_function_calls = set()
        self._response_done.set()

    async def _handle_evt_session_created(self, evt):
        if not self._session_sent:
            self._session_sent = True
            await self._send_session_update()

    async def _handle_evt_session_updated(self, evt):
        await super()._handle_evt_session_updated(evt)
        if self._queued_instructions and not self._response_active:
            await self._respond(self._queued_instructions.pop(0))
        await self._maybe_greet()

    async def _configure_prewarmed(self):
        """Configure a session opened before the call (``prewarm()``); ask for the greeting."""
        self._session_sent = True
        await self._send_session_update()
        if self._greeting and not self._greeted:
            self._greeted = True
            self._response_active = True
            self._response_done.clear()
            await self.send_client_event(self._response_event(self._greeting_instructions()))

    async def _maybe_greet(self):
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

    #
    # responses
    #

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
        self._response_id = evt.response.id
        self._response_text[evt.response.id] = []
        self._prune_heard_items()

    async def _handle_evt_response_done(self, evt):
        await super()._handle_evt_response_done(evt)
        if evt.response.usage is not None:
            self.usage.add_response_usage(evt.response.usage.model_dump())
        response_id = evt.response.id
        if self._response_id == response_id:
            self._response_id = None
        self._dropped_responses.discard(response_id)
        await self._add_bot_entry(response_id)
        if self._queued_instructions and not self._response_active:
            await self._respond(self._queued_instructions.pop(0))
        if not self._response_active:
            self._response_done.set()

    async def _on_heard_start(self, output):
        """The phone started playing the bot: close the response-latency sample, if any."""
        if self._speech_ended_at is not None:
            self.response_latencies_ms.append((time.monotonic() - self._speech_ended_at) * 1000)
            self._speech_ended_at = None

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
        pending = {item: size for item, (_, size) in self._item_audio.items()}
        return await self._phone.wait_played(pending, max(0.0, deadline - loop.time()))

    #
    # call control
    #

    async def end_call(self, goodbye: str | None = None, *, reason: str = "bot ended the call"):
        """End the call after the caller has heard everything (and ``goodbye``, if given).

        Args:
            goodbye: Words to say before hanging up.
            reason: Why the call ends, for logs and records.

        Raises:
            CallControlError: Outside a ``CallSession`` pipeline.
        """
        call = self._require_call()
        if goodbye:
            await self.say(goodbye)
        await self.wait_heard(timeout=_speech_timeout(goodbye))
        await call.end(reason)

    async def transfer_call(self, number: str, *, announcement: str | None = None):
        """Transfer the call to ``number`` once the caller has heard everything.

        Args:
            number: The phone number (E.164) or SIP URI.
            announcement: Words to say before transferring.

        Raises:
            CallControlError: Outside a ``CallSession`` pipeline, or when the
                call cannot be transferred.
        """
        call = self._require_call()
        if announcement:
            await self.say(announcement)
        await self.wait_heard(timeout=_speech_timeout(announcement))
        await call.transfer(number)

    async def interrupt(self) -> None:
        """Stop the bot now: clear the phone, truncate what was not heard, cancel the response."""
        await self._barge_in()
        if self._response_active:
            # response.done (cancelled) follows; what is queued waits for it.
            await self.send_client_event(events.ResponseCancelEvent())

    def _require_call(self) -> "CallSession":
        if self._call is None:
            raise CallControlError("call control needs the agent inside a CallSession pipeline")
        return self._call

    #
    # audio: μ-law both ways, no resampling
    #

    async def _send_user_audio(self, frame: InputAudioRawFrame):
        if frame.sample_rate == SAMPLE_RATE:
            ulaw = pcm16_to_ulaw(frame.audio)
        else:
            pcm = await self._resampler.resample(frame.audio, frame.sample_rate, SAMPLE_RATE)
            ulaw = pcm16_to_ulaw(pcm)
        if ulaw:
            await self._append_caller_audio(base64.b64encode(ulaw).decode("ascii"), len(ulaw))

    async def _append_caller_audio(self, payload: str, size: int) -> None:
        """Send caller audio: ``payload`` is ``size`` bytes of μ-law, base64-encoded."""
        if self._audio_input_paused:
            return
        if self._reconnecting:
            self._hold_audio(payload, size)
            return
        # The hottest client event: a plain dict skips building a pydantic model
        # for every 20 ms packet.
        await self._ws_send({"type": "input_audio_buffer.append", "audio": payload})
        self._appended_ms += size / BYTES_PER_MS
        self._appends.append((self._appended_ms, time.monotonic()))

    async def _handle_evt_audio_delta(self, evt):
        if evt.response_id in self._dropped_responses:
            return  # late audio of a response the caller cut off
        await self.stop_ttfb_metrics()
        current = self._current_audio_response
        if current is None:
            current = CurrentAudioResponse(
                item_id=evt.item_id,
                content_index=evt.content_index,
                start_time_ms=int(time.time() * 1000),
                response_id=evt.response_id,
            )
            self._current_audio_response = current
            await self.push_frame(TTSStartedFrame())
        elif current.item_id != evt.item_id:
            # A response may speak through several items; without a phone,
            # truncation concerns the last.
            current.item_id = evt.item_id
            current.content_index = evt.content_index
            current.response_id = evt.response_id
            current.start_time_ms = int(time.time() * 1000)
            current.total_size = 0
        ulaw = base64.b64decode(evt.delta)
        current.total_size += len(ulaw)
        tracked = self._item_audio.setdefault(evt.item_id, [evt.content_index, 0])
        tracked[1] += len(ulaw)
        self._item_response[evt.item_id] = evt.response_id
        frame = RealtimeAudioFrame(
            audio=ulaw_to_pcm16(ulaw),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            item_id=evt.item_id,
            response_id=evt.response_id,
            ulaw=ulaw,
        )
        if self._phone is not None and self.next is self._phone:
            await self._phone.play(frame)  # neighbours: no queue between them
        else:
            await self.push_frame(frame)

    def _calculate_audio_duration_ms(
        self, total_bytes: int, sample_rate: int = SAMPLE_RATE, bytes_per_sample: int = 1
    ) -> int:
        """Return the duration of ``total_bytes`` of μ-law output audio in ms."""
        return total_bytes // BYTES_PER_MS

    #
    # barge-in, on what the caller heard
    #

    async def _handle_evt_speech_started(self, evt):
        if self._barge_in_enabled:
            # First thing, before anything can yield: the phone is cleared in
            # the same event-loop turn as this event is handled.
            await self._barge_in()
        self.caller_speaking = True
        if self._limits:
            self._limits.caller_spoke()
        self._response_create_owed = False
        await self.broadcast_frame(ProposedUserStartedSpeakingFrame)

    async def _handle_evt_speech_stopped(self, evt):
        self.caller_speaking = False
        # When the caller's last word left the phone: the append that carried it
        # (audio_end_ms counts the VAD's silence too).
        ended = evt.audio_end_ms - self._vad_silence_ms
        self._speech_ended_at = next(
            (when for end_ms, when in self._appends if end_ms >= ended), time.monotonic()
        )
        if self._limits:
            self._limits.caller_spoke()
        await super()._handle_evt_speech_stopped(evt)

    async def _truncate_current_audio_response(self):
        # Reached from Pipecat's interruption handling (an InterruptionFrame from
        # upstream). With a phone, truncate at what was heard, not by the clock.
        if self._phone is None:
            await super()._truncate_current_audio_response()
        else:
            await self._barge_in()

    async def _barge_in(self) -> bool:
        """Clear the phone and truncate every item at what the caller heard of it.

        Returns:
            Whether any audio went unheard (the bot was interrupted).
        """
        if self._phone is None:
            await super()._truncate_current_audio_response()
            return False
        unheard = dict(self._item_audio)
        heard = await self._phone.interrupt(unheard)
        self._speech_ended_at = None
        if self._response_id is not None:
            self._dropped_responses.add(self._response_id)
        self._current_audio_response = None
        interrupted = False
        cut: dict[str, list[int]] = {}  # response -> [heard, received]
        for item, (content_index, received) in unheard.items():
            played = min(heard.get(item, 0), received)
            totals = cut.setdefault(self._item_response.get(item, ""), [0, 0])
            totals[0] += played
            totals[1] += received
            if played >= received:
                continue
            interrupted = True
            # Never beyond the item's audio: heard <= sent <= received.
            await self.send_client_event(
                events.ConversationItemTruncateEvent(
                    item_id=item, content_index=content_index, audio_end_ms=played // BYTES_PER_MS
                )
            )
        self._item_audio.clear()
        self._item_response.clear()
        if interrupted:
            self.barge_ins += 1
            for response_id, (played, received) in cut.items():
                if response_id and played < received:
                    await self._note_cut(response_id, played / received if received else 0.0)
            await self.push_frame(InterruptionFrame())
        return interrupted

    def _prune_heard_items(self) -> None:
        if self._phone is None:
            self._item_audio.clear()
            self._item_response.clear()
            return
        for item, (_, size) in list(self._item_audio.items()):
            if self._phone.clock.confirmed_bytes(item) >= size:
                del self._item_audio[item]
                self._item_response.pop(item, None)
                self._phone.clock.forget(item)

    #
    # keypad
    #

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Process a frame; keypad digits also go to the model.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame):
            self._digits.append(frame.button.value)
            if self._dtmf_task:
                await self.cancel_task(self._dtmf_task)
                self._dtmf_task = None
            if frame.button.value == "#":
                await self._send_digits()
            else:
                self._dtmf_task = self.create_task(self._send_digits_later(), "dtmf")

    async def _send_digits_later(self):
        await asyncio.sleep(self._dtmf_timeout_secs)
        self._dtmf_task = None
        await self._send_digits()

    async def _send_digits(self):
        digits = "".join(self._digits)
        self._digits.clear()
        if not digits:
            return
        logger.debug(f"{self} keypad input {digits!r} to the model")
        if self._limits:
            self._limits.caller_spoke()
        if self.responding or (self._phone is not None and not self._phone.idle):
            await self.interrupt()
            self._queued_instructions.clear()
        await self._send_message_item(KEYPAD_INPUT + digits, role="user")
        await self._call_event_handler("on_keypad", digits)
        await self._respond()

    #
    # transcript
    #

    async def _handle_evt_audio_transcript_delta(self, evt):
        await super()._handle_evt_audio_transcript_delta(evt)
        if evt.delta:
            self._response_text.setdefault(evt.response_id, []).append(evt.delta)

    async def handle_evt_input_audio_transcription_completed(self, evt):
        """Record the caller's words, then let Pipecat push them as a transcription.

        Args:
            evt: The transcription completed event.
        """
        await super().handle_evt_input_audio_transcription_completed(evt)
        text = (evt.transcript or "").strip()
        if text:
            await self._add_transcript(TranscriptEntry(role="caller", text=text))

    async def _add_bot_entry(self, response_id: str):
        text = "".join(self._response_text.pop(response_id, [])).strip()
        if not text:
            return
        entry = TranscriptEntry(role="bot", text=text)
        fraction = self._heard_fraction.pop(response_id, None)
        if fraction is not None:
            entry.text, entry.interrupted = _cut_words(text, fraction), True
        self._bot_entries[response_id] = entry
        while len(self._bot_entries) > _ENTRIES_KEPT:
            self._bot_entries.popitem(last=False)
        await self._add_transcript(entry)

    async def _note_cut(self, response_id: str, fraction: float):
        """The caller heard ``fraction`` of a response: cut its transcript to match."""
        entry = self._bot_entries.get(response_id)
        if entry is None:
            self._heard_fraction[response_id] = fraction  # applied at response.done
        elif not entry.interrupted:
            entry.text, entry.interrupted = _cut_words(entry.text, fraction), True

    async def _add_transcript(self, entry: TranscriptEntry):
        self.transcript.append(entry)
        await self._call_event_handler("on_transcript", entry)

    #
    # function calls without aggregators
    #

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


def _split_tools(tools: list | ToolsSchema | None) -> tuple[list[RealtimeTool], ToolsSchema | None]:
    """Separate our tools (schema plus handler) from plain schemas."""
    if tools is None or isinstance(tools, ToolsSchema):
        return [], tools
    realtime_tools = [tool for tool in tools if isinstance(tool, RealtimeTool)]
    schemas: list[Any] = []
    for tool in tools:
        if isinstance(tool, RealtimeTool):
            schemas.append(tool.schema)
        elif isinstance(tool, FunctionSchema):
            schemas.append(tool)
        else:
            raise TypeError(f"unsupported tool {tool!r}: use @realtime_tool or a FunctionSchema")
    names = [schema.name for schema in schemas]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"tools listed twice: {', '.join(sorted(duplicates))}")
    return realtime_tools, ToolsSchema(standard_tools=schemas) if schemas else None


def _cut_words(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text``'s words (what the caller heard, about)."""
    words = text.split()
    return " ".join(words[: round(len(words) * max(0.0, min(1.0, fraction)))])


def _speech_timeout(text: str | None) -> float:
    """Seconds to allow for a response (and ``text``, if any) to be generated and heard."""
    return 30.0 + (len(text) * 0.1 if text else 0.0) + _HEARD_EXTRA_SECS
