#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a GPT-Live call is billed for: seconds of active session, and the backend's tokens.

GPT-Live bills the Live model per second of active session (quoted per minute) and
the Responses model it delegates to by its tokens. The server reports each
session's cumulative billable seconds in ``session.usage.updated`` and, finally, in
``session.closed`` (``usage.seconds``; never to be summed across events of one
session); the backend's tokens come in the ``usage`` of each delegated
``response.completed`` (nested in ``response.event``). A call may use several
sessions (a reconnect, the session's cap): :class:`LiveUsage` keeps each one's
seconds, and a session that never reported any counts for the time it was open on
our clock, so a call is never priced as free.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Any

from pipecat_realtime_twilio.agent.usage import Usage, _count


@dataclass
class _Session:
    opened_at: float  # time.monotonic()
    closed_at: float | None = None
    reported: float | None = None  # the server's cumulative billable seconds, latest


@dataclass
class LiveUsage:
    """Billable Live seconds of a call, session by session.

    Parameters:
        backend_model: The Responses model delegated work went to.
    """

    backend_model: str = ""
    _sessions: list[_Session] = field(default_factory=list)

    def opened(self) -> None:
        """A session started (``session.started``)."""
        self.closed()
        self._sessions.append(_Session(opened_at=time.monotonic()))

    def reported(self, seconds: Any) -> None:
        """The server reported the session's cumulative billable seconds.

        Args:
            seconds: ``usage.seconds`` of ``session.usage.updated`` or ``session.closed``
                (anything but a finite number of 0 or more is ignored).
        """
        if not self._sessions or isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return
        if not math.isfinite(seconds) or seconds < 0:
            return
        current = self._sessions[-1]
        current.reported = max(current.reported or 0.0, float(seconds))

    def closed(self) -> None:
        """The session in progress, if any, is over (closed, dropped, or the call ended)."""
        if self._sessions and self._sessions[-1].closed_at is None:
            self._sessions[-1].closed_at = time.monotonic()

    @property
    def sessions(self) -> int:
        """Sessions the call used."""
        return len(self._sessions)

    @property
    def billed_seconds(self) -> float:
        """Billable seconds of all sessions: as reported, else as measured (rounded up)."""
        now = time.monotonic()
        total = 0.0
        for session in self._sessions:
            if session.reported is not None:
                total += session.reported
            else:
                total += float(int(max(0.0, (session.closed_at or now) - session.opened_at)) + 1)
        return total

    def as_dict(self) -> dict[str, Any]:
        """The call record's ``live``: billed seconds, sessions and the backend model."""
        return {
            "billed_seconds": self.billed_seconds,
            "sessions": self.sessions,
            "backend_model": self.backend_model,
        }


def add_backend_usage(usage: Usage, response_usage: Any) -> None:
    """Add a delegated Responses response's token usage to a call's :class:`Usage`.

    The backend reads and writes text: its uncached input, cached input and output
    tokens (reasoning included) go to the text fields; no audio tokens.

    Args:
        usage: The call's usage.
        response_usage: ``response.usage`` of a delegated ``response.completed``:
            ``{"input_tokens", "input_tokens_details": {"cached_tokens"}, "output_tokens"}``.
    """
    if not isinstance(response_usage, dict):
        return
    details = response_usage.get("input_tokens_details")
    cached = _count(details, "cached_tokens")
    usage.input_text_tokens += max(0, _count(response_usage, "input_tokens") - cached)
    usage.cached_text_tokens += cached
    usage.output_text_tokens += _count(response_usage, "output_tokens")
