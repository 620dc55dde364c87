#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""LiveAgent: Pipecat's OpenAI GPT-Live service, set up for an 8 kHz phone line."""

from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, InputDTMFFrame, StartFrame
from pipecat.processors.frame_processor import FrameDirection

from pipecat_realtime_twilio.agent.controls import say_and_wait_heard
from pipecat_realtime_twilio.agent.events import TOOL_FRAMES
from pipecat_realtime_twilio.agent.keypad import DTMF_TIMEOUT_SECS, KEYPAD_MAX_DIGITS, Keypad
from pipecat_realtime_twilio.agent.limits import CallLimits, LimitsWatcher
from pipecat_realtime_twilio.agent.live_config import (
    DEFAULT_LIVE_VOICE,
    backend_tools,
    live_connection,
)
from pipecat_realtime_twilio.agent.live_greeting import LiveGreeting
from pipecat_realtime_twilio.agent.live_mcp import LiveMcp, mcp_tools
from pipecat_realtime_twilio.agent.live_turns import SETTLE_SECS
from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT, TOOL_ERROR_MESSAGE
from pipecat_realtime_twilio.agent.tools import split_tools
from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.failures import FALLBACK_LINE, Failure, Stage
from pipecat_realtime_twilio.seams import CALL_METADATA_KEY, PhoneCall
from pipecat_realtime_twilio.targets import check_transfer_target

FIRST_SPEECH_TIMEOUT_SECS = 3.0
"""Most seconds for GPT-Live to start speaking words it was asked to say (the greeting,
an apology) or, nudged once, an answer it owes the caller; then the call falls back."""


class LiveAgent(LiveGreeting, LiveMcp):
    """A speech-to-speech agent for phone calls, on OpenAI's GPT-Live API.

    It is Pipecat's ``OpenAILiveLLMService`` set up for a phone line, and takes
    :class:`~pipecat_realtime_twilio.agent.realtime.RealtimeAgent`'s place in a bot:
    ``[call.input(), LiveAgent(instructions=...), call.output()]``.

    - Audio stays 8 kHz μ-law end to end: ``session.start`` asks for ``audio/pcmu``
      at 8000 Hz (one format both ways), the caller's μ-law goes to the API and the
      API's to the phone byte for byte; nothing is resampled.
    - GPT-Live decides turns itself and streams audio continuously, silence
      included. Its audio is cut into utterances (quiet past a short pause is not
      played), so the phone goes idle between them and its marks say what the
      caller heard.
    - Barge-in is the model's: it stops when the caller speaks over it (no client
      event can truncate or cancel it). When it does, what is still queued on the
      phone is cleared at once, the reply's transcript is cut to what was heard, and
      the barge-in is counted.
    - The bot speaks first with a ``greeting`` (``session.commentary.append``); with it
      in a greeting cache (:meth:`use_greeting_cache`), the moment the stream starts
      (:mod:`~pipecat_realtime_twilio.agent.live_greeting`).
    - Tools: the :class:`~pipecat_realtime_twilio.agent.tools.RealtimeTool` objects in
      ``tools`` (``@realtime_tool``, ``end_call()``, ``transfer_call(number)``) run as
      function tools of the Responses model GPT-Live delegates to; a failing tool
      becomes a spoken apology, and the call ends or is transferred once the
      goodbye was heard. ``warm_transfer(number)`` holds the caller itself
      (:mod:`~.live_hold`); :class:`~.mcp.McpServer` objects are Responses MCP tools
      the backend calls (:mod:`~.live_mcp`).
    - Keypad digits reach the model as commentary (``KEYPAD_INPUT`` and the keys),
      which it answers; a key stops the bot on the phone.
    - No dead air: a refused or hanging handshake, a rejected ``session.start``, a
      stalled model, a dropped connection, a session closed by the server and a
      failed delegated response each end in the bot speaking again, a new session,
      or the fallback line (or transfer) in Twilio's voice.
    - Its transcript has both sides; :attr:`live_usage` the billable seconds, and
      :attr:`usage` the backend model's tokens.

    Event handlers available (besides the service's own):

    - on_transcript(agent, entry: TranscriptEntry): an utterance of either side is complete.
    - on_keypad(agent, digits: str): keypad digits went to the model.
    """

    engine = "live"
    """Which API the agent talks to (the call record's ``engine``)."""

    def __init__(
        self,
        *,
        instructions: str,
        greeting: str | None = None,
        voice: str = DEFAULT_LIVE_VOICE,
        model: str | None = None,
        tools: list | ToolsSchema | None = None,
        backend_model: str | None = None,
        backend_instructions: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        limits: CallLimits | None = None,
        tool_error_message: str = TOOL_ERROR_MESSAGE,
        dtmf_timeout_secs: float = DTMF_TIMEOUT_SECS,
        keypad_max_digits: int = KEYPAD_MAX_DIGITS,
        fallback_line: str = FALLBACK_LINE,
        fallback_number: str | None = None,
        first_byte_timeout_secs: float = FIRST_SPEECH_TIMEOUT_SECS,
        settle_secs: float = SETTLE_SECS,
        **kwargs,
    ):
        """Initialize the agent.

        Args:
            instructions: The system prompt: who the bot is and how it talks. GPT-Live
                gets it, and the backend model too unless ``backend_instructions``.
            greeting: What the bot says when the call connects; None: it waits.
            voice: The GPT-Live voice, e.g. ``"marin"`` or ``"cedar"`` (fixed per session).
            model: GPT-Live model; defaults to ``OPENAI_LIVE_MODEL``.
            tools: Tools the backend model may call: :class:`RealtimeTool` objects, whose
                handlers are registered here, and/or Pipecat ``FunctionSchema`` objects or
                a ``ToolsSchema`` (register those handlers with ``register_function``), and
                :class:`~.mcp.McpServer` objects (Responses MCP tools, see :mod:`~.live_mcp`).
            backend_model: The Responses model GPT-Live delegates to; defaults to
                ``OPENAI_LIVE_BACKEND_MODEL``.
            backend_instructions: The backend's instructions (business rules, tool
                use); defaults to ``instructions``.
            api_key: OpenAI API key; defaults to ``OPENAI_API_KEY``.
            base_url: Live websocket URL; defaults to ``OPENAI_LIVE_URL``.
            limits: Maximum call duration and silence timeout, if any.
            tool_error_message: What the bot says when a tool or delegated work fails.
            dtmf_timeout_secs: Keys pressed within this long of each other go together.
            keypad_max_digits: Most keys in one group.
            fallback_line: Said in Twilio's voice when GPT-Live is gone for good.
            fallback_number: If set, such a call is transferred there instead.
            first_byte_timeout_secs: Most seconds for the model to start saying what
                it was asked to (or, nudged once, the answer it owes the caller).
            settle_secs: Quiet after the model's last words before a goodbye counts as
                said (the call may then end).
            **kwargs: Further ``OpenAILiveLLMService`` arguments.

        Raises:
            SettingsError: If no API key is given or configured for OpenAI's URL.
            ValueError: If ``fallback_number`` is neither a phone number nor a SIP URI.
        """
        api_key, base_url, model, backend_model = live_connection(
            api_key, base_url, model, backend_model
        )
        if fallback_number:
            fallback_number = check_transfer_target(fallback_number)
        tools, mcp_servers = mcp_tools(tools)  # MCP servers: Responses mcp tools
        realtime_tools, tools_schema = split_tools(tools)
        super().__init__(
            mcp_servers=mcp_servers,
            instructions=instructions,
            voice=voice,
            model=model,
            backend_model=backend_model,
            backend_instructions=backend_instructions or instructions,
            backend_tools=backend_tools(tools_schema),
            fallback_line=fallback_line,
            fallback_number=fallback_number,
            api_key=api_key,
            base_url=base_url,
            greeting=greeting,
            first_byte_timeout_secs=first_byte_timeout_secs,
            error_line=tool_error_message,
            settle_secs=settle_secs,
            **kwargs,
        )
        for tool in realtime_tools:
            self.register_function(tool.name, tool.handler)
        self.tool_error_message = tool_error_message
        self._keypad = _LiveKeypad(
            self,
            self._send_keys,
            self._no_response,
            timeout_secs=dtmf_timeout_secs,
            max_digits=keypad_max_digits,
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
        """Start the agent; find the call; greet once the session has started.

        Args:
            frame: The pipeline's start frame.
        """
        call: PhoneCall | None = frame.metadata.get(CALL_METADATA_KEY)
        if call is not None:
            self._plug_in(call)
            call.attach_agent(self)
        await super().start(frame)
        self._call_started = True
        if self._pending_failure is not None:  # it failed before the call was known
            await self._fall_back(self._pending_failure)
            return
        if self._websocket is None:
            await self._connect()  # Pipecat connects at setup; a failure there is kept
        if self._websocket is None:
            await self._fatal(self._connect_failure(Stage.CONNECT))
            return
        if self._limits:
            self._limits.start()
        await self._maybe_greet()

    async def stop(self, frame: EndFrame):
        """Stop the agent and its timers; close the session.

        Args:
            frame: The end frame.
        """
        await self._stop_timers()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame):
        """Cancel the agent and its timers; close the socket.

        Args:
            frame: The cancel frame.
        """
        await self._stop_timers()
        await super().cancel(frame)

    async def _stop_timers(self) -> None:
        self._unplug()
        self._stop_deadlines()
        if self._limits:
            await self._limits.stop()
        await self._keypad.stop()

    async def _fall_back(self, failure: Failure) -> None:
        self._stop_deadlines()
        if self._call is not None:
            await self._call.fail(failure, say=self.fallback_line, transfer_to=self.fallback_number)

    #
    # call control
    #

    async def end_call(self, goodbye: str | None = None, *, reason: str = "bot ended the call"):
        """End the call once the model is done and the caller heard it (and ``goodbye``).

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
        """Transfer the call to ``number`` once the model is done and the caller heard it.

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
        """Stop the bot on the phone now: clear it, and drop the rest of the model's utterance.

        GPT-Live cannot be stopped by the client: the model is told (silently) that
        the caller did not hear the rest.
        """
        speaking = self._speech.item is not None
        if await self._barge_in() or speaking:
            self._muted = speaking
            await self._send(
                {
                    "type": "session.thinking.append",
                    "content": "The caller did not hear the rest of what you were saying.",
                    "delegation_id": None,
                }
            )

    def _require_call(self) -> PhoneCall:
        if self._call is None:
            raise CallControlError("call control needs the agent inside a CallSession pipeline")
        return self._call

    #
    # keypad, tools
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

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        """Push a frame; function-call frames going downstream are noted in :attr:`call_events`.

        Args:
            frame: The frame to push.
            direction: The direction of frame pushing.
        """
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, TOOL_FRAMES):
            self.call_events.tool_frame(frame)
        await super().push_frame(frame, direction)

    @property
    def keypad_groups(self) -> int:
        """Keypad groups sent to the model."""
        return self._keypad.groups

    @property
    def keypad_deferred(self) -> int:
        """Keypad groups held back (none: GPT-Live answers keys when it sees fit)."""
        return self._keypad.deferred

    async def _send_keys(self, digits: str) -> None:
        """Give the model a group of keys as commentary; stop the bot on the phone first."""
        logger.debug(f"{self} keypad input to the model ({len(digits)} keys)")
        if self._limits:
            self._limits.caller_spoke()
        if self._speech.item is not None or not self.phone_idle:
            await self.interrupt()
        await self._commentary(KEYPAD_INPUT + digits)
        self.call_events.keypad_sent(digits)
        await self._call_event_handler("on_keypad", digits)

    async def _no_response(self) -> None:
        """Nothing to ask for: the commentary that carried the keys asks for an answer."""

    async def _caller_words(self, evt) -> None:
        await super()._caller_words(evt)
        if self._limits:
            self._limits.caller_spoke()


class _LiveKeypad(Keypad):
    """Keys grouped as for Realtime; each group is its own request for an answer."""

    async def _answer(self) -> None:
        """GPT-Live bills by time, not responses: no answer is held back or asked for."""
