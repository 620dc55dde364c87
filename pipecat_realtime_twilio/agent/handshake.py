#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Opening a Realtime websocket: refusals read as codes, transient ones retried in a budget.

The real API refuses a handshake at the HTTP upgrade, before any ``error`` event:
401 (``invalid_api_key``), 403, 404 (``model_not_found``), 429
(``rate_limit_exceeded``, or ``insufficient_quota``, which no wait cures), 5xx;
a connect can also hang. :func:`open_realtime` retries what a wait may cure
(429 rate limits, 5xx, timeouts, refused TCP connections) with backoff inside a
time budget, so a caller hears help within seconds either way, and gives up at
once on what no retry cures. A caller waits one budget at most: a pre-warm's retries
that went on after the stream started count against it (:class:`ConnectBudget`).
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loguru import logger
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

CONNECT_BUDGET_SECS = 4.0
"""Most seconds spent opening a session, retries included, before the fallback."""

ATTEMPT_TIMEOUT_SECS = 2.0
"""Most seconds one handshake may take (a hanging connect is given up after this)."""

RETRY_DELAYS_SECS = (0.25, 0.5, 1.0, 2.0)
"""Waits between attempts (the last repeats), within the budget."""

MIN_CONNECT_SECS = 0.1
"""Least of a caller's budget worth one more attempt; with less, the call falls back at once."""

_TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FATAL_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "model_not_found"}
)


@dataclass(frozen=True)
class Refusal:
    """Why a handshake failed.

    Parameters:
        code: The API's error code, else ``http_<status>``, ``timeout``, ``unreachable``
            or ``handshake``.
        transient: Whether a retry may cure it.
        detail: The API's message or the exception, for the logs.
    """

    code: str
    transient: bool
    detail: str = ""


class ConnectFailed(Exception):
    """The Realtime websocket could not be opened (see :attr:`refusal`)."""

    def __init__(self, refusal: Refusal):
        """Initialize with the last refusal.

        Args:
            refusal: Why the last attempt failed.
        """
        super().__init__(f"{refusal.code}: {refusal.detail}")
        self.refusal = refusal


class ConnectBudget:
    """What is left of a caller's wait for the session to open.

    A pre-warm retries within its own budget, begun at the webhook. When it fails,
    the caller, whose stream started meanwhile, has waited through part of it: the
    connect at start gets the rest of one budget from the stream's start
    (:meth:`limit`), not a fresh one, which made a refused connection 7.5 s of
    silence. Any later connect (a reconnect) gets a whole budget.
    """

    def __init__(self) -> None:
        """Initialize with no limit: the next connect gets a whole budget."""
        self._deadline: float | None = None
        self._refusal: Refusal | None = None

    def limit(self, waiting_since: float, refusal: Refusal) -> None:
        """Limit the next connect to one budget from ``waiting_since``.

        Args:
            waiting_since: When the caller began to wait (``time.monotonic()``).
            refusal: Why the retries so far failed (the call's failure if no time is left).
        """
        self._deadline = waiting_since + CONNECT_BUDGET_SECS
        self._refusal = refusal

    def take(self) -> float | Refusal:
        """The seconds the next connect may take, or the refusal when too few are left.

        Returns:
            A budget for :func:`open_realtime`, or the refusal the call fails with.
        """
        deadline, self._deadline = self._deadline, None
        if deadline is None:
            return CONNECT_BUDGET_SECS
        left = deadline - time.monotonic()
        if left >= MIN_CONNECT_SECS:
            return left
        refusal = self._refusal or Refusal("timeout", True, "no time left to connect")
        logger.error(f"The Realtime API could not be reached in time: {refusal.detail}")
        return refusal


def read_refusal(error: BaseException) -> Refusal:
    """Read a failed handshake: its code and whether a retry may cure it.

    Args:
        error: What opening the websocket raised.

    Returns:
        The refusal.
    """
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        code, message = _error_body(error.response.body)
        code = code or f"http_{status}"
        transient = status in _TRANSIENT_STATUSES and code not in _FATAL_CODES
        return Refusal(code, transient, f"HTTP {status}: {message or 'no message'}")
    if isinstance(error, TimeoutError):
        return Refusal("timeout", True, "the handshake did not finish in time")
    if isinstance(error, OSError):
        return Refusal("unreachable", True, f"{type(error).__name__}: {error}")
    return Refusal("handshake", True, f"{type(error).__name__}: {error}")


def _error_body(body: bytes | bytearray | None) -> tuple[str | None, str | None]:
    """The ``error.code`` (or ``type``) and ``message`` of an OpenAI JSON error body."""
    try:
        error = json.loads(body or b"").get("error") or {}
    except (ValueError, AttributeError):
        return None, None
    if not isinstance(error, dict):
        return None, None
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (str(code)[:64] if code else None), (str(message)[:300] if message else None)


async def open_realtime(
    open_once: Callable[[float], Awaitable[ClientConnection]],
    *,
    budget_secs: float = CONNECT_BUDGET_SECS,
    name: str = "Realtime",
) -> ClientConnection:
    """Open the websocket, retrying transient refusals with backoff within ``budget_secs``.

    Args:
        open_once: Opens it once, given the seconds the handshake may take.
        budget_secs: Most seconds for all attempts and waits together.
        name: Who is connecting, for the logs.

    Returns:
        The open websocket.

    Raises:
        ConnectFailed: At once for a refusal no retry cures; for a transient one
            when the budget is spent.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_secs
    attempt = 0
    while True:
        attempt += 1
        timeout = min(ATTEMPT_TIMEOUT_SECS, deadline - loop.time())
        try:
            return await asyncio.wait_for(open_once(timeout), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            refusal = read_refusal(e)
        if not refusal.transient:
            logger.error(f"{name}: the Realtime API refused the session: {refusal.detail}")
            raise ConnectFailed(refusal)
        wait = RETRY_DELAYS_SECS[min(attempt, len(RETRY_DELAYS_SECS)) - 1]
        if loop.time() + wait >= deadline - 0.05:
            logger.error(
                f"{name}: Realtime connect failed {attempt} times in {budget_secs:g} s "
                f"(last: {refusal.detail}); giving up"
            )
            raise ConnectFailed(refusal)
        logger.warning(
            f"{name}: Realtime connect attempt {attempt} failed ({refusal.detail}); "
            f"retrying in {wait:g} s"
        )
        await asyncio.sleep(wait)
