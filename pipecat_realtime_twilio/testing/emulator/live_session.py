#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""One Live connection: ``LiveSession``, the server side of a GPT-Live session.

The session records every event both ways, checks each client event against
``openai.types.live`` (``live_validation``), dispatches each valid one to
its ``_on_<type>`` handler, and ends the session (``session.closed``) when asked, at
its cap or on an armed fault. The client's commands (start, update, context appends,
mute, close) live in ``live_control``, caller audio in ``live_input``, the model's
speech in ``live_output`` and delegation in ``live_delegation``; the four are mixed
into ``LiveSession``.
"""

import asyncio
import contextlib
import copy
import json
from collections.abc import Awaitable
from typing import Any

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .faults import duration_text
from .live_audio import format_of
from .live_control import LiveControl
from .live_delegation import LiveDelegations
from .live_host import LiveHost
from .live_input import LiveInput
from .live_output import LiveOutput
from .live_records import LiveContext
from .live_validation import check_live_client_event, validate_live_server_event
from .records import ClientEvent, ClientEventError, ServerEvent, ServerEventError, new_id
from .validation import Problem

_APPENDS = {
    "session.instructions.append": "instructions",
    "session.thinking.append": "thinking",
    "session.commentary.append": "commentary",
}
_NOT_EMULATED = {
    "session.output_audio.fixture.play",
    "decision.create",
    "decision.item.create",
    "decision.item.delete",
}


class LiveSession(LiveControl, LiveInput, LiveOutput, LiveDelegations):
    """One accepted ``/v1/live/sessions`` websocket: the server side of a Live session.

    Attributes:
        id: The ``sess_...`` id.
        headers: All request headers (last value wins), names as the client sent them.
        authorization: The ``Authorization`` header as received.
        model: The model ``session.start`` named (None before).
        config: The resolved session (a ``SessionResource``: what ``session.started``
            and ``session.updated`` carried); ``{}`` before the start.
        started_at: ``loop.time()`` of ``session.started``, None before.
        client_events: Every client event as received, valid or not.
        sent_events: Every server event sent (``ServerEvent`` with ``sent_at``).
        input_audio: All appended audio, exactly as received.
        output_audio: All output audio sent, speech and silence, as sent.
        responses: The model turns (``LiveResponse``), in trigger order.
        caller_turns: The caller's turns (``CallerTurn``).
        delegations: Every delegation the model created (``LiveDelegation``).
        function_outputs: Every ``function_call_output`` the client queued.
        backend_items: Every other item of ``response.item.create``.
        contexts: Every instructions, thinking or commentary append (``LiveContext``).
        conversation: The conversation as the model holds it, ``(role, text)`` in
            order: the startup ``input`` messages, each caller turn's transcript
            (``user``) and what each model turn said (``assistant``, only the spoken
            part of an interrupted one).
        muted: Whether the client muted the input.
        close_reason: The ``session.closed`` reason sent, None if none was.
        opened_at: ``loop.time()`` when the socket was accepted.
        closed_at: ``loop.time()`` when it closed (either side), else None.
        max_secs: The session cap (the emulator's ``session_max_secs`` at connection).
    """

    def __init__(self, emulator: LiveHost, websocket: ServerConnection) -> None:
        """Initialize the session for an accepted websocket.

        Args:
            emulator: The emulator that owns the session.
            websocket: The accepted connection.
        """
        self._emulator = emulator
        self._ws = websocket
        self._loop = asyncio.get_running_loop()
        request = websocket.request
        assert request is not None
        self.id = new_id("sess")
        self.headers: dict[str, str] = dict(request.headers.raw_items())
        self.authorization: str | None = request.headers.get("Authorization")
        self.model: str | None = None
        self.config: dict = {}
        self.started_at: float | None = None
        self.client_events: list[ClientEvent] = []
        self.sent_events: list[ServerEvent] = []
        self.contexts: list[LiveContext] = []
        self.conversation: list[tuple[str, str]] = []
        self.muted = False
        self.close_reason: str | None = None
        self.opened_at: float = self._loop.time()
        self.closed_at: float | None = None
        self.max_secs: float = emulator.session_max_secs
        self._closing = False
        self._queue: asyncio.Queue[tuple[str, ServerEvent] | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        self._init_input()
        self._init_output()
        self._init_delegations()

    def __repr__(self) -> str:
        """Return a short description."""
        state = "closed" if self.closed_at is not None else "open"
        return f"<LiveSession {self.id} model={self.model!r} {state}>"

    # -- public ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the socket has closed."""
        return self.closed_at is not None

    @property
    def started(self) -> bool:
        """Whether ``session.started`` was sent."""
        return self.started_at is not None

    @property
    def audio_format(self) -> tuple[str, int]:
        """The session's audio format: ``(type, rate)``, e.g. ``("audio/pcmu", 8000)``."""
        return format_of((self.config.get("audio") or {}).get("format"))

    @property
    def instructions(self) -> str | None:
        """The startup instructions."""
        return self.config.get("instructions")

    @property
    def delegation(self) -> dict:
        """The resolved delegation configuration (``{"type": "client"}`` by default)."""
        return self.config.get("delegation") or {"type": "client"}

    @property
    def errors_sent(self) -> list[ServerEvent]:
        """Every ``error`` event sent to the client."""
        return self.sent_of_type("error")

    def events_of_type(self, event_type: str) -> list[ClientEvent]:
        """Return the received client events of one type, in arrival order."""
        return [e for e in self.client_events if e.get("type") == event_type]

    def sent_of_type(self, event_type: str) -> list[ServerEvent]:
        """Return the sent server events of one type, in send order."""
        return [e for e in self.sent_events if e.get("type") == event_type]

    async def send_event(self, event: dict) -> ServerEvent:
        """Push an arbitrary server event (validated and recorded like any other).

        Args:
            event: The event; an ``event_id`` is added if missing.

        Returns:
            The recorded event.
        """
        record = self._emit(event)
        await self.flush()
        return record

    async def send_error(
        self, type: str, code: str, message: str, *, param: str | None = None
    ) -> ServerEvent:
        """Push an ``error`` event to the client.

        Args:
            type: The error type, e.g. ``"server_error"``.
            code: The error code.
            message: The message.
            param: The related parameter, if any.

        Returns:
            The recorded event.
        """
        record = self._send_error(message, code, param=param, error_type=type)
        await self.flush()
        return record

    async def send_raw(self, text: str) -> None:
        """Push any text as a server message, valid or not (fault injection).

        Args:
            text: The websocket message.
        """
        record = ServerEvent({"_raw": text}, queued_at=self._loop.time())
        if self.closed_at is None:
            self._queue.put_nowait((text, record))
            await self.flush()

    async def flush(self) -> None:
        """Wait until every produced event has been written (or the socket closed)."""
        if self._closed.is_set():
            return
        join = asyncio.ensure_future(self._queue.join())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({join, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            join.cancel()
            closed.cancel()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (a normal close handshake) without ``session.closed``.

        Args:
            code: The websocket close code.
            reason: The close reason.
        """
        self._stop_speaking()
        await self.flush()
        await self._ws.close(code, reason)
        await self.wait_closed()

    async def end_session(self, reason: str, client_event_id: str | None = None) -> None:
        """End the session from the server: ``session.closed`` with ``reason``, then close.

        The final ``session.closed`` carries the session snapshot and the usage; the
        socket then closes normally (1000).

        Args:
            reason: ``close_requested``, ``expired``, ``content``, ``remote_hangup`` or
                ``connection_lost``.
            client_event_id: The ``session.close`` event's id, when it asked.
        """
        if self.close_reason is not None or self.closed_at is not None:
            return
        self.close_reason = reason
        self._closing = True
        self._stop_speaking()
        logger.debug(f"Live emulator {self.id}: session closed ({reason})")
        event: dict[str, Any] = {
            "type": "session.closed",
            "reason": reason,
            "session": copy.deepcopy(self.config) or self._resource({}),
            "usage": self.usage,
        }
        if client_event_id is not None:
            event["client_event_id"] = client_event_id
        self._emit(event)
        await self.flush()
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close(1000)

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        transport = self._ws.transport
        if transport is not None:
            transport.abort()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the session has fully shut down.

        Args:
            timeout: Seconds before ``TimeoutError``.
        """
        await asyncio.wait_for(self._closed.wait(), timeout)

    # -- lifecycle (called by the emulator) -------------------------------------

    def _open(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"live-writer-{self.id}")
        self._expiry = self._loop.call_at(self.opened_at + self.max_secs, self._expire)

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self._ws:
                try:
                    self._on_message(message)
                except Exception as exc:
                    logger.exception(f"Live emulator {self.id}: failed to handle a client event")
                    self._emulator.internal_errors.append(exc)
                    self._send_error(
                        "The server had an error while processing your request.",
                        "server_error",
                        error_type="server_error",
                    )

    async def _shutdown(self) -> None:
        if self.closed_at is None:
            self.closed_at = self._loop.time()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._stop_speaking()
        tasks = [*self._tasks, *self._output_tasks()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        self._queue.put_nowait(None)
        if self._writer is not None:
            tasks.append(self._writer)
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        self._closed.set()

    async def _write_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            try:
                if entry is None:
                    return
                text, record = entry
                try:
                    await self._ws.send(text)
                except ConnectionClosed:
                    return
                record.sent_at = self._loop.time()
            finally:
                self._queue.task_done()

    def _spawn(self, coro: Awaitable, name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(
                f"Live emulator task {task.get_name()} failed"
            )

    def _expire(self) -> None:
        self._expiry = None
        if self.closed_at is None:
            logger.debug(
                f"Live emulator {self.id}: session hit its cap of {duration_text(self.max_secs)}"
            )
            self._spawn(self.end_session("expired"), "live-session-expired")

    def _timeline_ms(self) -> int:
        """Now on the session timeline: the furthest of the input and output clocks."""
        return int(max(self._input_ms, self._output_ms))

    # -- sending ----------------------------------------------------------------

    def _emit(self, event: dict) -> ServerEvent:
        if "event_id" not in event and event.get("type") != "session.output_audio.delta":
            event = {"event_id": new_id("event"), **event}
        record = ServerEvent(event, queued_at=self._loop.time())
        problem = validate_live_server_event(event)
        if problem is not None:
            logger.error(f"Live emulator produced an invalid {event.get('type')}: {problem}")
            self._emulator.server_event_errors.append(ServerEventError(event=event, reason=problem))
        if self._closed.is_set() or self.closed_at is not None:
            return record
        if self.close_reason is not None and event.get("type") != "session.closed":
            return record  # nothing follows session.closed
        self.sent_events.append(record)
        self._queue.put_nowait((json.dumps(event), record))
        return record

    def _send_error(
        self,
        message: str,
        code: str,
        *,
        param: str | None = None,
        client_event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> ServerEvent:
        logger.debug(f"Live emulator {self.id}: error {code}: {message}")
        error: dict[str, Any] = {"type": error_type, "code": code, "message": message}
        if param is not None:
            error["param"] = param
        event: dict[str, Any] = {"type": "error", "error": error}
        if client_event_id is not None:
            error["client_event_id"] = client_event_id
            event["client_event_id"] = client_event_id
        return self._emit(event)

    def _ack(self, event_type: str, data: dict, **fields: Any) -> None:
        event: dict[str, Any] = {"type": event_type, **fields}
        if isinstance(data.get("event_id"), str):
            event["client_event_id"] = data["event_id"]
        self._emit(event)

    # -- receiving --------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        data: Any = message
        problem: Problem | None = None
        if isinstance(message, bytes):
            raw = repr(message[:64])
            problem = Problem("Binary frames are not supported.", "invalid_json")
        else:
            raw = message
            try:
                data = json.loads(message)
            except ValueError as exc:
                problem = Problem(f"Invalid JSON: {exc}.", "invalid_json")
        record = ClientEvent(
            data if isinstance(data, dict) else {}, raw=raw, received_at=self._loop.time()
        )
        self.client_events.append(record)
        if problem is None:
            _, problem = check_live_client_event(data, raw)
        kind = data.get("type") if problem is None else None
        if problem is None and kind in _APPENDS and "delegation_id" not in data:
            problem = Problem(
                "Missing required parameter: 'delegation_id'.",
                "missing_required_parameter",
                "delegation_id",
            )
        if problem is None and kind != "session.start" and not self.started:
            problem = Problem(
                "Send session.start first and wait for session.started.",
                "session_not_started",
                "type",
            )
        if problem is not None:
            self._reject(record, problem, data)
            return
        if kind in _NOT_EMULATED:
            self._refuse(data, f"{kind} is not emulated.", "not_emulated", "type")
            return
        if self._closing and kind != "session.input_audio.append":
            self._refuse(data, "The session is closing.", "session_closing", "type")
            return
        getattr(self, "_on_" + str(kind).replace(".", "_"))(data)

    def _reject(self, record: ClientEvent, problem: Problem, event: Any) -> None:
        record.error = problem.message
        self._emulator.validation_errors.append(
            ClientEventError(
                event=event,
                reason=problem.message,
                code=problem.code,
                param=problem.param,
                session_id=self.id,
            )
        )
        logger.debug(f"Live emulator {self.id}: invalid client event: {problem.message}")
        event_id = record.get("event_id")
        self._send_error(
            problem.message,
            problem.code or "invalid_value",
            param=problem.param,
            client_event_id=event_id if isinstance(event_id, str) else None,
        )

    def _refuse(self, data: dict, message: str, code: str, param: str | None = None) -> None:
        """Answer a valid event the session cannot take with an ``error``."""
        event_id = data.get("event_id")
        self._send_error(
            message,
            code,
            param=param,
            client_event_id=event_id if isinstance(event_id, str) else None,
        )
