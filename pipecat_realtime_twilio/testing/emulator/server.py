#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The websocket server: ``RealtimeEmulator``, its handshake checks and its fault injection."""

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from .config import DEFAULT_INSTRUCTIONS
from .faults import (
    FaultPlan,
    HandshakeHang,
    HandshakeRefusal,
    Refused,
    SessionUpdateRejection,
    TranscriptionFailure,
    azure_key_refusal,
    bearer_refusal,
    check_response_fault,
    check_secs,
    handshake_error_body,
    retired_model,
    unknown_path,
)
from .live_server import LiveEmulator
from .live_session import LiveSession
from .plain_http import tracked_connection
from .records import ClientEventError, HungHandshake, RejectedHandshake, Reply, ServerEventError
from .responses_api import ResponsesApi
from .session import EmulatedSession, requested_model
from .validation import prepare_validators

REALTIME_PATH = "/v1/realtime"
"""The only websocket path the emulator accepts (OpenAI's)."""

AZURE_REALTIME_PATH = "/openai/v1/realtime"
"""The only websocket path an ``azure=True`` emulator accepts (Azure OpenAI's v1 surface)."""

ReplySource = (
    list[Reply] | Callable[[EmulatedSession, str], "Reply | None | Awaitable[Reply | None]"]
)
"""Scripted replies: a list consumed in order, or a ``(session, trigger)`` callable."""


class RealtimeEmulator(LiveEmulator):
    """A local websocket server speaking the OpenAI Realtime API (GA protocol), and GPT-Live.

    Replies and input transcripts are scripted. ``replies`` (a list) and
    ``transcripts`` are consumed in order across all sessions; both lists can be
    extended at any time through the ``replies`` and ``transcripts`` attributes.

    Attributes:
        sessions: One ``EmulatedSession`` per accepted websocket, in connection order.
        validation_errors: Every invalid client event, across sessions.
        server_event_errors: Every server event the emulator produced that failed
            ``RealtimeServerEvent`` validation (should always stay empty).
        internal_errors: Exceptions raised by the emulator itself while handling
            client events (should always stay empty).
        rejected_handshakes: Every refused handshake (auth, unknown path, retired
            model, injected faults), with its status and ``error.code``.
        hung_handshakes: Every handshake left unanswered by ``hang_handshakes``.
        handshake_attempts: How many websocket handshakes were attempted.
        ttfb_ms, send_rate, audio_chunk_ms, vad_threshold: As passed to the
            constructor; may be changed at any time and apply to the next response
            (or the next audio window, for ``vad_threshold``).
        session_max_secs: The session cap, as passed to the constructor; a change
            applies to the sessions that connect afterwards.
        retired_models: Models the API no longer serves: a handshake whose
            ``?model=`` is one is refused 404 ``model_not_found``, and a
            ``session.update`` naming one as ``audio.input.transcription.model`` is
            rejected as a whole. Empty unless set; may be changed at any time.
        azure: Whether it stands in for Azure OpenAI's v1 endpoint (see ``__init__``).
        faults: What the fault methods have armed (``FaultPlan``).
        responses_api: The Responses API's ``POST /v1/responses`` on the same port
            (``ResponsesApi``: its requests, scripted outputs and faults), for
            clients of ``http://HOST:PORT/v1`` (``http_url``).

    Faults, each armed for the next ``n`` occasions across all sessions (arming one
    again replaces what is left of it; ``n=0`` disarms it):

    - ``refuse_handshakes``: HTTP errors at the upgrade, with OpenAI's JSON body
      (``fail_next_connections`` is the older name).
    - ``hang_handshakes``: the upgrade response never comes (or only after a while).
    - ``fail_next_responses``: responses end ``failed`` (quota, rate limit, server
      error) or ``incomplete`` (``max_output_tokens``, ``content_filter``).
    - ``stall_next_responses``: responses send nothing for a while (no first byte).
    - ``reject_session_updates``: ``session.update`` gets an ``error``, nothing applied.
    - ``fail_transcriptions``: input transcriptions end ``.failed``.
    - the session cap (``session_max_secs``), ``drop_connections`` and, per session,
      ``EmulatedSession.send_error``, ``send_raw`` and ``close``.

    Example::

        emulator = RealtimeEmulator(
            replies=[
                Reply("Hi, this is the bot."),
                Reply(function_call=FunctionCall("hang_up", {})),
            ],
            transcripts=["Hello?"],
        )
        await emulator.start()
        ...  # connect a client to emulator.url + "?model=gpt-realtime"
        await emulator.wait_for(lambda: len(emulator.sessions[0].responses) == 2)
        await emulator.stop()
    """

    def __init__(
        self,
        *,
        replies: ReplySource | None = None,
        transcripts: list[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ttfb_ms: float = 0,
        send_rate: float = 4.0,
        audio_chunk_ms: int = 100,
        vad_threshold: int = 500,
        vad_start_ms: int = 60,
        api_key: str | None = None,
        voice: str = "marin",
        instructions: str = DEFAULT_INSTRUCTIONS,
        default_reply: Reply | None = None,
        transcription_delay_ms: float = 0,
        send_rate_limits: bool = True,
        max_message_size: int = 16 * 2**20,
        session_max_secs: float = 3600,
        retired_models: Iterable[str] = (),
        azure: bool = False,
    ) -> None:
        """Initialize the emulator (call ``start()`` or use ``async with`` to serve).

        Args:
            replies: Scripted responses: a list consumed in order, or a callable
                ``(session, trigger) -> Reply | None`` (it may also return an awaitable)
                where trigger is ``"response.create"`` or ``"vad"``. When the list is
                exhausted or the callable returns None, ``default_reply`` is used.
            transcripts: What the caller says, in order, reported as input audio
                transcriptions (when the session enables transcription). When
                exhausted, ``"(caller speech, N ms)"``.
            host: Interface to bind.
            port: Port to bind; 0 picks a free one.
            ttfb_ms: Delay between a response's trigger and its first event
                (``response.created``). Settable at runtime.
            send_rate: Audio is streamed at this multiple of real time; 0 or ``inf``
                sends as fast as possible. Settable at runtime.
            audio_chunk_ms: Milliseconds of audio per ``response.output_audio.delta``.
            vad_threshold: RMS level (int16 scale) above which a 20 ms window counts as
                speech, at the session's default ``threshold`` of 0.5 (the level scales
                with the session's ``threshold``).
            vad_start_ms: Milliseconds of continuous speech before ``speech_started``.
            api_key: If set, the key (the bearer token; with ``azure``, the ``api-key``
                header) must be exactly this.
            voice: The default session voice.
            instructions: The default session instructions.
            default_reply: The reply used when no scripted one is left
                (``Reply("I heard you.")``).
            transcription_delay_ms: Delay of input transcription events after the
                commit; 0 sends them right after the user item.
            send_rate_limits: Send ``rate_limits.updated`` after each ``response.done``.
            max_message_size: Largest client message accepted, in bytes.
            session_max_secs: How long a session lasts: ``session.created`` says so in
                ``expires_at`` (unix seconds), and ``session_max_secs`` after the
                connection (on the loop clock) the emulator sends an ``error``
                ``session_expired`` and closes the socket normally (code 1000). The real
                server's cap is 60 minutes.
            retired_models: Models the API no longer serves (see ``retired_models``).
            azure: Behave as Azure OpenAI's v1 endpoint: serve ``/openai/v1/realtime``
                (the deployment as ``?model=``, or a preview URL's ``?deployment=``),
                require the key in an ``api-key`` header (a Bearer key alone is refused
                401), and word refusals as Azure does (``{"error": {"code": "401",
                "message"}}``; a retired model is a missing deployment, 404
                ``DeploymentNotFound``). Injected refusals keep OpenAI's body.

        Raises:
            ValueError: If ``session_max_secs`` is not a positive, finite number.
        """
        self.replies: list[Reply] = []
        self.reply_factory: Callable[..., Any] | None = None
        if callable(replies):
            self.reply_factory = replies
        elif replies is not None:
            self.replies = list(replies)
        self.transcripts: list[str] = list(transcripts or [])
        self.host = host
        self.port = port
        self.ttfb_ms = ttfb_ms
        self.send_rate = send_rate
        self.audio_chunk_ms = audio_chunk_ms
        self.vad_threshold = vad_threshold
        self.vad_start_ms = vad_start_ms
        self.api_key = api_key
        self.voice = voice
        self.instructions = instructions
        self.default_reply = default_reply or Reply("I heard you.")
        self.transcription_delay_ms = transcription_delay_ms
        self.send_rate_limits = send_rate_limits
        self.max_message_size = max_message_size
        if not (0 < session_max_secs < math.inf):
            raise ValueError(f"session_max_secs must be positive and finite: {session_max_secs}")
        self.session_max_secs = session_max_secs
        self.retired_models: set[str] = set(retired_models)
        self.azure = azure
        self.faults = FaultPlan()
        self.responses_api = ResponsesApi(self)

        self.sessions: list[EmulatedSession | LiveSession] = []  # Live ones: live_server
        self.validation_errors: list[ClientEventError] = []
        self.server_event_errors: list[ServerEventError] = []
        self.rejected_handshakes: list[RejectedHandshake] = []
        self.hung_handshakes: list[HungHandshake] = []
        self.internal_errors: list[BaseException] = []
        self.handshake_attempts = 0
        self._init_live()

        self._server: Server | None = None
        self._stopping = asyncio.Event()
        self._connections: set[ServerConnection] = set()  # every TCP connection still open

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The websocket URL to use instead of ``wss://api.openai.com/v1/realtime``.

        With ``azure``, the one to use instead of an Azure resource's
        ``wss://<resource>.openai.azure.com/openai/v1/realtime``. The client appends
        ``?model=...``.
        """
        if self._server is None:
            raise RuntimeError("RealtimeEmulator is not started")
        return f"ws://{self.host}:{self.port}{self.path}"

    @property
    def http_url(self) -> str:
        """The base URL of the emulator's HTTP API: ``http://HOST:PORT/v1``.

        With ``azure``, ``.../openai/v1``. What ``OPENAI_BASE_URL`` (or the ``openai``
        client's ``base_url``) would be.
        """
        return self.url.replace("ws://", "http://", 1).removesuffix("/realtime")

    @property
    def path(self) -> str:
        """The websocket path served: ``/v1/realtime``, with ``azure`` ``/openai/v1/realtime``."""
        return AZURE_REALTIME_PATH if self.azure else REALTIME_PATH

    @property
    def started(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    async def start(self) -> None:
        """Start listening (resolves ``port`` when it was 0)."""
        if self._server is not None:
            return
        prepare_validators()
        self._stopping = asyncio.Event()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            create_connection=self._connection_class(),
            max_size=self.max_message_size,
            close_timeout=2,
            # No server-side limit on the opening handshake: a hung handshake
            # (``hang_handshakes``) lasts until the client gives up. ``stop()`` ends any.
            open_timeout=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.debug(f"Realtime emulator listening on {self.url}")

    async def stop(self) -> None:
        """Close every session and stop the server; returns when everything has finished."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping.set()  # hung handshakes end (refused 503)
        for session in self.open_sessions:
            try:
                await asyncio.wait_for(session.flush(), 2)
            except TimeoutError:
                logger.debug(f"Realtime emulator: {session.id} did not drain before stop")
        server.close()
        # Connections that never sent their HTTP request: nothing else would end them.
        for connection in list(self._connections):
            if connection.request is None and connection.transport is not None:
                connection.transport.abort()
        await server.wait_closed()
        for session in self.sessions:
            if not session._closed.is_set():
                await session._shutdown()
        logger.debug("Realtime emulator stopped")

    async def __aenter__(self) -> "RealtimeEmulator":
        """Start the emulator."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop the emulator."""
        await self.stop()

    # -- helpers for tests ---------------------------------------------------------

    @property
    def open_sessions(self) -> list[EmulatedSession | LiveSession]:
        """Sessions whose socket is still open."""
        return [s for s in self.sessions if not s.closed]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,
        *,
        interval: float = 0.005,
        description: str | None = None,
    ) -> None:
        """Poll ``predicate`` until it returns true.

        Args:
            predicate: A zero-argument callable; exceptions count as "not yet".
            timeout: Seconds before giving up.
            interval: Seconds between polls.
            description: Used in the error message (defaults to the predicate's name).

        Raises:
            TimeoutError: If the predicate didn't become true in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: Exception | None = None
        while True:
            try:
                if predicate():
                    return
                last_error = None
            except Exception as exc:  # noqa: BLE001 - "not yet" for the poller
                last_error = exc
            if loop.time() >= deadline:
                what = description or getattr(predicate, "__qualname__", repr(predicate))
                detail = f" (last error: {last_error!r})" if last_error else ""
                raise TimeoutError(
                    f"RealtimeEmulator.wait_for: condition {what} not met "
                    f"within {timeout}s{detail}; "
                    f"{len(self.sessions)} session(s), "
                    f"{len(self.validation_errors)} invalid client event(s)"
                )
            await asyncio.sleep(interval)

    async def wait_for_session(
        self, index: int = 0, timeout: float = 5.0
    ) -> EmulatedSession | LiveSession:
        """Wait until session number ``index`` (0-based) has connected.

        Args:
            index: Which session, in connection order.
            timeout: Seconds before giving up.

        Returns:
            The session.
        """
        await self.wait_for(
            lambda: len(self.sessions) > index, timeout, description=f"session #{index} connected"
        )
        return self.sessions[index]

    # -- faults ----------------------------------------------------------------------

    def refuse_handshakes(
        self, n: int, status: int, code: str | None = None, message: str | None = None
    ) -> None:
        """Refuse the next ``n`` websocket handshakes with HTTP ``status``.

        The body is JSON shaped like OpenAI's, ``{"error": {"message", "type", "code",
        "param": null}}``; the client sees it before any websocket event. With
        ``code`` None, the status picks it: 401 ``invalid_api_key``
        (``invalid_request_error``), 403 ``unsupported_country_region_territory``
        (``request_forbidden``), 404 ``model_not_found`` (naming the ``?model=``), 429
        ``rate_limit_exceeded`` (type ``requests``), 500/502/503 ``server_error``.
        A known ``code`` brings its own type and message: e.g. a 429 with
        ``insufficient_quota`` has type ``insufficient_quota``. Refusals are recorded
        in ``rejected_handshakes`` (reason ``"injected fault"``). They come before
        the key is checked; an armed ``hang_handshakes`` comes first.

        Args:
            n: How many handshakes to refuse, counted across sessions (0 disarms;
                arming again replaces what is left).
            status: The HTTP status, 400 to 599.
            code: The ``error.code``; None for the status's usual one.
            message: The ``error.message``; None for the code's usual one.

        Raises:
            ValueError: If ``n`` is negative or ``status`` is not an HTTP error.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), got {status}")
        self.faults.refusals.arm(n, HandshakeRefusal(status, code, message))

    def fail_next_connections(self, n: int, status: int = 500) -> None:
        """Refuse the next ``n`` websocket handshakes (``refuse_handshakes`` with defaults).

        Args:
            n: How many handshakes to refuse.
            status: The HTTP status to answer with.
        """
        self.refuse_handshakes(n, status)

    def hang_handshakes(self, n: int, secs: float | None = None) -> None:
        """Leave the next ``n`` websocket handshakes unanswered.

        The TCP connection is accepted and the HTTP upgrade request read, but no
        response comes: the client's open timeout is what ends it (websockets'
        ``open_timeout``, 10 s by default, raises ``TimeoutError``). After ``secs``
        seconds, if the client is still waiting, the handshake is refused with 503
        (recorded in ``rejected_handshakes``, reason ``"hang expired"``). ``stop()``
        ends every hang (503). Each hang is recorded in ``hung_handshakes``.

        Args:
            n: How many handshakes to hang, counted across sessions (0 disarms;
                arming again replaces what is left).
            secs: How long to hang before the 503; None hangs until the client gives
                up or the emulator stops.

        Raises:
            ValueError: If ``n`` or ``secs`` is negative.
        """
        check_secs(secs, "secs")
        self.faults.hangs.arm(n, HandshakeHang(secs))

    def fail_next_responses(
        self, n: int, status: str = "failed", code: str = "insufficient_quota"
    ) -> None:
        """Make the next ``n`` responses fail or end short.

        Whatever triggers them (``response.create`` or the VAD), they consume their
        scripted reply as a normal response would (a failed response's reply is used
        up unplayed: script another one for a retry).

        - ``status="failed"``: ``response.created`` then ``response.done`` with
          ``status`` ``failed``, no output, and ``status_details`` ``{"type":
          "failed", "error": {"type", "code", "message"}}``; the type matches the
          code (``insufficient_quota``, ``requests`` for ``rate_limit_exceeded``,
          ``server_error``).
        - ``status="incomplete"``: ``code`` is the reason (``max_output_tokens`` or
          ``content_filter``). The response plays the first half of its reply (half
          the audio, half the words of the transcript, no function call), then ends
          with the item ``incomplete`` and ``status_details`` ``{"type":
          "incomplete", "reason": code}``.

        Args:
            n: How many responses, counted across sessions (0 disarms; arming again
                replaces what is left).
            status: ``"failed"`` or ``"incomplete"``.
            code: The error code (failed: ``insufficient_quota``,
                ``rate_limit_exceeded``, ``server_error``) or the reason (incomplete).

        Raises:
            ValueError: For another status, an unknown incomplete reason, or a negative ``n``.
        """
        self.faults.response_faults.arm(n, check_response_fault(status, code))

    def stall_next_responses(self, n: int, secs: float = float("inf")) -> None:
        """Make the next ``n`` responses send nothing at all for ``secs`` seconds.

        No ``response.created``, no audio: no first byte. Then the response proceeds
        normally (after the usual ``ttfb_ms``). With ``inf`` it never proceeds: only a
        ``response.cancel`` (or a barge-in) ends it, as a cancelled response
        (``response.created`` then ``response.done`` ``cancelled``), as the real
        server does. The response is active meanwhile (another ``response.create``
        gets ``conversation_already_has_active_response``). A stalled response
        consumes its scripted reply as a normal one does.

        Args:
            n: How many responses, counted across sessions (0 disarms; arming again
                replaces what is left).
            secs: How long each stalls; ``inf`` until cancelled.

        Raises:
            ValueError: If ``n`` or ``secs`` is negative.
        """
        check_secs(secs, "secs")
        self.faults.stalls.arm(n, secs)

    def reject_session_updates(
        self, n: int, param: str, code: str = "invalid_value", message: str | None = None
    ) -> None:
        """Reject the next ``n`` valid ``session.update`` events as a whole.

        Each gets an ``error`` (type ``invalid_request_error``) with ``param``,
        ``code`` and the client's ``event_id``, and nothing of it is applied: no
        ``session.updated``, the session keeps its previous configuration (at first
        ``audio/pcm`` at 24 kHz both ways). Events that fail validation are rejected
        anyway and don't count.

        Args:
            n: How many updates, counted across sessions (0 disarms; arming again
                replaces what is left).
            param: The parameter the error names, e.g. ``"session.audio.input.format"``.
            code: The error code.
            message: The error message; None for one naming ``param``
                (``"Invalid value for '<param>'."``).

        Raises:
            ValueError: If ``n`` is negative.
        """
        self.faults.session_update_rejections.arm(n, SessionUpdateRejection(param, code, message))

    def stall_session_updates(self, n: int) -> None:
        """Leave the next ``n`` valid ``session.update`` events unanswered.

        Nothing is applied and nothing is sent back (no ``session.updated``, no
        ``error``): a server that stalls while configuring. The session keeps its
        previous configuration.

        Args:
            n: How many updates, counted across sessions (0 disarms).

        Raises:
            ValueError: If ``n`` is negative.
        """
        self.faults.session_update_stalls.arm(n, True)

    def fail_transcriptions(
        self, n: int, code: str | None = "audio_unintelligible", message: str | None = None
    ) -> None:
        """Make the next ``n`` input audio transcriptions fail.

        Instead of ``...input_audio_transcription.delta``/``.completed``, the client
        gets ``conversation.item.input_audio_transcription.failed`` with the user
        item's ``item_id``, ``content_index`` 0 and ``error {type, code, message,
        param}``; the item's transcript stays None. A failed transcription uses up
        its scripted transcript. Only sessions with input transcription on
        transcribe.

        Args:
            n: How many transcriptions, counted across sessions (0 disarms; arming
                again replaces what is left).
            code: The error code; the type is ``transcription_error``. None sends
                what the real server sends for internal failures: type
                ``server_error``, no code, ``"Input transcription failed for item
                '<item_id>'."``.
            message: The error message; None for one matching the code.

        Raises:
            ValueError: If ``n`` is negative.
        """
        self.faults.transcription_failures.arm(n, TranscriptionFailure(code, message))

    async def drop_connections(self) -> None:
        """Abruptly close (TCP abort, no close frame) every open session socket.

        Returns once every dropped session has shut down (``closed_at`` is set).
        """
        dropped = self.open_sessions
        for session in dropped:
            logger.debug(f"Realtime emulator: dropping {session.id}")
            session.abort()
        for session in dropped:
            await session.wait_closed()

    # -- internals ---------------------------------------------------------------------

    def _next_reply(self, session: EmulatedSession, trigger: str) -> Any:
        if self.reply_factory is not None:
            return self.reply_factory(session, trigger)
        if self.replies:
            return self.replies.pop(0)
        return None

    def _next_transcript(self, audio_ms: float) -> str:
        if self.transcripts:
            return self.transcripts.pop(0)
        return f"(caller speech, {int(round(audio_ms))} ms)"

    def _connection_class(self) -> type[ServerConnection]:
        """Return a ``ServerConnection`` that keeps ``_connections`` up to date.

        A connection that starts with another method than ``GET`` is plain HTTP, for
        the Responses API (``plain_http``): the websocket side never sees it.
        """
        return tracked_connection(self._connections, self.responses_api.answer)

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        self.handshake_attempts += 1
        hang = self.faults.hangs.take()
        if hang is not None:
            return await self._hang(connection, request, hang)
        refusal = self._refusal(request)
        if refusal is None:
            return None
        status, reason, body = refusal
        return self._refuse(connection, request, status, reason, body)

    def _refuse(
        self, connection: ServerConnection, request: Request, status: int, reason: str, body: dict
    ) -> Response:
        loop = asyncio.get_running_loop()
        code = body["error"].get("code")
        self.rejected_handshakes.append(
            RejectedHandshake(
                status=status, reason=reason, path=request.path, at=loop.time(), code=code
            )
        )
        logger.debug(f"Realtime emulator: refusing handshake with {status} ({reason})")
        response = connection.respond(status, json.dumps(body) + "\n")
        del response.headers["Content-Type"]  # respond() labels the body text/plain
        response.headers["Content-Type"] = "application/json"
        return response

    async def _hang(
        self, connection: ServerConnection, request: Request, hang: HandshakeHang
    ) -> Response | None:
        """Hold the upgrade response back until the client leaves, ``secs`` pass or we stop."""
        loop = asyncio.get_running_loop()
        record = HungHandshake(path=request.path, started_at=loop.time(), secs=hang.secs)
        self.hung_handshakes.append(record)
        logger.debug(f"Realtime emulator: hanging a handshake ({hang.secs} s)")
        waits: dict[str, asyncio.Future[Any]] = {
            "client gave up": asyncio.ensure_future(
                asyncio.shield(connection.connection_lost_waiter)
            ),
            "emulator stopped": asyncio.ensure_future(self._stopping.wait()),
        }
        if hang.secs is not None and not math.isinf(hang.secs):
            waits["refused"] = asyncio.ensure_future(asyncio.sleep(hang.secs))
        try:
            done, _ = await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits.values():
                wait.cancel()
        record.outcome = next(name for name, wait in waits.items() if wait in done)
        record.ended_at = loop.time()
        logger.debug(f"Realtime emulator: hung handshake ended ({record.outcome})")
        body = handshake_error_body(503)
        if record.outcome == "client gave up":
            return connection.respond(503, json.dumps(body))  # nobody is there to read it
        reason = "hang expired" if record.outcome == "refused" else "emulator stopped"
        return self._refuse(connection, request, 503, reason, body)

    def _refusal(self, request: Request) -> Refused | None:
        """Return why a handshake is refused (status, reason, body), or None to accept it."""
        url = urlsplit(request.path)
        if self._is_live(request.path):
            return self._live_refusal(request, self.faults.refusals.take())
        if url.path != self.path:
            return unknown_path(url.path, azure=self.azure)
        model = requested_model({k: v[0] for k, v in parse_qs(url.query).items()})
        injected = self.faults.refusals.take()
        if injected is not None:
            body = handshake_error_body(
                injected.status, injected.code, injected.message, model=model
            )
            return injected.status, "injected fault", body
        check_key = azure_key_refusal if self.azure else bearer_refusal
        refused = check_key(request.headers, self.api_key)
        if refused is not None:
            return refused
        if model in self.retired_models:
            return retired_model(model, azure=self.azure)
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        if websocket.request is not None and self._is_live(websocket.request.path):
            return await self._handle_live(websocket)
        session = EmulatedSession(self, websocket)
        self.sessions.append(session)
        logger.debug(f"Realtime emulator: {session.id} connected (model {session.model})")
        try:
            session._open()
            await session._run()
        except Exception as exc:
            logger.exception(f"Realtime emulator: {session.id} failed")
            self.internal_errors.append(exc)
        finally:
            await session._shutdown()
            logger.debug(f"Realtime emulator: {session.id} closed")
