#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""How the runner's uvicorn serves: bounded messages, headers and waits, for every entry point.

:func:`server_options` gives the ``uvicorn.Config`` options that ``serve``, the
simulator and the test server (:class:`~pipecat_realtime_twilio.testing.server.LocalServer`)
all use, so tests run the server as production does:

- ``ws_max_size``: a websocket message over the media stream's
  ``MAX_MESSAGE_BYTES`` (64 KiB) closes the stream (1009) before it is read,
  instead of uvicorn's 16 MiB.
- The HTTP protocol of :func:`http_protocol`, uvicorn's own (httptools when
  installed, else h11) with what uvicorn lacks:

  - A deadline for the request's head: uvicorn has none for a client that
    trickles its request line and headers (its keep-alive timer stops at the
    first byte). A connection whose head is not complete ``HTTP_HEADER_TIMEOUT_SECS``
    after it opened, or after the answer to its previous request, is closed.
  - A bound on the head's size (:data:`MAX_HEADER_BYTES`): larger gets 431.
  - A connection whose request body was not all read by its answer (a
    refusal) is closed once answered, rather than uvicorn reading and dropping
    whatever more comes: the answer and a FIN go out, what the client still
    sends is dropped for :data:`LINGER_SECS` (so it reads the refusal, not a
    reset), then the connection closes.
  - Idle keep-alive connections close after ``HTTP_IDLE_TIMEOUT_SECS``.

  A body that trickles is bounded by the routes' own body deadline
  (:func:`~pipecat_realtime_twilio.phone.requests.read_body`, 408).
- ``timeout_graceful_shutdown``: once the runner has drained, open connections
  get :data:`GRACEFUL_SHUTDOWN_SECS` to finish, then the process exits.
- uvicorn's own warning per bad request ("Invalid HTTP request received.") is
  written at most once per kind every 10 s, with a count of the rest
  (:class:`OncePerInterval` on the ``uvicorn.error`` logger), so garbage cannot
  flood the log.

The protocols override parts of uvicorn's (``uvicorn.protocols.http``) that are
not a public API; ``tests/test_http_limits.py`` fails loudly if they move.
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipecat_realtime_twilio.logs import Throttled, field
from pipecat_realtime_twilio.phone.serializer import MAX_MESSAGE_BYTES
from pipecat_realtime_twilio.settings import Settings

MAX_HEADER_BYTES = 16 * 1024
"""Largest request head (request line and headers) accepted; Twilio's are about 1 KB."""

GRACEFUL_SHUTDOWN_SECS = 2
"""Seconds open connections get to finish once the runner has drained (or on Ctrl-C)."""

LINGER_SECS = 1.0
"""After answering a request whose body it did not read (a refusal), how long the server
still takes what the client sends, dropping it, so the client reads the answer, not a reset."""

_closed = Throttled()


@dataclass(frozen=True)
class HttpLimits:
    """The bounds one server's HTTP connections keep.

    Parameters:
        header_timeout_secs: Most seconds for a request's head (``HTTP_HEADER_TIMEOUT_SECS``).
        idle_timeout_secs: Most seconds a keep-alive connection idles (``HTTP_IDLE_TIMEOUT_SECS``).
        max_header_bytes: Largest request head accepted.
    """

    header_timeout_secs: float
    idle_timeout_secs: float
    max_header_bytes: int = MAX_HEADER_BYTES

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "HttpLimits":
        """The limits ``settings`` ask for; the settings' defaults without them.

        Args:
            settings: The runner's settings, or None for the defaults.

        Returns:
            The limits.
        """
        if settings is None:
            fields = Settings.model_fields
            return cls(
                header_timeout_secs=fields["http_header_timeout_secs"].default,
                idle_timeout_secs=fields["http_idle_timeout_secs"].default,
            )
        return cls(
            header_timeout_secs=settings.http_header_timeout_secs,
            idle_timeout_secs=settings.http_idle_timeout_secs,
        )


class OncePerInterval(logging.Filter):
    """A logging filter: each warning (by its text) at most once per interval, counting the rest.

    uvicorn writes a fixed warning for every malformed request it cannot parse;
    a stranger sending garbage would otherwise write one line per request.
    """

    def __init__(self, interval_secs: float = 10.0):
        """Initialize the filter.

        Args:
            interval_secs: Least seconds between two records of one kind.
        """
        super().__init__()
        self.interval_secs = interval_secs
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Let a warning through unless one like it was let through lately.

        Args:
            record: The log record (its message may get a count of those held back).

        Returns:
            Whether to log it.
        """
        if record.levelno != logging.WARNING:
            return True
        kind, now = str(record.msg), time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_secs:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            record.msg, record.args = f"{record.getMessage()} ({held} more since)", ()
        return True


def limit_uvicorn_warnings() -> None:
    """Put :class:`OncePerInterval` on uvicorn's ``uvicorn.error`` logger (once)."""
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, OncePerInterval) for f in errors.filters):
        errors.addFilter(OncePerInterval())


def server_options(settings: Settings | None = None) -> dict[str, Any]:
    """The ``uvicorn.Config`` options every entry point serves the runner with.

    Example::

        config = uvicorn.Config(app, host=settings.host, port=settings.port,
                                **server_options(settings))

    Args:
        settings: The runner's settings (``HTTP_*_TIMEOUT_SECS``); the defaults without them.

    Returns:
        Keyword arguments of ``uvicorn.Config``.
    """
    limits = HttpLimits.from_settings(settings)
    limit_uvicorn_warnings()
    return {
        "http": http_protocol(limits),
        "ws_max_size": MAX_MESSAGE_BYTES,
        "timeout_keep_alive": max(1, math.ceil(limits.idle_timeout_secs)),  # the protocol's exact
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECS,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "log_level": "warning",
    }


def http_protocol(limits: HttpLimits, implementation: str = "auto") -> type[asyncio.Protocol]:
    """The HTTP protocol of uvicorn, keeping ``limits``.

    Args:
        limits: The bounds.
        implementation: ``"httptools"``, ``"h11"``, or ``"auto"``: httptools when
            installed (as uvicorn chooses), else h11.

    Returns:
        A protocol class for ``uvicorn.Config(http=...)``.

    Raises:
        ValueError: For an implementation that is unknown or not installed.
    """
    bases: dict[str, type[_Limits]] = {"h11": LimitedH11Protocol, **_HTTPTOOLS}
    if implementation == "auto":
        implementation = "httptools" if _HTTPTOOLS else "h11"
    if implementation not in bases:
        raise ValueError(f"no HTTP implementation {implementation!r} (have: {', '.join(bases)})")
    base = bases[implementation]
    return type(base.__name__, (base,), {"limits": limits})


class _AnswerTransport(asyncio.Transport):
    """The connection as a request's cycle sees it: closing it after an answer may linger."""

    def __init__(self, transport: asyncio.Transport, close: Callable[[], None]):
        super().__init__()
        self._transport = transport
        self._close = close

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class _Limits(asyncio.Protocol):
    """What both protocols add to uvicorn's: the head's deadline and bound, lingering closes.

    It comes first in each protocol's bases, so ``super()`` here is uvicorn's protocol.
    """

    limits: ClassVar[HttpLimits]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    flow: FlowControl
    timeout_keep_alive: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Initialize the protocol (uvicorn's arguments)."""
        super().__init__(*args, **kwargs)
        self._init_limits()
        self.timeout_keep_alive = self.limits.idle_timeout_secs  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A connection opened: its first request head is due."""
        super().connection_made(transport)
        self._answers = self._answer_transport()
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed."""
        self._stop_timers()
        super().connection_lost(exc)

    def _refused_before_parsing(self, data: bytes) -> bool:
        """Whether ``data`` is dropped (lingering) or refused (a head past the bound) unparsed."""
        if self._lingering:
            return True  # dropped: the request was answered
        if self._awaiting_head and self._head_overflows(data):
            self._refuse_head()
            return True
        return False

    def _init_limits(self) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = False
        self._head_bytes = 0
        self._head_tail = b""
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingering = False

    def _answer_transport(self) -> asyncio.Transport:
        return _AnswerTransport(self.transport, self._close_after_answer)

    def _body_unread(self) -> bool:
        """Whether the request being answered has more body to come (each protocol's)."""
        raise NotImplementedError

    def _await_head(self) -> None:
        """A request head is due now: within ``header_timeout_secs``."""
        self._cancel_head_timer()
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_tail = b""
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout_secs, self._head_timed_out
        )

    def _head_overflows(self, data: bytes) -> bool:
        """Whether ``data``, the next bytes of a head still awaited, take it past the bound.

        The head ends at its blank line; bytes after it (a body) do not count.
        """
        room = self.limits.max_header_bytes - self._head_bytes
        self._head_bytes += len(data)
        if len(data) <= room:
            self._head_tail = (self._head_tail + data)[-3:]
            return False
        window = self._head_tail + data[: max(room, 0)]
        return b"\r\n\r\n" not in window and b"\n\n" not in window

    def _head_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport.is_closing():
            return
        _closed.warning(
            "header-timeout",
            f"Closed a connection from {self._peer()}: request headers not complete "
            f"within {self.limits.header_timeout_secs:g} s",
        )
        self.transport.close()

    def _refuse_head(self) -> None:
        """Answer 431 to a head over ``max_header_bytes`` and close the connection."""
        self._head_complete()
        if self.transport.is_closing():
            return
        _closed.warning(
            "header-size",
            f"Refused a request from {self._peer()}: headers over "
            f"{self.limits.max_header_bytes} bytes",
        )
        body = b"request headers too large"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self._linger()

    def _close_after_answer(self) -> None:
        """Close after an answer: lingering if the client may still be sending its body."""
        if self._body_unread():
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """Send the answer's end, then drop what the client sends for ``LINGER_SECS``, and close.

        Closing a socket with unread bytes resets the connection, and the client
        may lose the answer it has not read yet (a 403, 413 or 431 it should see).
        """
        if self._lingering or self.transport.is_closing():
            return
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        self._cancel_head_timer()
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECS, self.transport.close)

    def _stop_timers(self) -> None:
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _peer(self) -> str:
        return field(self.client[0], 45) if self.client else "?"


class LimitedH11Protocol(_Limits, H11Protocol):
    """The h11 protocol of uvicorn with a deadline and a size bound for request heads."""

    limits: ClassVar[HttpLimits] = HttpLimits(10.0, 5.0)

    def data_received(self, data: bytes) -> None:
        """Bytes came: refuse a head past the bound; one they complete stops its deadline."""
        if self._refused_before_parsing(data):
            return
        cycle = self.cycle
        super().data_received(data)
        if self._awaiting_head and (
            self.cycle is not cycle or self.transport.get_protocol() is not self
        ):
            self._head_complete()

    def handle_events(self) -> None:
        """Parse what came; a new request's cycle closes the connection through us."""
        super().handle_events()
        if self.cycle is not None:
            self.cycle.transport = self._answers

    def on_response_complete(self) -> None:
        """The answer went out: close if its body was not all read, else await the next head."""
        unread = self._body_unread()
        super().on_response_complete()
        if self.transport.is_closing() or self._lingering:
            return
        if unread:
            self._linger()  # what more of its body comes is not read
            return
        self._await_head()

    def _body_unread(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY


_HTTPTOOLS: dict[str, type[_Limits]] = {}

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsBase
except ImportError:  # pragma: no cover - httptools is optional; uvicorn then uses h11
    pass
else:

    class LimitedHttpToolsProtocol(_Limits, _HttpToolsBase):
        """The httptools protocol of uvicorn with a deadline and a size bound for request heads."""

        limits: ClassVar[HttpLimits] = HttpLimits(10.0, 5.0)

        def data_received(self, data: bytes) -> None:
            """Bytes came: refuse a head past the bound, else parse them."""
            if not self._refused_before_parsing(data):
                super().data_received(data)

        def on_headers_complete(self) -> None:
            """The head is complete (parser callback): its deadline stops."""
            self._head_complete()
            super().on_headers_complete()
            if self.cycle is not None:
                self.cycle.transport = self._answers

        def on_response_complete(self) -> None:
            """The answer went out: close if its body was not all read, else await the next head."""
            pipelined = bool(self.pipeline)
            unread = not pipelined and self._body_unread()
            super().on_response_complete()
            if self.transport.is_closing() or self._lingering or pipelined:
                return
            if unread:
                self._linger()  # what more of its body comes is not read
                return
            self._await_head()

        def _body_unread(self) -> bool:
            return self.cycle is not None and self.cycle.more_body

    _HTTPTOOLS["httptools"] = LimitedHttpToolsProtocol
