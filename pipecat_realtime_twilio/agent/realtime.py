#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""RealtimeAgent: Pipecat's OpenAI Realtime service, tuned for an 8 kHz phone line."""

from loguru import logger
from openai.types.realtime.input_audio_buffer_timeout_triggered import (
    InputAudioBufferTimeoutTriggered,
)
from openai.types.realtime.noise_reduction_type import NoiseReductionType
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputDTMFFrame,
    LLMFullResponseStartFrame,
    ProposedUserStartedSpeakingFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.realtime import events

from pipecat_realtime_twilio.agent.configuration import (
    DEFAULT_TRANSCRIPTION_MODEL,
    DEFAULT_VOICE,
    PipecatTurnDetection,
    TurnDetection,
    connection,
    phone_audio_input,
    phone_session,
    typed_turn_detection,
    vad_silence_ms,
)
from pipecat_realtime_twilio.agent.controls import say_and_wait_heard
from pipecat_realtime_twilio.agent.greeting import CachedGreeting
from pipecat_realtime_twilio.agent.guard import FIRST_BYTE_TIMEOUT_SECS
from pipecat_realtime_twilio.agent.keypad import (
    DTMF_TIMEOUT_SECS,
    KEYPAD_MAX_DIGITS,
    KEYPAD_RESPONSE_INTERVAL_SECS,
    Keypad,
)
from pipecat_realtime_twilio.agent.limits import CallLimits, LimitsWatcher
from pipecat_realtime_twilio.agent.mcp import mcp_servers_in
from pipecat_realtime_twilio.agent.mcp_events import McpEvents, consent_tool
from pipecat_realtime_twilio.agent.models import warn_once
from pipecat_realtime_twilio.agent.session_keeper import SESSION_MAX_SECS, SessionKeeper
from pipecat_realtime_twilio.agent.tools import split_tools
from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.failures import FALLBACK_LINE, Failure, Stage
from pipecat_realtime_twilio.seams import CALL_METADATA_KEY, PhoneCall
from pipecat_realtime_twilio.targets import check_transfer_target

KEYPAD_INPUT = "The caller pressed these keys on the phone keypad: "
"""How keypad digits reach the model, as a user message followed by the digits."""

TOOL_ERROR_MESSAGE = "Sorry, I couldn't do that just now."
"""What the bot says when a tool fails or times out."""


class RealtimeAgent(McpEvents, CachedGreeting):
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
      call and the session are up; with the greeting in a cache
      (:meth:`use_greeting_cache`), the moment the call starts
      (:mod:`~pipecat_realtime_twilio.agent.greeting`).
    - Barge-in acts on what the caller heard: when the caller starts speaking
      the phone is cleared at once, the model's item is truncated at the ms the
      caller actually heard (from Twilio's marks), and late audio of the
      cancelled response is dropped.
    - Keypad digits reach the model as conversation input (and the pipeline as
      ``InputDTMFFrame``), in groups of at most ``keypad_max_digits``, and stop the
      bot if it is talking. Keypad input starts at most one response per
      ``keypad_response_interval_secs``, never over the bot: keys pressed meanwhile
      share one later response (:mod:`~pipecat_realtime_twilio.agent.keypad`).
    - Tools made with :func:`~pipecat_realtime_twilio.agent.tools.realtime_tool`, and the
      call-control tools ``end_call()`` and ``transfer_call(number)``, are
      registered by passing them in ``tools``; a failing tool becomes a spoken
      apology.
    - It keeps a transcript of both sides (:attr:`transcript`); what the caller heard of
      each response is kept in a :class:`~pipecat_realtime_twilio.agent.ledger.HeardLedger`.

    The smallest bot is ``[call.input(), RealtimeAgent(instructions=...), call.output()]``;
    inside a :class:`~pipecat_realtime_twilio.phone.call.CallSession` pipeline the agent
    finds the call (a :class:`~pipecat_realtime_twilio.seams.PhoneCall`) and its phone
    output by itself.

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
        turn_detection: TurnDetection | PipecatTurnDetection | None = None,
        noise_reduction: NoiseReductionType | None = None,
        transcribe_caller: bool = True,
        transcription_model: str = DEFAULT_TRANSCRIPTION_MODEL,
        transcription_language: str | None = None,
        speed: float | None = None,
        limits: CallLimits | None = None,
        tool_error_message: str = TOOL_ERROR_MESSAGE,
        dtmf_timeout_secs: float = DTMF_TIMEOUT_SECS,
        keypad_max_digits: int = KEYPAD_MAX_DIGITS,
        keypad_response_interval_secs: float = KEYPAD_RESPONSE_INTERVAL_SECS,
        fallback_line: str = FALLBACK_LINE,
        fallback_number: str | None = None,
        session_max_secs: float = SESSION_MAX_SECS,
        first_byte_timeout_secs: float = FIRST_BYTE_TIMEOUT_SECS,
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
                ``register_function``), and :class:`~.mcp.McpServer` objects (remote
                MCP servers OpenAI calls for the model, see :mod:`~.mcp_events`).
            api_key: OpenAI API key; defaults to ``OPENAI_API_KEY``.
            base_url: Realtime websocket URL; defaults to ``OPENAI_REALTIME_URL``.
            turn_detection: Server turn detection: ``ServerVad`` (``threshold``,
                ``prefix_padding_ms``, ``silence_duration_ms``, ``idle_timeout_ms``,
                ``create_response``, ``interrupt_response``) or ``SemanticVad``
                (``eagerness``, ...), the ``openai`` package's models; Pipecat's
                ``TurnDetection``/``SemanticTurnDetection`` are converted. None: server
                VAD with the API's defaults.
            noise_reduction: Noise reduction of the caller's audio, ``"near_field"``
                or ``"far_field"``; None: none.
            transcribe_caller: Whether to ask for a transcript of the caller.
            transcription_model: Model that transcribes the caller.
            transcription_language: The caller's language (ISO-639-1, e.g. ``"en"``)
                for the transcription, if known.
            speed: Speaking speed of the voice (0.25 to 1.5), default the model's.
            limits: Maximum call duration and silence timeout, if any.
            tool_error_message: What the bot says when a tool fails or times out.
            dtmf_timeout_secs: Keypad digits pressed within this long of each
                other go to the model together (``#`` sends at once).
            keypad_max_digits: Most keys in one group; a full group is sent at once.
            keypad_response_interval_secs: Least seconds between two responses
                started by keypad input; keys pressed in between are answered
                together by one response, once the interval has passed and the
                caller has heard the bot.
            fallback_line: Said in Twilio's voice when the Realtime API is gone
                for good (a refused key, no quota, a stalled model, reconnects
                exhausted).
            fallback_number: If set, such a call is transferred there instead (a phone
                number, or a SIP URI dialled as ``<Dial><Sip>``).
            session_max_secs: Move to a fresh session, at the next turn boundary,
                once the session is this old (the API's cap is 60 minutes).
            first_byte_timeout_secs: Most seconds from asking for a response (or
                the caller's end of turn) to its first byte (``response.created``);
                then the call falls back rather than leave the caller in silence.
                Its first audio may take 10 s more (a reasoning model thinking).
            **kwargs: Further ``OpenAIRealtimeLLMService`` arguments.

        Raises:
            SettingsError: If no API key is given or configured for OpenAI's own URL
                (or an Azure one).
            ValueError: If ``fallback_number`` is neither a phone number nor a SIP URI,
                or a keypad limit is out of range.
        """
        api_key, base_url, model = connection(api_key, base_url, model)
        if fallback_number:
            fallback_number = check_transfer_target(fallback_number)  # wrong: fails at build
        mcp_servers = mcp_servers_in(tools)  # sent as tools of type mcp (agent/mcp_events.py)
        if isinstance(tools, list) and any(s.approval not in ("never", []) for s in mcp_servers):
            tools = [*tools, consent_tool()]  # the caller's consent, for the API
        realtime_tools, tools_schema = split_tools(tools)
        detection = typed_turn_detection(turn_detection)
        audio_input = phone_audio_input(
            turn_detection=detection,
            noise_reduction=noise_reduction,
            transcription_model=transcription_model if transcribe_caller else None,
            transcription_language=transcription_language,
        )
        session = phone_session(
            voice=voice, speed=speed, audio_input=audio_input, tools=tools_schema
        )
        self._creates_responses = detection.create_response is not False
        super().__init__(
            instructions=instructions,
            greeting=greeting,
            # The server cancels the response on speech unless told not to.
            barge_in=detection.interrupt_response is not False,
            # speech_stopped's audio_end_ms includes server VAD's trailing silence.
            vad_silence_ms=vad_silence_ms(detection),
            audio_input=audio_input,
            fallback_line=fallback_line,
            fallback_number=fallback_number,
            session_max_secs=session_max_secs,
            first_byte_timeout_secs=first_byte_timeout_secs,
            api_key=api_key,
            base_url=base_url,
            settings=SessionKeeper.Settings(
                model=model, system_instruction=instructions, session_properties=session
            ),
            **kwargs,
        )
        for tool in realtime_tools:
            self.register_function(tool.name, tool.handler)
        self._init_mcp(mcp_servers)
        self.tool_error_message = tool_error_message
        self.model = model
        warn_once("realtime", model)  # an announced shutdown: said once per process
        if transcribe_caller:
            warn_once("transcription", transcription_model)
        self._keypad = Keypad(
            self,
            self._send_keys,
            self._respond,
            timeout_secs=dtmf_timeout_secs,
            max_digits=keypad_max_digits,
            response_interval_secs=keypad_response_interval_secs,
        )
        self._limits = LimitsWatcher(self, limits) if limits else None
        self._register_event_handler("on_keypad")

    @property
    def call(self) -> PhoneCall | None:
        """The phone call this agent talks on (None outside a ``CallSession`` pipeline)."""
        return self._call

    #
    # lifecycle
    #

    async def start(self, frame: StartFrame):
        """Start the agent; find the call; greet once the session is ready.

        Args:
            frame: The pipeline's start frame.
        """
        call: PhoneCall | None = frame.metadata.get(CALL_METADATA_KEY)
        if call is not None:
            self._plug_in(call)
            call.attach_agent(self)
        await self._play_cached_greeting()  # the moment the stream starts: no session awaited
        # Pipecat connects at setup, before the phone is known; a pre-warmed session
        # is taken over only now, so its early audio takes the same path as the rest.
        if await self._take_prewarmed():
            self._watch_configuring()
            if self._response_active:  # the greeting asked for while pre-warmed
                await self.push_frame(LLMFullResponseStartFrame())
                self._expect_first_byte(Stage.GREET)
        elif self._websocket is None:
            await self._connect()  # no pre-warm, or it failed: connect now
        await super().start(frame)
        self._call_started = True
        if self._pending_failure is not None:  # it failed before the call was known
            await self._fall_back(self._pending_failure)
            return
        if self._websocket is None:
            await self._fatal(self._connect_failure(Stage.CONNECT))
            return
        if self._limits:
            self._limits.start()
        self._rotation_task = self.create_task(self._rotate_when_due(), "session-rotation")
        await self._maybe_greet()

    async def stop(self, frame: EndFrame):
        """Stop the agent and its timers.

        Args:
            frame: The end frame.
        """
        await self._stop_timers()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame):
        """Cancel the agent and its timers.

        Args:
            frame: The cancel frame.
        """
        await self._stop_timers()
        await super().cancel(frame)

    async def _stop_timers(self) -> None:
        self._unplug()
        self._stop_deadlines()
        if self._rotation_task:
            await self.cancel_task(self._rotation_task)
            self._rotation_task = None
        if self._limits:
            await self._limits.stop()
        await self._keypad.stop()

    #
    # the session keeper's hooks
    #

    def _at_turn_boundary(self) -> bool:
        return not (self.responding or self.caller_speaking) and self.phone_idle

    async def _fall_back(self, failure: Failure) -> None:
        self._stop_deadlines()
        if self._call is not None:
            await self._call.fail(failure, say=self.fallback_line, transfer_to=self.fallback_number)

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
        await say_and_wait_heard(self, goodbye)
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
        await say_and_wait_heard(self, announcement)
        await call.transfer(number)

    async def interrupt(self) -> None:
        """Stop the bot now: clear the phone, truncate what was not heard, cancel the response."""
        await self._barge_in()
        if self._response_active:
            # response.done (cancelled) follows; what is queued waits for it.
            await self.send_client_event(events.ResponseCancelEvent())

    def _require_call(self) -> PhoneCall:
        if self._call is None:
            raise CallControlError("call control needs the agent inside a CallSession pipeline")
        return self._call

    #
    # the caller's turns (server VAD)
    #

    async def _handle_evt_speech_started(self, evt):
        if self._barge_in_enabled:
            # First thing, before anything can yield: the phone is cleared in
            # the same event-loop turn as this event is handled.
            await self._barge_in()
        self.caller_speaking = True
        self._caller_began(evt.item_id)
        self._first_byte_came()  # nothing is owed while the caller talks
        if self._limits:
            self._limits.caller_spoke()
        self._response_create_owed = False
        if self._creates_responses:  # the server answers the turn, keys included
            await self._keypad.caller_spoke()
        await self.broadcast_frame(ProposedUserStartedSpeakingFrame)

    async def _handle_evt_speech_stopped(self, evt):
        self.caller_speaking = False
        self._turn_ended()
        if self._creates_responses:  # the server answers the turn by itself
            self._expect_first_byte(self._response_stage())
        self._latency.speech_stopped(evt.audio_end_ms)
        if self._limits:
            self._limits.caller_spoke()
        await super()._handle_evt_speech_stopped(evt)

    async def _handle_evt_timeout_triggered(self, evt: InputAudioBufferTimeoutTriggered):
        """The caller stayed silent for ``idle_timeout_ms``: the server answers by itself.

        The silence is committed as the caller's turn, as at the end of one; it is no
        caller speech, so the limits watcher is not told.
        """
        logger.debug(f"{self} the caller was silent for the idle timeout; the server answers")
        self._turn_ended()
        if self._creates_responses:
            self._expect_first_byte(self._response_stage())

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
            await self._keypad.press(frame.button.value)

    @property
    def keypad_groups(self) -> int:
        """Keypad groups sent to the model."""
        return self._keypad.groups

    @property
    def keypad_responses(self) -> int:
        """Responses asked for by keypad input."""
        return self._keypad.responses

    @property
    def keypad_deferred(self) -> int:
        """Keypad groups whose response the rate limit held back (answered with later keys)."""
        return self._keypad.deferred

    async def _send_keys(self, digits: str) -> None:
        """Give the model a group of keypad digits, stopping the bot if it is talking.

        The keypad then asks for a response, sparingly (:class:`Keypad`). Every group still
        stops the bot, so the caller can skip a menu with a key: a stop asks the model for
        nothing (a cancel ends the response's output early), only new responses cost.
        """
        logger.debug(f"{self} keypad input to the model ({len(digits)} keys)")
        if self._limits:
            self._limits.caller_spoke()
        if self.responding or not self.phone_idle:
            await self.interrupt()
            self._queued_instructions.clear()
        await self._send_message_item(KEYPAD_INPUT + digits, role="user")
        self.call_events.keypad_sent(digits)
        await self._call_event_handler("on_keypad", digits)
