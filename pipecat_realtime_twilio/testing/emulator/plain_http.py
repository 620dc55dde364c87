#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Plain HTTP requests on the emulator's websocket port (the Responses API's ``POST``).

The websocket server (``websockets``) reads only ``GET`` upgrade requests. A
connection whose first bytes are another method is taken over by a
:class:`PlainHttp`: ``h11`` reads the request, an async handler answers it, and
the connection closes after the answer (``Connection: close``: the client opens a
new one for its next request, as HTTP clients do). :func:`tracked_connection` is
the emulator's connection class, which hands such connections over.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers

MAX_BODY_BYTES = 8 * 2**20
"""Largest request body read; a larger one is answered 413."""


@dataclass
class HttpRequest:
    """One plain HTTP request.

    Parameters:
        method: ``POST``, ``PUT``...
        path: The request target (path and query).
        headers: Its headers.
        body: Its body.
    """

    method: str
    path: str
    headers: Headers
    body: bytes


@dataclass
class HttpAnswer:
    """The answer to a plain HTTP request.

    Parameters:
        status: The HTTP status.
        body: The body.
        headers: Headers besides ``content-type``, ``content-length`` and ``connection``.
        content_type: The body's type.
    """

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


def json_answer(status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> HttpAnswer:
    """An answer with a JSON body.

    Args:
        status: The HTTP status.
        data: The body, before encoding.
        headers: Further headers.
    """
    return HttpAnswer(status, json.dumps(data).encode(), list(headers or []))


Handler = Callable[[HttpRequest], Awaitable[HttpAnswer]]
"""What answers a request."""


class PlainHttp:
    """One connection of plain HTTP, taken over from the websocket server."""

    def __init__(self, transport: asyncio.Transport, handler: Handler):
        """Initialize the exchange.

        Args:
            transport: The connection's transport.
            handler: What answers the request.
        """
        self._transport = transport
        self._handler = handler
        self._connection = h11.Connection(h11.SERVER)
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._task: asyncio.Task | None = None

    @staticmethod
    def wanted(first: bytes) -> bool:
        """Whether a connection's first bytes are plain HTTP (not a websocket's ``GET``).

        Args:
            first: The first bytes received on the connection.
        """
        return not first.startswith(b"G")

    def feed(self, data: bytes) -> None:
        """Take bytes from the client; once the request is whole, answer it.

        Args:
            data: What arrived.
        """
        if self._task is not None:
            return  # one request per connection: nothing after it is read
        try:
            self._connection.receive_data(data)
            while self._task is None:
                event = self._connection.next_event()
                if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    self._request = event
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) > MAX_BODY_BYTES:
                        self._send(error_answer(413, "The request body is too large."))
                        return
                elif isinstance(event, h11.EndOfMessage):
                    self._task = asyncio.ensure_future(self._answer())
        except h11.RemoteProtocolError as error:
            self._send(error_answer(400, f"Malformed HTTP request: {error}."))

    def lost(self) -> None:
        """The connection is gone: stop answering."""
        if self._task is not None:
            self._task.cancel()

    async def _answer(self) -> None:
        request = self._request
        assert request is not None  # an EndOfMessage comes after its Request
        headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers])
        try:
            answer = await self._handler(
                HttpRequest(
                    request.method.decode("ascii"),
                    request.target.decode("latin-1"),
                    headers,
                    bytes(self._body),
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Realtime emulator: answering a plain HTTP request failed")
            answer = error_answer(500, "The emulator failed to answer.")
        self._send(answer)

    def _send(self, answer: HttpAnswer) -> None:
        if self._transport.is_closing():
            return
        headers = [
            ("content-type", answer.content_type),
            ("content-length", str(len(answer.body))),
            ("connection", "close"),
            *answer.headers,
        ]
        try:
            data = self._connection.send(h11.Response(status_code=answer.status, headers=headers))
            data = (data or b"") + (self._connection.send(h11.Data(data=answer.body)) or b"")
            data += self._connection.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            logger.debug("Realtime emulator: a plain HTTP answer could not be sent")
        else:
            self._transport.write(data)
        self._transport.close()


def error_answer(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> HttpAnswer:
    """An answer with OpenAI's body of a refused request (``invalid_request_error``).

    Args:
        status: The HTTP status.
        message: The ``error.message``.
        code: The ``error.code``.
        param: The ``error.param``: the parameter at fault.
    """
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return json_answer(status, {"error": error})


def tracked_connection(
    connections: set[ServerConnection], handler: Handler
) -> type[ServerConnection]:
    """A ``ServerConnection`` class that keeps ``connections`` up to date and serves plain HTTP.

    A connection whose first bytes are not a ``GET`` is taken over by a
    :class:`PlainHttp` that asks ``handler`` for the answer; ``websockets`` never
    sees its bytes (its handshake waits until the connection closes, and ends quietly).

    Args:
        connections: Every TCP connection still open (kept up to date).
        handler: What answers a plain HTTP request.
    """

    class TrackedConnection(ServerConnection):
        plain_http: PlainHttp | None = None
        sniffed = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            connections.add(self)

        def data_received(self, data: bytes) -> None:
            if not self.sniffed:
                self.sniffed = True
                if PlainHttp.wanted(data):
                    self.plain_http = PlainHttp(self.transport, handler)
            if self.plain_http is not None:
                self.plain_http.feed(data)
            else:
                super().data_received(data)

        def eof_received(self) -> bool | None:  # type: ignore[override]
            if self.plain_http is not None:
                return True  # half-closed: the answer still goes out, then the close
            return super().eof_received()

        def connection_lost(self, exc: Exception | None) -> None:
            connections.discard(self)
            if self.plain_http is not None:
                self.plain_http.lost()
            super().connection_lost(exc)

    return TrackedConnection
