#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What failed in a call, as data: the stage and the code, for records and metrics.

Every failure that hands a caller to the fallback (a line in Twilio's voice, or
a transfer) is a :class:`Failure`. The call record's end reason is
``failed: <stage>: <code>``; the metric ``prt_call_failures_total`` counts it
with bounded labels: the stage is one of :class:`Stage`, and the code is one of
:data:`KNOWN_CODES` (anything else counts as ``other``).
"""

import re
from dataclasses import dataclass
from enum import StrEnum

FALLBACK_LINE = "Sorry, I'm having technical trouble and can't continue this call. Goodbye."
"""What the caller hears (in Twilio's voice) when the bot cannot go on."""


class Stage(StrEnum):
    """The stages of a call where something can fail."""

    BUILD = "build"
    """Building the bot's pipeline (its ``pipeline()`` raised)."""
    CONNECT = "connect"
    """Opening the Realtime websocket (pre-warmed or at the start of the call)."""
    CONFIGURE = "configure"
    """``session.update``: the session must confirm ``audio/pcmu`` both ways."""
    GREET = "greet"
    """The greeting: the first response of the call."""
    RESPOND = "respond"
    """Any later response."""
    RECONNECT = "reconnect"
    """Reopening a session whose socket dropped."""
    ROTATE = "rotate"
    """Moving to a fresh session before (or at) the session's cap."""
    TASK = "task"
    """An unexpected exception in the call's pipeline or task."""
    STREAM = "stream"
    """Twilio's media stream could not reach the runner (``stream-error`` before it
    started); the code is Twilio's error number (see :func:`stream_error_code`)."""

    def __str__(self) -> str:
        """The stage's name, as records and metrics give it."""
        return self.value


TWILIO_STREAM_ERRORS = ("31901", "31902", "31903", "31920", "31921", "31922", "31924", "31951")
"""Twilio's Media Streams error numbers: the websocket's connection timeout, refusal and
broken pipe, handshake (not 101), close by the server, no answer, protocol error, and
invalid message."""

KNOWN_CODES = frozenset(
    {
        # handshake refusals and connection trouble
        "invalid_api_key",
        "model_not_found",
        "unsupported_country_region_territory",
        "rate_limit_exceeded",
        "insufficient_quota",
        "server_error",
        "http_400",
        "http_401",
        "http_403",
        "http_404",
        "http_429",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "timeout",
        "unreachable",
        "handshake",
        # configuration
        "invalid_value",
        "audio_format",
        "account_deactivated",
        # responses
        "no_first_byte",
        "session_expired",
        # GPT-Live: the server closed the session for content (a safety stop)
        "closed_content",
        # the pipeline
        "exception",
        "reconnects_exhausted",
        # Twilio's media stream (its statusCallback's stream-error): Twilio's error numbers
        *TWILIO_STREAM_ERRORS,
        "stream_error",
    }
)
"""The codes the failure metric names; any other is counted as ``other``."""


def stream_error_code(error: str | None) -> str:
    """The code of a ``stream-error``: Twilio's error number in its ``StreamError`` text.

    Args:
        error: The ``StreamError`` parameter, e.g. ``"31920 Stream - WebSocket -
            Handshake Error"``.

    Returns:
        The first five-digit number in it (``"31920"``), else ``"stream_error"``.
    """
    found = re.search(r"\b(\d{5})\b", error or "")
    return found.group(1) if found else "stream_error"


@dataclass(frozen=True)
class Failure:
    """Something failed and the caller was handed to the fallback.

    Parameters:
        stage: Where in the call it failed.
        code: What failed: an API error code (``invalid_api_key``), ``http_<status>``,
            ``timeout``, ``no_first_byte``, or an exception's class name.
        detail: A human-readable detail for the logs (never in a metric).
    """

    stage: Stage
    code: str
    detail: str = ""

    @property
    def reason(self) -> str:
        """The end reason: ``failed: <stage>: <code>``."""
        return f"failed: {self.stage}: {self.code}"

    @property
    def metric_code(self) -> str:
        """The code as a bounded metric label: a known code, ``exception`` or ``other``."""
        if self.code in KNOWN_CODES:
            return self.code
        if self.stage in (Stage.BUILD, Stage.TASK):
            return "exception"
        return "other"

    def __str__(self) -> str:
        """The failure for a log line."""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.stage}: {self.code}{detail}"
