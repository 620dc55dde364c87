#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""GPT-Live on the emulator's port: ``/v1/live/sessions``, its handshake and its knobs.

``LiveEmulator`` is a base of ``RealtimeEmulator``: one server, the same ``replies``
and ``transcripts``, serves the Live protocol at ``emulator.live_url``
(``ws://HOST:PORT/v1/live/sessions``) beside Realtime at ``emulator.url``. Live
sessions (``LiveSession``) are in ``emulator.sessions`` with the Realtime ones (so
``drop_connections``, ``stop``, ``wait_for_session`` and ``Scenario.tool_calls`` see
them) and in ``emulator.live_sessions``.

The behaviour, in brief (each module's docstring has the details):

- Handshake: no query string (``?model=`` is refused 400: the model goes in
  ``session.start``), ``Authorization: Bearer`` as on ``/v1/realtime`` (401 otherwise;
  ``api_key`` if set). ``refuse_handshakes`` and ``hang_handshakes`` count one
  countdown across both paths: "the next n handshakes", Realtime or Live.
- Validation (``live_validation``): every client event against
  ``openai.types.live.ClientEvent`` (strict types, unknown fields refused; the three
  context appends must carry ``delegation_id``, null or not). An invalid one gets an
  ``error`` (``error.code``/``param``/``message``, ``client_event_id`` when the event
  had an ``event_id``) and lands in ``emulator.validation_errors``; the session goes
  on. Every server event sent is checked against ``openai.types.live.ServerEvent``
  (nested Responses events against ``ResponseStreamEvent``); failures land in
  ``server_event_errors``.
- ``session.start`` must come first (anything else: ``error`` ``session_not_started``;
  a second one: ``session_already_started``). The model must be a ``gpt-live...`` one
  not in ``retired_models`` (else ``model_not_found``, param ``session.model``); G.711
  formats must say rate 8000; a string voice must be a built-in one; ``input`` at most
  128 messages of one text part each. Decisions delegation, audio fixtures and
  ``decision.*`` events are not emulated (``error`` ``not_emulated``). The answer is
  ``session.started`` with the resolved ``SessionResource``: the start configuration
  plus ``id``, ``expires_at``, ``status``, the default format ``audio/pcm`` 24000, the
  emulator's ``voice`` (``marin``), delegation ``client`` when none was given,
  ``store`` false. Its ``audio.format`` serves both directions (``live_audio``).
- ``session.update`` (delegation settings, triggers) merges and answers
  ``session.updated``; a different delegation type is refused (param
  ``session.delegation.type``); startup fields (model, audio, instructions, input) are
  not update fields (``unknown_parameter``).
- Caller audio (``live_input``): an energy VAD on the appended audio; a caller turn
  ends after ``live_turn_silence_ms``; its scripted transcript goes out as
  ``session.input_transcript.delta`` fragments on 200 ms frames; then the model
  answers (trigger ``"vad"``). Caller speech while the model speaks stops the model
  at once (barge-in: the turn is ``interrupted``; no client truncation exists).
  ``session.input_audio.mute``/``unmute`` are acknowledged; muted audio is silence.
- Model output (``live_output``): continuous ``session.output_audio.delta`` from
  ``session.started`` on, silence between turns at real-time pace (``live_silence``),
  speech at ``send_rate`` times real time with ``session.output_transcript.delta``
  just ahead. ``session.commentary.append`` makes the model speak (trigger
  ``"commentary"``; with no scripted reply left it speaks the commentary itself);
  ``session.thinking.append`` and ``session.instructions.append`` are recorded
  (``contexts``) and acknowledged, silent.
- Tools (``live_delegation``): a scripted ``Reply(function_call=...)`` delegates,
  through the Responses backend (``response.event`` envelopes, then the client's
  ``response.item.create`` + ``response.create``) or the client
  (``session.delegation.created`` target ``client``, answered by commentary). A
  scripted function the session's Responses tools lack is not called and lands in
  ``validation_errors`` (``unknown_tool``). A scripted ``Reply(mcp_call=...)`` makes the
  Responses backend list and call the session's MCP server (``live_mcp``: Responses
  ``mcp_list_tools``/``mcp_call`` items, approvals answered by ``mcp_approval_response``).
- ``LiveSession.conversation`` is the conversation as the model holds it: the startup
  ``input`` messages, the caller's transcripts, what each model turn actually said.
- ``session.close``: queued turns dropped, the turn being spoken finishes (at most
  10 s), then ``session.closed`` (reason ``close_requested``, the session, usage,
  ``client_event_id``) and a normal close (1000). At ``session_max_secs`` after
  connecting: ``session.closed`` reason ``expired``, then close.
- Usage is deterministic: ``usage.seconds`` = whole seconds of input audio appended
  (``session.usage.updated`` every ``live_usage_interval_ms`` of it, and in
  ``session.closed``).

Faults: the shared knobs ``refuse_handshakes``, ``hang_handshakes``,
``drop_connections``, ``ttfb_ms``, ``stall_next_responses`` (Live: the next n model
turns send silence only for ``secs``; with ``inf`` until a caller turn drops them),
``session_max_secs``, ``retired_models``; and the Live ones below:
``reject_session_starts``, ``close_on_next_turns`` (``session.closed`` ``content`` or
another reason instead of a turn), ``fail_next_delegations`` (``response.failed``)
and ``end_live_sessions`` (``session.closed`` now, e.g. ``expired``). Per session:
``LiveSession.end_session``, ``send_error``, ``send_raw``, ``close``, ``abort``.
"""

import asyncio
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from .faults import Refused, bearer_refusal, handshake_error_body
from .live_host import LiveHost
from .live_records import DelegationFailure, LiveFaultPlan, SessionStartRejection
from .live_session import LiveSession
from .live_validation import prepare_live_validators

LIVE_PATH = "/v1/live/sessions"
"""The websocket path of GPT-Live sessions."""

SESSION_CLOSE_REASONS = (
    "close_requested",
    "expired",
    "content",
    "remote_hangup",
    "connection_lost",
)
"""The reasons a ``session.closed`` may give."""


class LiveEmulator:
    """The GPT-Live side of ``RealtimeEmulator`` (a base class; the emulator provides the rest).

    Attributes:
        live_sessions: Every Live session, in connection order (also in ``sessions``).
        live_faults: What the Live fault methods have armed (``LiveFaultPlan``).
        live_silence: Whether Live sessions stream silence between model turns, at
            real-time pace, as the real model does (default True). Settable at runtime.
        live_turn_silence_ms: Caller silence that ends a caller turn (default 500).
        live_usage_interval_ms: Input audio between ``session.usage.updated`` events
            (default 5000).
    """

    if TYPE_CHECKING:
        host: str
        port: int
        api_key: str | None
        sessions: list[Any]
        internal_errors: list[BaseException]

        def _refuse(
            self,
            connection: ServerConnection,
            request: Request,
            status: int,
            reason: str,
            body: dict,
        ) -> Any: ...

    def _init_live(self) -> None:
        self.live_sessions: list[LiveSession] = []
        self.live_faults = LiveFaultPlan()
        self.live_silence = True
        self.live_turn_silence_ms = 500
        self.live_usage_interval_ms = 5000
        prepare_live_validators()

    @property
    def live_url(self) -> str:
        """The websocket URL to use instead of ``wss://api.openai.com/v1/live/sessions``."""
        return f"ws://{self.host}:{self.port}{LIVE_PATH}"

    @property
    def open_live_sessions(self) -> list[LiveSession]:
        """Live sessions whose socket is still open."""
        return [s for s in self.live_sessions if not s.closed]

    async def wait_for_live_session(self, index: int = 0, timeout: float = 5.0) -> LiveSession:
        """Wait until Live session number ``index`` (0-based) has connected.

        Args:
            index: Which Live session, in connection order.
            timeout: Seconds before ``TimeoutError``.

        Returns:
            The session.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.live_sessions) <= index:
            if loop.time() >= deadline:
                raise TimeoutError(f"Live session #{index} did not connect within {timeout}s")
            await asyncio.sleep(0.005)
        return self.live_sessions[index]

    # -- Live faults ---------------------------------------------------------------

    def reject_session_starts(
        self,
        n: int,
        param: str = "session",
        code: str = "invalid_value",
        message: str | None = None,
    ) -> None:
        """Reject the next ``n`` valid ``session.start`` events.

        Each gets an ``error`` (type ``invalid_request_error``, with ``param``, ``code``
        and the client's event id as ``client_event_id``) and no ``session.started``;
        the socket stays open and the session unstarted (another ``session.start`` may
        follow).

        Args:
            n: How many, counted across sessions (0 disarms; arming again replaces).
            param: The parameter the error names, e.g. ``"session.model"``.
            code: The error code.
            message: The message; None for ``"Invalid value for '<param>'."``.

        Raises:
            ValueError: If ``n`` is negative.
        """
        self.live_faults.session_start_rejections.arm(
            n, SessionStartRejection(param, code, message)
        )

    def close_on_next_turns(self, n: int, reason: str = "content") -> None:
        """End the session at the next ``n`` model turns, instead of speaking.

        When such a turn would start, the session sends ``session.closed`` with
        ``reason`` (``content``: the safety filter; ``expired``, ``remote_hangup``,
        ``connection_lost`` also work) and closes the socket normally.

        Args:
            n: How many turns, counted across sessions (0 disarms).
            reason: The ``session.closed`` reason.

        Raises:
            ValueError: If ``n`` is negative or ``reason`` is not a close reason.
        """
        if reason not in SESSION_CLOSE_REASONS:
            raise ValueError(f"reason must be one of {SESSION_CLOSE_REASONS}, got {reason!r}")
        self.live_faults.turn_closes.arm(n, reason)

    def fail_next_delegations(
        self, n: int, code: str = "server_error", message: str | None = None
    ) -> None:
        """Make the next ``n`` delegated Responses responses fail.

        ``response.created`` then ``response.failed`` (``error.code`` = ``code``), no
        output; the model says nothing for that turn. A code the Responses
        ``ResponseError`` does not have (``insufficient_quota``) comes as a Live
        ``error`` event of that type instead, and ``response.failed`` has no error.

        Args:
            n: How many, counted across sessions (0 disarms).
            code: ``server_error``, ``rate_limit_exceeded``, ``insufficient_quota`` ...
            message: The message; None for the code's usual one.

        Raises:
            ValueError: If ``n`` is negative.
        """
        self.live_faults.delegation_failures.arm(n, DelegationFailure(code, message))

    async def end_live_sessions(self, reason: str = "expired") -> None:
        """End every open Live session now: ``session.closed`` with ``reason``, then close.

        Args:
            reason: The ``session.closed`` reason.

        Raises:
            ValueError: If ``reason`` is not a close reason.
        """
        if reason not in SESSION_CLOSE_REASONS:
            raise ValueError(f"reason must be one of {SESSION_CLOSE_REASONS}, got {reason!r}")
        await asyncio.gather(*(s.end_session(reason) for s in self.open_live_sessions))

    # -- the handshake and the connection (called by the server) -------------------------

    def _live_refusal(self, request: Request, injected: Any) -> Refused | None:
        """Why a Live handshake is refused (status, reason, body), or None to accept it.

        Args:
            request: The upgrade request.
            injected: The ``HandshakeRefusal`` an armed ``refuse_handshakes`` took, if any.
        """
        if injected is not None:
            body = handshake_error_body(injected.status, injected.code, injected.message)
            return injected.status, "injected fault", body
        if urlsplit(request.path).query:
            body = handshake_error_body(
                400,
                message="Live sessions take no query parameters: send the model in session.start.",
            )
            return 400, "query string", body
        return bearer_refusal(request.headers, self.api_key)

    @staticmethod
    def _is_live(path: str) -> bool:
        return urlsplit(path).path == LIVE_PATH

    async def _handle_live(self, websocket: ServerConnection) -> None:
        session = LiveSession(cast(LiveHost, self), websocket)
        self.live_sessions.append(session)
        self.sessions.append(session)
        logger.debug(f"Live emulator: {session.id} connected")
        try:
            session._open()
            await session._run()
        except Exception as exc:
            logger.exception(f"Live emulator: {session.id} failed")
            self.internal_errors.append(exc)
        finally:
            await session._shutdown()
            logger.debug(f"Live emulator: {session.id} closed")
