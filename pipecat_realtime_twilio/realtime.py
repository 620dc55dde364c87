#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""RealtimeAgent: Pipecat's OpenAI Realtime service, tuned for an 8 kHz phone line."""

import base64
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    Frame,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    LLMFullResponseStartFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import CurrentAudioResponse, OpenAIRealtimeLLMService

from pipecat_realtime_twilio.audio import BYTES_PER_MS, SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16
from pipecat_realtime_twilio.settings import (
    DEFAULT_REALTIME_URL,
    SettingsError,
    current_settings,
)

DEFAULT_VOICE = "marin"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
_NO_KEY_NEEDED = "no-key-needed"

GREETING_INSTRUCTION = "The call has just been answered. Greet the caller now by saying: "
"""Appended to the instructions, with the greeting, for the response that greets the caller."""


@dataclass
class TranscriptEntry:
    """One utterance of the call.

    Parameters:
        role: ``"caller"`` or ``"bot"``.
        text: What was said.
        at: Unix time the utterance was complete.
    """

    role: Literal["caller", "bot"]
    text: str
    at: float = field(default_factory=time.time)


class RealtimeAgent(OpenAIRealtimeLLMService):
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
    - It keeps a transcript of both sides (:attr:`transcript`) and answers a
      function call's result without needing context aggregators.

    The smallest bot is ``[call.input(), RealtimeAgent(instructions=...), call.output()]``.

    Event handlers available (besides the service's own):

    - on_transcript(agent, entry: TranscriptEntry): an utterance of either side is complete.
    """

    def __init__(
        self,
        *,
        instructions: str,
        greeting: str | None = None,
        voice: str = DEFAULT_VOICE,
        model: str | None = None,
        tools: ToolsSchema | list | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        turn_detection: events.TurnDetection | events.SemanticTurnDetection | None = None,
        transcribe_caller: bool = True,
        transcription_model: str = DEFAULT_TRANSCRIPTION_MODEL,
        speed: float | None = None,
        **kwargs,
    ):
        """Initialize the agent.

        Args:
            instructions: The system prompt: who the bot is and how it talks.
            greeting: What the bot says when the call connects (it is told to
                greet with these words). None: the bot waits for the caller.
            voice: The Realtime voice, e.g. ``"marin"`` or ``"cedar"``.
            model: Realtime model; defaults to ``OPENAI_REALTIME_MODEL``.
            tools: Tools the model may call (Pipecat ``ToolsSchema`` or a list
                of function schemas); register handlers with ``register_function``.
            api_key: OpenAI API key; defaults to ``OPENAI_API_KEY``.
            base_url: Realtime websocket URL; defaults to ``OPENAI_REALTIME_URL``.
            turn_detection: Server turn detection; defaults to server VAD.
            transcribe_caller: Whether to ask for a transcript of the caller.
            transcription_model: Model that transcribes the caller.
            speed: Speaking speed of the voice (0.25 to 1.5), default the model's.
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

        audio_input = events.AudioInput(
            format=events.PCMUAudioFormat(),
            turn_detection=turn_detection or events.TurnDetection(),
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
            tools=tools,
        )
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            settings=OpenAIRealtimeLLMService.Settings(
                model=model, system_instruction=instructions, session_properties=session
            ),
            **kwargs,
        )
        self._instructions = instructions
        self._greeting = greeting
        self._greeted = False
        self._call_started = False
        self._session_sent = False
        self._bot_text: list[str] = []
        self.transcript: list[TranscriptEntry] = []
        # No context aggregators: the agent keeps its own (empty) context, so
        # Pipecat's function calling and response bookkeeping have one.
        self._context = LLMContext()
        self._llm_needs_conversation_setup = False
        self._register_event_handler("on_transcript")

    #
    # lifecycle
    #

    async def start(self, frame: StartFrame):
        """Start the agent; greet once the session is ready.

        Args:
            frame: The pipeline's start frame.
        """
        await super().start(frame)
        self._call_started = True
        await self._maybe_greet()

    async def _connect(self):
        await super()._connect()
        if self._websocket and not self._session_sent:
            # Configure the session before any caller audio is appended, so the
            # server never reads μ-law as its default 24 kHz PCM.
            self._session_sent = True
            await self._send_session_update()

    async def _disconnect(self):
        await super()._disconnect()
        self._session_sent = False

    async def _handle_evt_session_created(self, evt):
        if not self._session_sent:
            self._session_sent = True
            await self._send_session_update()

    async def _handle_evt_session_updated(self, evt):
        await super()._handle_evt_session_updated(evt)
        await self._maybe_greet()

    async def _maybe_greet(self):
        if self._greeted or not self._greeting:
            return
        if not (self._call_started and self._api_session_ready):
            return
        self._greeted = True
        logger.debug(f"{self} greeting the caller")
        self._response_active = True
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        await self.send_client_event(
            events.ResponseCreateEvent(
                response=events.ResponseProperties(
                    output_modalities=["audio"],
                    instructions=f"{self._instructions}\n\n{GREETING_INSTRUCTION}{self._greeting}",
                )
            )
        )

    #
    # audio: μ-law both ways, no resampling
    #

    async def _send_user_audio(self, frame: InputAudioRawFrame):
        if frame.sample_rate == SAMPLE_RATE:
            ulaw = pcm16_to_ulaw(frame.audio)
        else:
            pcm = await self._resampler.resample(frame.audio, frame.sample_rate, SAMPLE_RATE)
            ulaw = pcm16_to_ulaw(pcm)
        if not ulaw:
            return
        # The hottest client event: a plain dict skips building a pydantic model
        # for every 20 ms packet.
        await self._ws_send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw).decode("ascii")}
        )

    async def _handle_evt_audio_delta(self, evt):
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
            # A response may speak through several items; truncation concerns the last.
            current.item_id = evt.item_id
            current.content_index = evt.content_index
            current.response_id = evt.response_id
            current.start_time_ms = int(time.time() * 1000)
            current.total_size = 0
        ulaw = base64.b64decode(evt.delta)
        current.total_size += len(ulaw)
        await self.push_frame(
            TTSAudioRawFrame(audio=ulaw_to_pcm16(ulaw), sample_rate=SAMPLE_RATE, num_channels=1)
        )

    def _calculate_audio_duration_ms(
        self, total_bytes: int, sample_rate: int = SAMPLE_RATE, bytes_per_sample: int = 1
    ) -> int:
        """Return the duration of ``total_bytes`` of μ-law output audio in ms."""
        return total_bytes // BYTES_PER_MS

    #
    # transcript
    #

    async def _handle_evt_audio_transcript_delta(self, evt):
        await super()._handle_evt_audio_transcript_delta(evt)
        if evt.delta:
            self._bot_text.append(evt.delta)

    async def handle_evt_input_audio_transcription_completed(self, evt):
        """Record the caller's words, then let Pipecat push them as a transcription.

        Args:
            evt: The transcription completed event.
        """
        await super().handle_evt_input_audio_transcription_completed(evt)
        text = (evt.transcript or "").strip()
        if text:
            await self._add_transcript("caller", text)

    async def _handle_evt_response_done(self, evt):
        await super()._handle_evt_response_done(evt)
        text = "".join(self._bot_text).strip()
        self._bot_text.clear()
        if text:
            await self._add_transcript("bot", text)

    async def _add_transcript(self, role: Literal["caller", "bot"], text: str):
        entry = TranscriptEntry(role=role, text=text)
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
            await self._create_response()


def _wants_answer(frame: FunctionCallResultFrame) -> bool:
    properties: Any = frame.properties
    if properties is None:
        return True
    return properties.is_final and properties.run_llm is not False
