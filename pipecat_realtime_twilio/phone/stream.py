#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The start of a Twilio media stream: reading and checking its ``start`` message."""

import asyncio
import json
import time
from dataclasses import dataclass, field

from fastapi import WebSocket
from loguru import logger

from pipecat_realtime_twilio.audio import SAMPLE_RATE
from pipecat_realtime_twilio.phone.serializer import MAX_MESSAGE_BYTES

START_TIMEOUT_SECS = 10.0
"""How long a new media stream may take to send its ``start`` message."""

_MAX_MESSAGES_BEFORE_START = 10


class StreamRejected(Exception):
    """The websocket did not open a valid Twilio media stream."""


@dataclass
class StreamStart:
    """What Twilio's ``start`` message says about a media stream.

    Parameters:
        stream_sid: The Media Stream SID (MZ...).
        call_sid: The Call SID (CA...).
        account_sid: The account SID (AC...).
        parameters: The TwiML ``<Parameter>`` values (``start.customParameters``).
        media_format: The stream's media format.
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

    Args:
        websocket: The accepted media-stream websocket.
        timeout: Seconds to wait for ``start``.

    Returns:
        The stream's start information.

    Raises:
        StreamRejected: If no valid ``start`` arrives in time or the format is not 8 kHz μ-law.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(_MAX_MESSAGES_BEFORE_START):
        try:
            message = await asyncio.wait_for(websocket.receive(), deadline - loop.time())
        except TimeoutError:
            raise StreamRejected(f"no 'start' message within {timeout:.0f} s") from None
        if message["type"] == "websocket.disconnect":
            raise StreamRejected("the stream closed before 'start'")
        raw = message.get("text") or message.get("bytes") or b""
        if len(raw) > MAX_MESSAGE_BYTES:
            logger.warning(f"Ignoring a {len(raw)}-byte message before 'start'")
            continue
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.warning(f"Ignoring a non-JSON message before 'start': {raw[:80]!r}")
            continue
        if not isinstance(data, dict) or data.get("event") != "start":
            if not (isinstance(data, dict) and data.get("event") == "connected"):
                logger.warning(f"Ignoring an unexpected message before 'start': {raw[:80]!r}")
            continue
        return _parse_start(data)
    raise StreamRejected(f"no 'start' among the first {_MAX_MESSAGES_BEFORE_START} messages")


def _parse_start(data: dict) -> StreamStart:
    start = data.get("start")
    if not isinstance(start, dict):
        raise StreamRejected("'start' message without a start object")
    stream_sid = start.get("streamSid") or data.get("streamSid")
    call_sid = start.get("callSid")
    if not isinstance(stream_sid, str) or not isinstance(call_sid, str):
        raise StreamRejected("'start' message without streamSid or callSid")
    media_format = start.get("mediaFormat") or {}
    encoding = media_format.get("encoding", "audio/x-mulaw")
    rate = int(media_format.get("sampleRate", SAMPLE_RATE))
    if encoding != "audio/x-mulaw" or rate != SAMPLE_RATE:
        raise StreamRejected(f"unsupported media format {encoding} at {rate} Hz")
    parameters = start.get("customParameters") or {}
    return StreamStart(
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=str(start.get("accountSid", "")),
        parameters={str(k): str(v) for k, v in parameters.items()},
        media_format=media_format,
    )
