#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The websocket server: ``RealtimeEmulator``, its handshake checks and its fault injection."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from .config import DEFAULT_INSTRUCTIONS
from .records import ClientEventError, RejectedHandshake, Reply, ServerEventError
from .session import EmulatedSession
from .validation import prepare_validators

REALTIME_PATH = "/v1/realtime"
"""The only websocket path the emulator accepts."""

ReplySource = (
    list[Reply] | Callable[[EmulatedSession, str], "Reply | None | Awaitable[Reply | None]"]
)
"""Scripted replies: a list consumed in order, or a ``(session, trigger)`` callable."""


class RealtimeEmulator:
    """A local websocket server speaking the OpenAI Realtime API (GA protocol).

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
        rejected_handshakes: Every refused handshake (auth, unknown path, injected faults).
        handshake_attempts: How many websocket handshakes were attempted.
        ttfb_ms, send_rate, audio_chunk_ms, vad_threshold: As passed to the
            constructor; may be changed at any time and apply to the next response
            (or the next audio window, for ``vad_threshold``).

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
            api_key: If set, the bearer token must be exactly this key.
            voice: The default session voice.
            instructions: The default session instructions.
            default_reply: The reply used when no scripted one is left
                (``Reply("I heard you.")``).
            transcription_delay_ms: Delay of input transcription events after the
                commit; 0 sends them right after the user item.
            send_rate_limits: Send ``rate_limits.updated`` after each ``response.done``.
            max_message_size: Largest client message accepted, in bytes.
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

        self.sessions: list[EmulatedSession] = []
        self.validation_errors: list[ClientEventError] = []
        self.server_event_errors: list[ServerEventError] = []
        self.rejected_handshakes: list[RejectedHandshake] = []
        self.internal_errors: list[BaseException] = []
        self.handshake_attempts = 0

        self._server: Server | None = None
        self._fail_count = 0
        self._fail_status = 500

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The websocket URL to use instead of ``wss://api.openai.com/v1/realtime``.

        The client appends ``?model=...``.
        """
        if self._server is None:
            raise RuntimeError("RealtimeEmulator is not started")
        return f"ws://{self.host}:{self.port}{REALTIME_PATH}"

    @property
    def started(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    async def start(self) -> None:
        """Start listening (resolves ``port`` when it was 0)."""
        if self._server is not None:
            return
        prepare_validators()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=self.max_message_size,
            close_timeout=2,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.debug(f"Realtime emulator listening on {self.url}")

    async def stop(self) -> None:
        """Close every session and stop the server; returns when everything has finished."""
        if self._server is None:
            return
        server, self._server = self._server, None
        for session in self.open_sessions:
            try:
                await asyncio.wait_for(session.flush(), 2)
            except TimeoutError:
                logger.debug(f"Realtime emulator: {session.id} did not drain before stop")
        server.close()
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
    def open_sessions(self) -> list[EmulatedSession]:
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

    async def wait_for_session(self, index: int = 0, timeout: float = 5.0) -> EmulatedSession:
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

    def fail_next_connections(self, n: int, status: int = 500) -> None:
        """Refuse the next ``n`` websocket handshakes with HTTP ``status``.

        Args:
            n: How many handshakes to refuse.
            status: The HTTP status to answer with.
        """
        self._fail_count = n
        self._fail_status = status

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

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshake_attempts += 1
        refusal = self._refusal(request)
        if refusal is None:
            return None
        status, reason, body = refusal
        loop = asyncio.get_running_loop()
        self.rejected_handshakes.append(
            RejectedHandshake(status=status, reason=reason, path=request.path, at=loop.time())
        )
        logger.debug(f"Realtime emulator: refusing handshake with {status} ({reason})")
        response = connection.respond(status, json.dumps(body) + "\n")
        response.headers["Content-Type"] = "application/json"
        return response

    def _refusal(self, request: Request) -> tuple[int, str, dict] | None:
        """Return why a handshake is refused (status, reason, body), or None to accept it."""
        path = urlsplit(request.path).path
        if path != REALTIME_PATH:
            return (
                404,
                "unknown path",
                {"error": {"type": "invalid_request_error", "message": f"Invalid URL ({path})"}},
            )
        if self._fail_count > 0:
            self._fail_count -= 1
            return (
                self._fail_status,
                "injected fault",
                {"error": {"type": "server_error", "message": "The server had an error."}},
            )
        authorization = request.headers.get("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return (
                401,
                "missing bearer token",
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": None,
                        "message": "You didn't provide an API key. You need to provide your API "
                        "key in an Authorization header using Bearer auth.",
                    }
                },
            )
        if self.api_key is not None and token != self.api_key:
            return (
                401,
                "wrong api key",
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                        "message": "Incorrect API key provided.",
                    }
                },
            )
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
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
