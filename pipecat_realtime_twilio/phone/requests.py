#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Request bodies from strangers, read with a size cap and a deadline; refusals logged briefly.

Starlette's ``request.body()`` reads whatever a client sends, as slowly as it
sends it. :func:`read_body` is the reader for every route that anyone can
reach: it refuses a body over its cap before reading it (by its
``Content-Length``) or as soon as it passes the cap (a chunked one), and one
that does not arrive within its deadline. :func:`refusal` makes the matching
``HTTPException`` and logs one short, rate-limited line: the method, the path
without its query (only the query's length), and the reason.
"""

import asyncio

from fastapi import HTTPException, Request

from pipecat_realtime_twilio.logs import Throttled, field

MAX_WEBHOOK_BODY_BYTES = 64 * 1024
"""Largest body of a Twilio webhook accepted; Twilio's are a few KB of form fields."""

PATH_LIMIT = 60
"""Most characters of a request's path written to a log line."""

CLOSE = {"Connection": "close"}
"""Headers of a refusal: the connection closes, so an unread body is never read."""

_refused = Throttled()


def describe(request: Request) -> str:
    """A request, for a log line: ``POST /incoming (query of 60000 chars)``.

    Args:
        request: The request.

    Returns:
        Its method and path (escaped, at most ``PATH_LIMIT`` characters), and the
        length of its query string if it has one; never the query itself.
    """
    query = request.scope.get("query_string") or b""
    length = f" (query of {len(query)} chars)" if query else ""
    return f"{field(request.method, 10)} {field(request.url.path, PATH_LIMIT)}{length}"


def refusal(request: Request, status: int, reason: str, *, kind: str) -> HTTPException:
    """Log a refused request (rate limited) and make the exception that answers it.

    The answer closes the connection (``Connection: close``), so whatever the
    client has not sent yet is never read.

    Args:
        request: The refused request.
        status: The HTTP status to answer with (403, 408, 413...).
        reason: Why, in a few words of our own (never the client's text); also
            the answer's body.
        kind: The kind of refusal: each kind logs at most one line every 10 s,
            the next one counting those held back.

    Returns:
        The exception to raise.
    """
    _refused.warning(kind, f"Refused {describe(request)}: {reason}")
    return HTTPException(status_code=status, detail=reason, headers=CLOSE)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """Read a request's body: at most ``limit`` bytes, all of it within ``timeout`` seconds.

    Use it instead of ``request.body()``, ``request.json()`` or ``request.form()``
    on any route a stranger can reach, and parse the bytes it returns (for JSON:
    ``json.loads(await read_body(request, 16 * 1024, settings.http_body_timeout_secs))``).
    It reads the request's stream, so call it once, before anything else reads the body.

    - A ``Content-Length`` above ``limit`` is refused (413) before any of the body is read.
    - A body without one (``Transfer-Encoding: chunked``) is read chunk by chunk
      and refused (413) as soon as it passes ``limit``; so is one longer than it said.
    - A body that has not all arrived ``timeout`` seconds after this call is refused (408).

    Each refusal closes the connection and logs a short line (:func:`refusal`).

    Args:
        request: The request.
        limit: Most bytes of body accepted.
        timeout: Most seconds to wait for the whole body (``HTTP_BODY_TIMEOUT_SECS``).

    Returns:
        The body.

    Raises:
        HTTPException: 400 (a malformed ``Content-Length``), 413 (too large) or 408 (too slow).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise refusal(request, 400, "malformed Content-Length", kind="content-length")
        if int(declared) > limit:
            raise refusal(request, 413, f"body over {limit} bytes", kind="too-large")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise refusal(request, 413, f"body over {limit} bytes", kind="too-large")
    except TimeoutError:
        raise refusal(
            request, 408, f"body not received within {timeout:g} s", kind="slow-body"
        ) from None
    return bytes(body)
