#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Times given by operators (``--since``, ``?since=``), read the same way everywhere.

- ``2026-11-30`` or ``2026-11-30T14:05`` (ISO 8601; without a zone, UTC);
- ``1764511200`` (Unix seconds);
- ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (that long before now).

Example::

    since = parse_time("7d")          # a week ago, as Unix time
    until = parse_time("2026-11-30")  # midnight UTC
"""

import re
import time
from datetime import UTC, datetime

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

TIME_FORMS = "an ISO 8601 date or time (UTC unless it says), Unix seconds, or 30m, 12h, 7d ago"
"""The forms `parse_time` reads, for messages."""


def parse_time(text: str, now: float | None = None) -> float:
    """Read an operator's time as Unix seconds.

    Args:
        text: ``2026-11-30``, ``2026-11-30T14:05:00+01:00``, ``1764511200``, or a
            duration before now (``30m``, ``12h``, ``7d``, ``2w``).
        now: The present, as Unix time (the clock's by default).

    Returns:
        Unix seconds.

    Raises:
        ValueError: If ``text`` is none of the forms (the message names them).
    """
    value = text.strip()
    ago = _AGO.fullmatch(value.lower())
    if ago is not None:
        present = time.time() if now is None else now
        return present - float(ago.group(1)) * _UNIT_SECS[ago.group(2)]
    if re.fullmatch(r"\d{9,}(?:\.\d+)?", value):
        return float(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give {TIME_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def utc_text(timestamp: float) -> str:
    """Unix time as ``2026-11-30 14:05:09 UTC``.

    Args:
        timestamp: Unix seconds.
    """
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
