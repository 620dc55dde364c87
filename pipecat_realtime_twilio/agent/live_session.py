#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Keeping a call's GPT-Live session: connect, start, receive, reconnect, rotate, fall back.

:class:`LiveSession` is Pipecat's ``OpenAILiveLLMService`` kept alive for a whole
phone call (:class:`~pipecat_realtime_twilio.agent.live.LiveAgent` builds on it):

- The socket opens like a Realtime one
  (:func:`~pipecat_realtime_twilio.agent.handshake.open_realtime`: refusals read
  as codes, what a wait may cure retried within a budget), and
  ``session.start`` goes at once, with 8 kHz ``audio/pcmu`` both ways, the voice,
  Responses delegation with the bot's tools, and the conversation so far
  (:mod:`~pipecat_realtime_twilio.agent.live_config`). Pipecat's service starts
  the session only on a context frame; a phone pipeline has none.
- Until ``session.started`` confirms ``audio/pcmu`` at 8000 Hz no caller audio
  is sent (it is held, bounded, and sent then) and no bot audio is played; it
  must come within :data:`CONFIGURE_TIMEOUT_SECS`. An ``error`` before it is a
  rejected ``session.start``: the call falls back.
- Its receive loop follows Pipecat's dispatch but drops a malformed event, or
  one whose handling fails, with a log line; Pipecat's ``error`` handling (an
  error frame) is replaced: fatal codes fall back, the rest are logged.
- The session's end: ``session.closed`` with ``expired`` (its cap) moves to a
  fresh session (a rotation), ``content`` (a safety stop) falls back, and
  ``connection_lost``, a dropped socket or an audio stream that stopped
  (:data:`STREAM_STALL_SECS`) reconnect: a new session is started with the
  transcript so far as its ``input``. A reconnect that cannot open, or the
  :data:`~pipecat_realtime_twilio.agent.session_keeper.MAX_RECONNECTS`-th, falls back.
- Closing: ``session.close`` and a short wait for ``session.closed`` (its final
  usage) when the pipeline ends; at once when it is cancelled.

What it needs from the agent it declares as methods to override
(:meth:`_session_ready`, :meth:`_forget_session`, :meth:`_fall_back`, :meth:`_stage`).
"""

import asyncio
import contextlib
import json
import uuid
from collections import deque
from typing import Any

from loguru import logger
from pipecat.services.openai.live import events
from pipecat.services.openai.live.llm import OpenAILiveLLMService
from pipecat.services.openai.responses.llm import OpenAIResponsesLLMSettings
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websocket_connect

from pipecat_realtime_twilio.agent.guard import CONFIGURE_TIMEOUT_SECS, Deadline
from pipecat_realtime_twilio.agent.handshake import ConnectFailed, Refusal, open_realtime
from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
from pipecat_realtime_twilio.agent.live_config import (
    checked_event,
    initial_items,
    is_phone_format,
    session_config,
    started_format,
)
from pipecat_realtime_twilio.agent.live_usage import LiveUsage
from pipecat_realtime_twilio.agent.session_keeper import (
    FATAL_ERROR_CODES,
    MAX_BUFFERED_AUDIO_MS,
    MAX_RECONNECTS,
)
from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.failures import Failure, Stage

STREAM_STALL_SECS = 3.0
"""Most seconds without any audio from a session that streams continuously; then it is
taken as wedged and replaced (a reconnect)."""

CLOSE_WAIT_SECS = 1.0
"""Most seconds to wait for ``session.closed`` (its final usage) when the call ends."""


class LiveSession(OpenAILiveLLMService):
    """Pipecat's GPT-Live service, kept alive for a whole phone call."""

    transcript: list[TranscriptEntry]
    """Both sides' utterances so far (kept by the subclass; a new session is given them)."""

    # Pipecat's service state: its __init__ sets these to None untyped.
    _websocket: ClientConnection | None  # type: ignore[assignment]
    _receive_task: asyncio.Task | None  # type: ignore[assignment]

    def __init__(
        self,
        *,
        instructions: str,
        voice: str,
        model: str,
        backend_model: str,
        backend_instructions: str | None,
        backend_tools: list[dict[str, Any]],
        fallback_line: str,
        fallback_number: str | None,
        api_key: str,
        base_url: str,
        **kwargs,
    ):
        """Initialize the session keeper.

        Args:
            instructions: The Live model's instructions.
            voice: The output voice.
            model: The Live model.
            backend_model: The Responses model delegated work goes to.
            backend_instructions: The backend's instructions.
            backend_tools: The backend's function tools.
            fallback_line: What the caller hears when the API is gone for good.
            fallback_number: Where such a call is transferred instead, if set.
            api_key: The API key.
            base_url: The Live websocket URL.
            **kwargs: Further ``OpenAILiveLLMService`` arguments.
        """
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            settings=OpenAILiveLLMService.Settings(
                model=model, system_instruction=instructions, voice=voice
            ),
            delegation=OpenAILiveLLMService.ResponsesDelegation(
                settings=OpenAIResponsesLLMSettings(model=backend_model)
            ),
            **kwargs,
        )
        self.model = model
        self.fallback_line = fallback_line
        self.fallback_number = fallback_number
        self.reconnects = 0
        self.rotations = 0
        self.live_usage = LiveUsage(backend_model=backend_model)
        self._instructions = instructions
        self._voice = voice
        self._backend_instructions = backend_instructions
        self._backend_tools = backend_tools
        self._needs_session_config = False  # session.start is ours, not a context frame's
        self._audio_ready = False
        self._ended = False  # the call is over: no reconnect
        self._closed_reason: str | None = None
        self._stalled = False
        self._connect_failed: Refusal | None = None
        self._pending_failure: Failure | None = None
        self._held_audio: deque[tuple[str, int]] = deque()  # (base64 μ-law, its bytes)
        self._appended_bytes = 0  # caller audio sent, all sessions
        self._session_base_bytes = 0  # of it, sent before this session started
        self._held_dropped = 0
        self._dropped_events = 0
        self._wrong_format_dropped = 0
        self._streams_continuously = False
        self._configured = Deadline(self._missed)
        self._stream = Deadline(self._stream_stalled)

    #
    # what the subclass provides
    #

    async def _session_ready(self) -> None:
        """A session started in the phone's format (audio may flow)."""

    def _forget_session(self) -> None:
        """Drop what belonged to the session that is gone."""
        self._audio_ready = False
        self._session_started = False
        self._session_started_on_connection = False
        self._open_function_calls.clear()
        self._pending_responses.clear()

    async def _fall_back(self, failure: Failure) -> None:
        """The API is gone for this call: hand the caller to the fallback."""

    def _stage(self) -> Stage:
        """The stage the call is in, for a failure with no stage of its own."""
        return Stage.RESPOND if self._audio_ready else Stage.CONFIGURE

    #
    # connecting and starting the session
    #

    async def _connect(self):
        if self._websocket is not None or self._connect_failed is not None or self._ended:
            return
        try:
            websocket = await open_realtime(self._open_socket, name=f"{self} GPT-Live")
        except ConnectFailed as e:
            self._connect_failed = e.refusal
            return
        self._websocket = websocket
        self._closed_reason = None
        self._stalled = False
        self._receive_task = self.create_task(self._receive_task_handler(), "live-receive")
        await self._start_session()

    async def _open_socket(self, timeout: float) -> ClientConnection:
        """Open the Live websocket once, the handshake taking at most ``timeout`` s."""
        return await websocket_connect(
            uri=self.base_url,
            additional_headers={"Authorization": f"Bearer {self.api_key}"},
            compression=None,
            open_timeout=timeout,
        )

    async def _start_session(self) -> None:
        """Send ``session.start``, the first event, and wait (bounded) for ``session.started``."""
        session = session_config(
            model=self.model,
            instructions=self._instructions,
            voice=self._voice,
            backend_model=self.live_usage.backend_model,
            backend_instructions=self._backend_instructions,
            tools=self._backend_tools,
            history=initial_items(self.transcript),
        )
        event = {"type": "session.start", "event_id": _event_id(), "session": session}
        await self._send(event)
        self._configured.arm(
            Failure(Stage.CONFIGURE, "timeout", "no session.started"), CONFIGURE_TIMEOUT_SECS
        )

    def _connect_failure(self, stage: Stage) -> Failure:
        """The failure of the last connect (``stage``: where it was needed)."""
        refusal = self._connect_failed or Refusal("handshake", True, "no session")
        return Failure(stage, refusal.code, refusal.detail)

    async def _handle_evt_session_started(self, evt: events.SessionStartedEvent):
        self._configured.disarm()
        session = evt.session.model_dump()
        fmt = started_format(session)
        if not is_phone_format(fmt):
            await self._fatal(Failure(Stage.CONFIGURE, "audio_format", f"session format {fmt}"))
            return
        self.live_usage.opened()
        self._audio_ready = True
        self._session_base_bytes = self._appended_bytes  # the session's audio starts here
        await super()._handle_evt_session_started(evt)
        await self._session_ready()
        await self._release_held_audio()

    async def _maybe_send_tools_update(self):
        """Never: the tools are fixed at ``session.start`` (no context frames change them)."""

    async def _handle_context(self, context):
        """Keep a context frame's context; the session was started already."""
        self._context = context

    #
    # sending
    #

    async def send_client_event(self, event: events.ClientEvent):
        """Send a client event, checked against ``openai.types.live`` first.

        Args:
            event: Pipecat's model of the event.
        """
        await self._send(event.to_payload())

    async def _send(self, payload: dict[str, Any]) -> None:
        await self._ws_send(checked_event(payload))

    async def _ws_send(self, message: dict[str, Any]):
        websocket = self._websocket
        if websocket is None or self._disconnecting:
            return
        try:
            await websocket.send(json.dumps(message))
        except Exception as e:  # the receive loop sees the socket go, and reconnects
            logger.debug(f"{self} could not send {message.get('type')}: {e}")

    async def _append_caller_audio(self, payload: str, size: int) -> None:
        """Send caller audio: ``payload`` is ``size`` bytes of μ-law, base64-encoded."""
        if not self._audio_ready:  # not started yet (or reconnecting): hold it
            self._hold_audio(payload, size)
            return
        # The hottest client event: a plain dict, no model per 20 ms packet.
        await self._ws_send({"type": "session.input_audio.append", "audio": payload})
        self._sent_caller_audio(size)

    def _sent_caller_audio(self, size: int) -> None:
        """Note caller audio the session got (the subclass measures latency with it)."""
        self._appended_bytes += size

    def _hold_audio(self, payload: str, size: int) -> None:
        self._held_audio.append((payload, size))
        limit = MAX_BUFFERED_AUDIO_MS * BYTES_PER_MS // max(1, size)
        while len(self._held_audio) > limit:
            self._held_audio.popleft()
            self._held_dropped += 1
            if self._held_dropped == 1 or self._held_dropped % 250 == 0:
                logger.warning(
                    f"{self} over {MAX_BUFFERED_AUDIO_MS} ms of caller audio held before the "
                    f"session started; dropped the oldest ({self._held_dropped} packets so far)"
                )

    async def _release_held_audio(self) -> None:
        held, self._held_audio = self._held_audio, deque()
        for payload, size in held:
            await self._ws_send({"type": "session.input_audio.append", "audio": payload})
            self._sent_caller_audio(size)

    #
    # receiving
    #

    async def _receive_task_handler(self):
        """Read server events until the socket ends; then carry on, unless we closed it."""
        websocket = self._websocket
        fatal: Failure | None = None
        try:
            if websocket is not None:
                async for message in websocket:
                    fatal = await self._on_server_message(message)
                    if fatal is not None:
                        break
        except Exception as e:  # the socket died under us (ConnectionClosedError and kin)
            logger.warning(f"{self} GPT-Live socket lost: {type(e).__name__}: {e}")
        if self._ended or self._disconnecting or websocket is not self._websocket:
            return  # we closed it, or a new session took over
        self._stream.disarm()
        self.live_usage.closed()
        if fatal is not None:
            await self._fatal(fatal)
            return
        reason = self._closed_reason
        if reason == "content":
            await self._fatal(Failure(self._stage(), "closed_content", "a safety stop"))
        elif reason == "expired":
            logger.info(f"{self} the session reached its cap: moving to a fresh one")
            await self._reconnect(rotation=True)
        elif self.reconnects >= MAX_RECONNECTS:
            await self._fatal(
                Failure(Stage.RECONNECT, "reconnects_exhausted", f"{MAX_RECONNECTS} reconnects")
            )
        else:
            why = "its audio stalled" if self._stalled else (reason or "the socket dropped")
            logger.warning(f"{self} reconnecting to GPT-Live ({why})")
            await self._reconnect()

    async def _on_server_message(self, message: str | bytes) -> Failure | None:
        """Handle one server event; return the failure, if it is a fatal one."""
        try:
            evt = events.parse_server_event(message)
            if isinstance(evt, events.ErrorEvent):
                return await self._on_error(evt)
            await self._handle_server_event(evt)
        except Exception as e:  # one bad event never ends the call
            self._dropped_events += 1
            if self._dropped_events <= 20 or self._dropped_events % 1000 == 0:
                preview = message[:120]
                logger.warning(
                    f"{self} dropped a server event ({type(e).__name__}: "
                    f"{str(e)[:200]}; {self._dropped_events} so far): {preview!r}"
                )
        return None

    async def _on_error(self, evt: events.ErrorEvent) -> Failure | None:
        """An ``error``: fatal before ``session.started`` or for a fatal code; else logged."""
        error = evt.error
        code = error.code or error.type or "error"
        detail = f"{error.message or ''}" + (f" (param {error.param})" if error.param else "")
        if not self._session_started_on_connection and not self._audio_ready:
            logger.error(f"{self} GPT-Live refused session.start: {code}: {detail}")
            return Failure(Stage.CONFIGURE, code, detail)
        if code in FATAL_ERROR_CODES:
            logger.error(f"{self} GPT-Live error {code}: {detail}")
            return Failure(self._stage(), code, detail)
        await self._on_command_error(code, detail, error.client_event_id)
        return None

    async def _on_command_error(self, code: str, detail: str, event_id: str | None) -> None:
        """A client event was refused (the call goes on); the subclass may react."""
        logger.warning(f"{self} GPT-Live error {code} (the call goes on): {detail}")

    async def _handle_evt_session_closed(self, evt: events.SessionClosedEvent):
        self._closed_reason = evt.reason
        if evt.usage is not None:
            self.live_usage.reported(evt.usage.seconds)
        self._session_started = False
        self._session_closed_event.set()
        if evt.reason != "close_requested" and not self._ended:
            logger.warning(f"{self} GPT-Live closed the session ({evt.reason})")
            websocket = self._websocket
            if websocket is not None:  # the receive loop ends and decides what next
                self.create_task(websocket.close(), "live-closed")

    async def _report_usage(self, usage: events.Usage):
        self.live_usage.reported(usage.seconds)

    #
    # the audio stream's watchdog
    #

    def _audio_arrived(self, quiet: bool) -> None:
        """Audio came: a session that streams continuously must keep doing so."""
        if quiet:
            self._streams_continuously = True
        if self._streams_continuously:
            self._stream.arm(Failure(Stage.RESPOND, "stalled"), STREAM_STALL_SECS)

    async def _stream_stalled(self, failure: Failure) -> None:
        websocket = self._websocket
        if websocket is None or self._ended:
            return
        logger.warning(f"{self} no audio from GPT-Live for {STREAM_STALL_SECS:g} s")
        self._stalled = True
        await websocket.close()  # the receive loop ends and reconnects

    #
    # reconnecting, failing
    #

    async def _reconnect(self, rotation: bool = False) -> None:
        """Start a new session with the conversation so far; fall back if it cannot open."""
        if rotation:
            self.rotations += 1
        else:
            self.reconnects += 1
        await self._close_socket()
        self._forget_session()
        self._connect_failed = None
        await self._connect()
        if self._websocket is None and not self._ended:
            await self._fatal(self._connect_failure(Stage.ROTATE if rotation else Stage.RECONNECT))

    async def _missed(self, failure: Failure) -> None:
        logger.error(f"{self} {failure}: the session stalled")
        await self._fatal(failure)

    async def _fatal(self, failure: Failure) -> None:
        """The API is gone for this call: fallback line or transfer, never dead air.

        Before the call is known, the failure waits for it.
        """
        if self._pending_failure is not None or self._ended:
            return
        logger.error(f"{self} GPT-Live unusable ({failure}); falling back")
        self._pending_failure = failure
        self._stop_deadlines()
        await self._close_socket()
        await self._fall_back(failure)

    def _stop_deadlines(self) -> None:
        self._configured.disarm()
        self._stream.disarm()

    async def _close_socket(self) -> None:
        """Close the session's socket, if any, whatever state it is in."""
        websocket, self._websocket = self._websocket, None
        self.live_usage.closed()
        if websocket is not None:
            with contextlib.suppress(Exception):
                await websocket.close()

    async def _close_session(self):
        """Ask the server to close the session; wait briefly for ``session.closed``."""
        if self._websocket is None or not self._session_started:
            return
        self._session_closed_event.clear()
        await self.send_client_event(events.SessionCloseEvent())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._session_closed_event.wait(), CLOSE_WAIT_SECS)

    async def stop(self, frame):
        """Close the session (briefly waiting for its final usage) and disconnect.

        Args:
            frame: The end frame.
        """
        self._ended = True
        self._stop_deadlines()
        await super().stop(frame)

    async def cancel(self, frame):
        """Disconnect at once.

        Args:
            frame: The cancel frame.
        """
        self._ended = True
        self._stop_deadlines()
        await self._close_open_turns()  # the transcript keeps what was said so far
        await super().cancel(frame)

    async def _disconnect(self):
        self._ended = True
        self._stop_deadlines()
        self.live_usage.closed()
        await super()._disconnect()


def _event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:20]}"
