#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The start of a Twilio media stream: reading and checking its ``start`` message.

Twilio opens a stream with ``connected``, then ``start``. Anything else (a
message that is not JSON, too big, of another event, or a ``start`` with a
field missing or of the wrong type or size; see
:mod:`~pipecat_realtime_twilio.phone.messages`) rejects the stream with a
:class:`StreamRejected` whose text is short and safe to log: whoever accepted
the websocket closes it (1008) and logs one line.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from pipecat_realtime_twilio.audio import SAMPLE_RATE
from pipecat_realtime_twilio.logs import field as safe
from pipecat_realtime_twilio.phone.messages import (
    Connected,
    InboundMessage,
    Start,
    describe_error,
    parse_message,
)
from pipecat_realtime_twilio.phone.serializer import MAX_MESSAGE_BYTES

START_TIMEOUT_SECS = 10.0
"""How long a new media stream may take to send its ``start`` message."""

_ENCODING = "audio/x-mulaw"


class StreamRejected(Exception):
    """The websocket did not open a valid Twilio media stream.

    Its text says why, briefly; values from the stream in it went through
    :func:`~pipecat_realtime_twilio.logs.field`, so it can be logged as it is.
    """


@dataclass
class StreamStart:
    """What Twilio's ``start`` message says about a media stream.

    Parameters:
        stream_sid: The Media Stream SID (MZ...).
        call_sid: The Call SID (CA...).
        account_sid: The account SID (AC...).
        parameters: The TwiML ``<Parameter>`` values (``start.customParameters``).
        media_format: The stream's media format (``encoding``, ``sampleRate``, ``channels``).
        started_at: Unix time the ``start`` message arrived.
    """

    stream_sid: str
    call_sid: str
    account_sid: str
    parameters: dict[str, str] = field(default_factory=dict)
    media_format: dict = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)


async def read_stream_start(
    websocket: WebSocket, timeout: float = START_TIMEOUT_SECS
) -> StreamStart:
    """Read Twilio's ``connected`` and ``start`` messages from an accepted websocket.

    ``connected`` may be missing; whatever else comes before ``start``, or
    instead of a valid one, rejects the stream.

    Args:
        websocket: The accepted media-stream websocket.
        timeout: Seconds to wait for ``start``.

    Returns:
        The stream's start information.

    Raises:
        StreamRejected: If no valid ``start`` arrives in time or the format is not
            8 kHz mono μ-law.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    message = await _next_message(websocket, deadline - loop.time(), timeout)
    if isinstance(message, Connected):
        message = await _next_message(websocket, deadline - loop.time(), timeout)
    if not isinstance(message, Start):
        raise StreamRejected(f"expected 'start', got '{message.event}'")
    return stream_start(message)


def stream_start(message: Start) -> StreamStart:
    """The stream information of a validated ``start`` message.

    Args:
        message: The ``start`` message.

    Returns:
        The stream's start information.

    Raises:
        StreamRejected: If it names no stream SID or its format is not 8 kHz mono μ-law.
    """
    start = message.start
    stream_sid = message.sid
    if stream_sid is None:
        raise StreamRejected("'start' message without a streamSid")
    media = start.media_format
    if (media.encoding, media.sample_rate, media.channels) != (_ENCODING, SAMPLE_RATE, 1):
        raise StreamRejected(
            f"unsupported media format '{safe(media.encoding, 40)}' at "
            f"{media.sample_rate} Hz, {media.channels} channel(s)"
        )
    return StreamStart(
        stream_sid=stream_sid,
        call_sid=start.call_sid,
        account_sid=start.account_sid,
        parameters=dict(start.custom_parameters),
        media_format=media.model_dump(by_alias=True),
    )


async def _next_message(websocket: WebSocket, wait: float, timeout: float) -> InboundMessage:
    """The stream's next message, validated."""
    try:
        received = await asyncio.wait_for(websocket.receive(), max(wait, 0.0))
    except TimeoutError:
        raise StreamRejected(f"no 'start' message within {timeout:g} s") from None
    if received["type"] == "websocket.disconnect":
        raise StreamRejected("the stream closed before 'start'")
    raw = received.get("text") or received.get("bytes") or b""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise StreamRejected(f"a {len(raw)}-byte message before 'start'")
    try:
        return parse_message(raw)
    except ValidationError as e:
        raise StreamRejected(describe_error(e)) from None


async def refuse_stream(websocket: WebSocket, code: int = 1008) -> None:
    """Close a media stream that may not run, even if the other side has gone already.

    Before the websocket is accepted the upgrade is answered 403; after, it is
    closed with ``code``.

    Args:
        websocket: The media-stream websocket.
        code: The close code.
    """
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # closed by the other side
        await websocket.close(code=code)
