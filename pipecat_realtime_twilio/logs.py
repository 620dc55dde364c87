#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Log lines that strangers cannot forge, flood, or fill with callers' numbers.

- :func:`field` quotes a value that came from outside (a CallSid, a URL, a
  parameter): control characters are escaped, so a newline cannot start a
  forged log line, and it is cut to a bounded length.
- :func:`masked_number` masks a phone number (``+1*******67``) unless
  ``LOG_PHONE_NUMBERS=true`` (see :func:`show_numbers`).
- :class:`Throttled` logs a kind of line at most once per interval, counting
  the ones it held back, so a flood of bad requests writes a few lines.
- :func:`patch_record` is the loguru patcher the CLI installs: whatever a
  message holds, it stays on one line, and the numbers in it are masked
  (:func:`mask_numbers`) unless shown.
"""

import json
import re
import time
import traceback
from datetime import UTC
from typing import Any

from loguru import logger

FIELD_LIMIT = 80
"""Most characters of an outside value written to a log line."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NUMBER_OR_SIP = re.compile(r"\+\d{6,15}\b|\bsips?:[^@\s'\"]+@[^\s'\"]+")
_show_numbers = False


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    code = ord(char)
    return named.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def field(value: object, limit: int = FIELD_LIMIT) -> str:
    r"""A value from outside, made safe for one log line.

    Args:
        value: The value (converted with ``str``).
        limit: Most characters kept; longer values are cut and say how much was cut.

    Returns:
        The value with control characters escaped (``\n``, ``\x1b``...), at most
        ``limit`` characters plus a ``…(+N)`` marker.
    """
    text = str(value)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    text = _CONTROL.sub(_escape, text)
    return f"{text}…(+{cut})" if cut > 0 else text


def show_numbers(enabled: bool) -> None:
    """Show phone numbers in full in log lines (``LOG_PHONE_NUMBERS``), or mask them.

    Args:
        enabled: True to show them.
    """
    global _show_numbers
    _show_numbers = enabled


def masked_number(value: str | None) -> str:
    """A phone number (or SIP URI) for a log line: masked unless :func:`show_numbers`.

    ``+15551234567`` becomes ``+1*********67`` and ``sip:alice@example.com``
    ``sip:***@example.com``; anything else (``anonymous``, ``playground``) is
    only made safe with :func:`field`.

    Args:
        value: The number, as Twilio or a bot gave it.

    Returns:
        The text to log.
    """
    if not value:
        return "?"
    if _show_numbers:
        return field(value)
    text = str(value)
    scheme, at, host = text.partition("@")
    if at and scheme.lower().startswith(("sip:", "sips:")):
        return field(f"{scheme.split(':', 1)[0]}:***@{host}")
    digits = sum(ch.isdigit() for ch in text)
    if digits < 5:
        return field(text)
    kept = 2 if text.startswith("+") else 0
    masked = text[:kept] + "".join("*" if ch.isdigit() else ch for ch in text[kept:-2])
    return field(masked + text[-2:])


def mask_numbers(text: str) -> str:
    """``text`` with every E.164 number and SIP URI in it masked, as :func:`masked_number` does.

    Nothing changes when numbers are shown (``LOG_PHONE_NUMBERS=true``).

    Args:
        text: A log line, a reason, a record field.
    """
    if _show_numbers:
        return text
    return _NUMBER_OR_SIP.sub(lambda m: masked_number(m.group()), text)


class Throttled:
    """Logs each kind of line at most once per interval; the rest are counted.

    Example::

        refused = Throttled(10.0)
        refused.warning("signature", "Refused POST /incoming: no X-Twilio-Signature")
        # at most one such line every 10 s, the next one ending "(41 more since)"
    """

    def __init__(self, interval_secs: float = 10.0):
        """Initialize the limiter.

        Args:
            interval_secs: Least seconds between two lines of one kind.
        """
        self.interval_secs = interval_secs
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> bool:
        """Log ``message`` as a warning unless a line of ``kind`` was logged lately.

        Args:
            kind: What the line is about; each kind has its own interval.
            message: The line (made of safe fields).

        Returns:
            True if it was logged, False if it was counted instead.
        """
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_secs:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({held} more since)" if held else ""
        logger.opt(depth=1).warning(message + suffix)
        return True


def patch_record(record: Any) -> None:
    """A loguru patcher: one line per message, numbers masked, the call's SID escaped.

    Args:
        record: loguru's record (changed in place).
    """
    record["message"] = mask_numbers(_CONTROL.sub(_escape, record["message"]))
    call_sid = record["extra"].get("call_sid")
    if isinstance(call_sid, str):
        record["extra"]["call_sid"] = field(call_sid, 40)


def json_line(record: Any) -> str:
    """One log line as a JSON object, for log pipelines (``LOG_FORMAT=json``).

    ``{"time": ISO 8601 in UTC, "level", "message", "call_sid", "logger", "function",
    "line"}``, and ``"exception"`` (the traceback's text) when there is one. The
    message is the patched one (:func:`patch_record`): one line, numbers masked.

    Args:
        record: loguru's record.

    Returns:
        The JSON text, on one line.
    """
    entry: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "call_sid": record["extra"].get("call_sid", "-"),
        "logger": record["name"],
        "function": record["function"],
        "line": record["line"],
    }
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        entry["exception"] = "".join(
            traceback.format_exception(exception.type, exception.value, exception.traceback)
        )
    return json.dumps(entry, ensure_ascii=False, default=str)
