#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""One connection: ``EmulatedSession``, the server side of a Realtime session.

The session records every event both ways, keeps the configuration and the
conversation, and dispatches each valid client event to its ``_on_<type>``
handler. Input audio and turn detection live in ``input_audio``, model
responses in ``responses``, injected faults and the session cap in
``session_faults``; all three are mixed into ``EmulatedSession``.
"""

import asyncio
import base64
import contextlib
import copy
import json
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .audio import SAMPLE_BYTES, audio_duration_ms, bytes_per_ms, decode_base64_audio, format_type
from .config import DEFAULT_MODEL, deep_merge, default_session, normalize_session, output_audio
from .host import EmulatorHost
from .input_audio import InputAudio
from .records import (
    ClientEvent,
    ClientEventError,
    EmulatedResponse,
    FunctionOutput,
    ItemMeta,
    ServerEvent,
    ServerEventError,
    Truncation,
    new_id,
)
from .responses import Responses
from .session_faults import SessionFaults
from .validation import Problem, check_client_event, validate_server_event


def requested_model(query: dict[str, str]) -> str:
    """The model a handshake's query asks for: ``model``, else ``deployment`` (Azure).

    Args:
        query: The parsed query (first value of each parameter).

    Returns:
        The model, ``"gpt-realtime"`` if the query names none.
    """
    return query.get("model") or query.get("deployment") or DEFAULT_MODEL


class EmulatedSession(InputAudio, Responses, SessionFaults):
    """One accepted websocket connection: the server side of a Realtime session.

    Attributes:
        id: The ``sess_...`` id.
        model: The model from the ``?model=`` query (``"gpt-realtime"`` if absent); an
            Azure preview URL's ``?deployment=`` counts as one.
        query: The parsed query string (first value of each parameter).
        authorization: The ``Authorization`` header as received.
        api_key: The ``api-key`` header (Azure's key auth) as received.
        headers: All request headers (last value wins for repeated ones), names as
            the client sent them (e.g. ``session.headers.get("api-key")``).
        config: The current session configuration (defaults merged with every
            accepted ``session.update``), as sent in ``session.updated``.
        client_events: Every client event as received, valid or not (``ClientEvent``
            dicts with ``received_at``).
        sent_events: Every server event sent (``ServerEvent`` dicts with ``sent_at``).
        input_audio: All appended audio, exactly as received (input format bytes).
        items: The conversation items in order (protocol-shaped dicts).
        responses: Every response, in order.
        truncations: Every truncate request, accepted or not.
        function_outputs: Every accepted ``function_call_output``.
        opened_at: ``loop.time()`` when the session was accepted.
        closed_at: ``loop.time()`` when the socket closed (either side), else None.
        max_secs: The session cap (the emulator's ``session_max_secs`` at connection):
            at ``opened_at + max_secs`` the session expires.
        expired_at: ``loop.time()`` when the session hit its cap, else None.
    """

    def __init__(self, emulator: EmulatorHost, websocket: ServerConnection) -> None:
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
        query = parse_qs(urlsplit(request.path).query)
        self.id = new_id("sess")
        self.query: dict[str, str] = {k: v[0] for k, v in query.items()}
        self.model: str = requested_model(self.query)
        self.authorization: str | None = request.headers.get("Authorization")
        self.api_key: str | None = request.headers.get("api-key")
        self.headers: dict[str, str] = dict(request.headers.raw_items())
        self._init_faults()
        self.config: dict = default_session(
            self.id, self.model, emulator.voice, emulator.instructions, self._expires_at()
        )
        self.client_events: list[ClientEvent] = []
        self.sent_events: list[ServerEvent] = []
        self.input_audio = bytearray()
        self.items: list[dict] = []
        self.responses: list[EmulatedResponse] = []
        self.truncations: list[Truncation] = []
        self.function_outputs: list[FunctionOutput] = []
        self.opened_at: float = self._loop.time()
        self.closed_at: float | None = None

        self._conversation_id = new_id("conv")
        self._queue: asyncio.Queue[tuple[str, ServerEvent] | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = asyncio.Event()
        self._item_meta: dict[str, ItemMeta] = {}
        self._calls: dict[str, str] = {}  # call_id -> item_id
        self._init_responses()
        self._init_input_audio()

    def __repr__(self) -> str:
        """Return a short description."""
        state = "closed" if self.closed_at is not None else "open"
        return f"<EmulatedSession {self.id} model={self.model!r} {state}>"

    # -- public ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the socket has closed."""
        return self.closed_at is not None

    @property
    def active_response(self) -> EmulatedResponse | None:
        """The response in progress in the default conversation, if any."""
        return self._active

    @property
    def input_format(self) -> str:
        """The negotiated input audio format (``audio/pcmu``, ``audio/pcma`` or ``audio/pcm``)."""
        return format_type(self.config["audio"]["input"]["format"])

    @property
    def output_format(self) -> str:
        """The negotiated output audio format."""
        return format_type(self.config["audio"]["output"]["format"])

    @property
    def input_audio_ms(self) -> float:
        """Milliseconds of input audio appended so far (in the session's input timeline)."""
        return self._input_ms

    @property
    def errors_sent(self) -> list[ServerEvent]:
        """Every ``error`` event sent to the client."""
        return self.sent_of_type("error")

    def events_of_type(self, event_type: str) -> list[ClientEvent]:
        """Return the received client events of one type.

        Args:
            event_type: E.g. ``"input_audio_buffer.append"``.

        Returns:
            The matching events, in arrival order.
        """
        return [e for e in self.client_events if e.get("type") == event_type]

    def sent_of_type(self, event_type: str) -> list[ServerEvent]:
        """Return the sent server events of one type.

        Args:
            event_type: E.g. ``"response.done"``.

        Returns:
            The matching events, in send order.
        """
        return [e for e in self.sent_events if e.get("type") == event_type]

    def item(self, item_id: str) -> dict | None:
        """Return the conversation item with this id, or None."""
        return next((i for i in self.items if i.get("id") == item_id), None)

    async def send_event(self, event: dict) -> ServerEvent:
        """Push an arbitrary server event to the client (validated and recorded like any other).

        Args:
            event: The event; an ``event_id`` is added if missing.

        Returns:
            The recorded event.
        """
        record = self._emit(event)
        await self.flush()
        return record

    async def send_error(
        self,
        type: str,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
    ) -> ServerEvent:
        """Push an ``error`` server event to the client.

        Args:
            type: The error type, e.g. ``"server_error"`` or ``"invalid_request_error"``.
            code: The error code, or None.
            message: The human-readable message.
            param: The related parameter, if any.
            event_id: The client event id the error refers to, if any.

        Returns:
            The recorded event.
        """
        record = self._send_error(message, code, param=param, event_id=event_id, error_type=type)
        await self.flush()
        return record

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
        """Close the socket from the server side (a normal close handshake).

        Args:
            code: The websocket close code.
            reason: The close reason.
        """
        await self.flush()
        await self._ws.close(code, reason)
        await self.wait_closed()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        transport = self._ws.transport
        if transport is not None:
            transport.abort()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the session has fully shut down.

        Args:
            timeout: Seconds to wait before raising ``TimeoutError``.
        """
        await asyncio.wait_for(self._closed.wait(), timeout)

    # -- lifecycle (called by the emulator) -------------------------------------

    def _open(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"emulator-writer-{self.id}")
        self._emit({"type": "session.created", "session": copy.deepcopy(self.config)})
        self._arm_expiry()

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self._ws:
                try:
                    self._on_message(message)
                except Exception as exc:
                    # A bug in the emulator: report it, keep the session going.
                    logger.exception(
                        f"Realtime emulator {self.id}: failed to handle a client event"
                    )
                    self._emulator.internal_errors.append(exc)
                    self._send_error(
                        "The server had an error while processing your request.",
                        None,
                        error_type="server_error",
                    )

    async def _shutdown(self) -> None:
        if self.closed_at is None:
            self.closed_at = self._loop.time()
        self._disarm_expiry()
        tasks = [*self._abandon_responses(), *self._tasks]
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
                f"Realtime emulator task {task.get_name()} failed"
            )

    # -- sending ----------------------------------------------------------------

    def _emit(self, event: dict) -> ServerEvent:
        if "event_id" not in event:
            event = {"event_id": new_id("event"), **event}
        record = ServerEvent(event, queued_at=self._loop.time())
        problem = validate_server_event(event)
        if problem is not None:
            logger.error(f"Realtime emulator produced an invalid {event.get('type')}: {problem}")
            self._emulator.server_event_errors.append(ServerEventError(event=event, reason=problem))
        if self._closed.is_set() or self.closed_at is not None:
            logger.debug(f"Realtime emulator {self.id}: dropping {event.get('type')} (closed)")
            return record
        self.sent_events.append(record)
        self._queue.put_nowait((json.dumps(event), record))
        return record

    async def send_raw(self, text: str) -> None:
        """Push any text to the client as a server message, valid or not (fault injection).

        Args:
            text: The websocket message, e.g. malformed JSON or a mangled event.
        """
        record = ServerEvent({"_raw": text}, queued_at=self._loop.time())
        if self.closed_at is None and not self._closed.is_set():
            self._queue.put_nowait((text, record))
            await self.flush()

    def _send_error(
        self,
        message: str,
        code: str | None,
        *,
        param: str | None = None,
        event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> ServerEvent:
        logger.debug(f"Realtime emulator {self.id}: error {code}: {message}")
        return self._emit(
            {
                "type": "error",
                "error": {
                    "type": error_type,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": event_id,
                },
            }
        )

    def _emit_item(self, event_type: str, item: dict, previous_id: str | None) -> None:
        """Send a ``conversation.item.*`` event carrying a copy of ``item``."""
        self._emit(
            {"type": event_type, "item": copy.deepcopy(item), "previous_item_id": previous_id}
        )

    def _id_before(self, index: int) -> str | None:
        """Return the id of the item before position ``index`` (None at the start)."""
        return self.items[index - 1]["id"] if index > 0 else None

    # -- receiving --------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        now = self._loop.time()
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
        record = ClientEvent(data if isinstance(data, dict) else {}, raw=raw, received_at=now)
        self.client_events.append(record)
        model = None
        if problem is None:
            model, problem = check_client_event(data, raw)
        if problem is not None:
            self._reject(record, problem, data)
            return
        handler = getattr(self, "_on_" + data["type"].replace(".", "_"))
        handler(data, model)

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
        logger.debug(f"Realtime emulator {self.id}: invalid client event: {problem.message}")
        event_id = record.get("event_id")
        self._send_error(
            problem.message,
            problem.code,
            param=problem.param,
            event_id=event_id if isinstance(event_id, str) else None,
        )

    @staticmethod
    def _event_id(data: dict) -> str | None:
        return data.get("event_id")

    # -- session.update ---------------------------------------------------------

    def _on_session_update(self, data: dict, model: Any) -> None:
        update = data["session"]
        event_id = self._event_id(data)
        if self._session_update_refused(data):
            return

        def fail(message: str, code: str, param: str) -> None:
            self._send_error(message, code, param=param, event_id=event_id)

        if update.get("type") != "realtime":
            fail(
                "Cannot update a realtime session to a transcription session.",
                "invalid_value",
                "session.type",
            )
            return
        if "model" in update and update["model"] != self.config.get("model"):
            # The model is fixed by the connection URL; keep it (and say so in the log).
            logger.debug(
                f"Realtime emulator {self.id}: ignoring session.model {update['model']!r}, "
                f"the session uses {self.config.get('model')!r}"
            )
            update = {k: v for k, v in update.items() if k != "model"}
        modalities = update.get("output_modalities")
        if modalities is not None and sorted(set(modalities)) not in (["audio"], ["text"]):
            fail(
                "Invalid value for 'session.output_modalities': "
                "exactly one of 'audio' or 'text' is supported.",
                "invalid_value",
                "session.output_modalities",
            )
            return
        new_voice = output_audio(update).get("voice")
        current_voice = self.config["audio"]["output"].get("voice")
        if new_voice is not None and new_voice != current_voice and self._audio_out_started:
            fail(
                "Cannot update a conversation's voice if assistant audio is present.",
                "cannot_update_voice",
                "session.audio.output.voice",
            )
            return

        old_input = self.input_format
        deep_merge(self.config, update)
        normalize_session(self.config)
        self._input_settings_changed(old_input)
        logger.debug(f"Realtime emulator {self.id}: session.update {json.dumps(update)[:300]}")
        self._emit({"type": "session.updated", "session": copy.deepcopy(self.config)})
        self._mcp_tools_updated()  # lists the tools of a new MCP server (mcp_calls)

    def _on_output_audio_buffer_clear(self, data: dict, model: Any) -> None:
        logger.debug(f"Realtime emulator {self.id}: output_audio_buffer.clear ignored (websocket)")

    def _finish(self, response: EmulatedResponse, status: str, reason: str | None) -> None:
        """Send ``response.done``; then the caller's silence is timed (``idle_timeout_ms``)."""
        super()._finish(response, status, reason)
        self._arm_idle_timeout(response)

    # -- conversation items ---------------------------------------------------------

    def _on_conversation_item_create(self, data: dict, model: Any) -> None:
        item = copy.deepcopy(data["item"])
        event_id = self._event_id(data)

        def fail(message: str, param: str) -> None:
            self._send_error(message, "invalid_value", param=param, event_id=event_id)

        item_id = item.get("id") or new_id("item")
        if self.item(item_id) is not None:
            fail(f"Item with id '{item_id}' already exists.", "item.id")
            return
        previous_id = data.get("previous_item_id")
        if previous_id is None:
            index = len(self.items)
        elif previous_id == "root":
            index = 0
        else:
            match = [i for i, it in enumerate(self.items) if it.get("id") == previous_id]
            if not match:
                fail(f"Previous item with item_id not found: {previous_id}", "previous_item_id")
                return
            index = match[0] + 1
        if item.get("type") == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in self._calls:
                fail(f"No function call found with call_id '{call_id}'.", "item.call_id")
                return
        item["id"] = item_id
        if not item.get("type", "").startswith("mcp_"):  # MCP items have neither
            item.setdefault("object", "realtime.item")
            item.setdefault("status", "completed")
        meta = ItemMeta()
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "input_audio" and part.get("audio"):
                    audio = decode_base64_audio(part["audio"])
                    if audio is None:
                        fail(
                            "Invalid 'item.content.audio'. Expected base64-encoded audio bytes.",
                            "item.content.audio",
                        )
                        return
                    meta.audio += audio
                    meta.audio_format = self.input_format
                    meta.audio_ms += audio_duration_ms(len(audio), self.input_format)
                    del part["audio"]
                    part.setdefault("transcript", None)
        self.items.insert(index, item)
        self._item_meta[item_id] = meta
        if item.get("type") == "function_call" and item.get("call_id"):
            self._calls[item["call_id"]] = item_id
        if item.get("type") == "function_call_output":
            self.function_outputs.append(
                FunctionOutput(
                    call_id=item["call_id"],
                    output=item.get("output", ""),
                    item_id=item_id,
                    at=self._loop.time(),
                )
            )
        previous = self._id_before(index)
        for kind in ("conversation.item.added", "conversation.item.done"):
            self._emit_item(kind, item, previous)

    def _find_item(self, data: dict, error_code: str) -> dict | None:
        """Return the item ``data["item_id"]`` names; if there is none, say so to the client."""
        item_id = data["item_id"]
        item = self.item(item_id)
        if item is None:
            self._send_error(
                f"Item with item_id not found: {item_id}",
                error_code,
                param="item_id",
                event_id=self._event_id(data),
            )
        return item

    def _on_conversation_item_delete(self, data: dict, model: Any) -> None:
        item = self._find_item(data, "item_delete_invalid_item_id")
        if item is None:
            return
        self.items.remove(item)
        self._emit({"type": "conversation.item.deleted", "item_id": data["item_id"]})

    def _on_conversation_item_retrieve(self, data: dict, model: Any) -> None:
        item = self._find_item(data, "item_retrieve_invalid_item_id")
        if item is None:
            return
        item = copy.deepcopy(item)
        meta = self._item_meta.get(data["item_id"])
        if meta is not None and meta.audio:
            for part in item.get("content") or []:
                if part.get("type") in ("input_audio", "output_audio"):
                    part["audio"] = base64.b64encode(meta.audio).decode()
                    break
        self._emit({"type": "conversation.item.retrieved", "item": item})

    def _on_conversation_item_truncate(self, data: dict, model: Any) -> None:
        item_id = data["item_id"]
        content_index = data["content_index"]
        audio_end_ms = data["audio_end_ms"]
        event_id = self._event_id(data)
        item = self.item(item_id)
        meta = self._item_meta.get(item_id)
        record = Truncation(
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=audio_end_ms,
            accepted=False,
            at=self._loop.time(),
        )
        self.truncations.append(record)

        def fail(message: str, code: str, param: str) -> None:
            record.error = message
            self._send_error(message, code, param=param, event_id=event_id)

        if item is None or meta is None:
            fail(
                f"Item with item_id not found: {item_id}",
                "item_truncate_invalid_item_id",
                "item_id",
            )
            return
        content = item.get("content") or []
        if (
            item.get("type") != "message"
            or item.get("role") != "assistant"
            or not any(p.get("type") == "output_audio" for p in content)
        ):
            fail("Only assistant messages with audio can be truncated.", "invalid_value", "item_id")
            return
        if (
            not 0 <= content_index < len(content)
            or content[content_index].get("type") != "output_audio"
        ):
            fail(
                f"Invalid content_index {content_index}: no audio content at that index.",
                "invalid_value",
                "content_index",
            )
            return
        record.audio_sent_ms = meta.audio_ms
        if audio_end_ms < 0:
            fail("audio_end_ms must not be negative.", "invalid_value", "audio_end_ms")
            return
        if audio_end_ms > meta.audio_ms:
            fail(
                f"Audio content of {meta.audio_ms:.0f}ms is already shorter than {audio_end_ms}ms",
                "invalid_value",
                "audio_end_ms",
            )
            return
        # The server drops the transcript: no text is left for audio the caller never heard.
        content[content_index]["transcript"] = None
        if meta.audio_format:
            keep = int(audio_end_ms * bytes_per_ms(meta.audio_format))
            keep -= keep % SAMPLE_BYTES[meta.audio_format]
            meta.audio = meta.audio[:keep]
        meta.audio_ms = float(audio_end_ms)
        record.accepted = True
        logger.debug(f"Realtime emulator {self.id}: truncated {item_id} at {audio_end_ms} ms")
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )
