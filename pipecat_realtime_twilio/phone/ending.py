#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""How a call ended, as data: one :class:`CallEnd` for every way a call can end."""

from dataclasses import dataclass
from enum import Enum

from pipecat_realtime_twilio.failures import Failure


class EndKind(Enum):
    """The ways a call ends."""

    HUNG_UP = "hung up"
    """Twilio said ``stop``: the caller hung up."""
    STREAM_CLOSED = "stream closed"
    """The media stream's socket closed without a ``stop``."""
    ENDED = "ended"
    """The bot (or a limit) ended the call."""
    TRANSFERRED = "transferred"
    """The bot transferred the call."""
    FAILED = "failed"
    """The bot could not go on (see :class:`~pipecat_realtime_twilio.failures.Failure`):
    a fallback took the caller."""
    SHUT_DOWN = "shut down"
    """The runner ended the call (drain timeout)."""
    PIPELINE_ENDED = "pipeline ended"
    """The call's pipeline finished by itself."""


_FIXED_REASONS = {
    EndKind.HUNG_UP: "caller hung up",
    EndKind.STREAM_CLOSED: "stream closed",
    EndKind.SHUT_DOWN: "runner shutting down",
    EndKind.PIPELINE_ENDED: "pipeline ended",
}


@dataclass(frozen=True)
class CallEnd:
    """How a call ended, and what Twilio runs after its stream.

    Parameters:
        kind: The way it ended.
        detail: The bot's reason (``ENDED``) or the transfer target (``TRANSFERRED``).
        next_twiml: The TwiML Twilio runs once the stream is over (``<Dial>``, or a
            spoken line and ``<Hangup/>``); None: the call hangs up.
        failure: What failed (``FAILED``).
    """

    kind: EndKind
    detail: str = ""
    next_twiml: str | None = None
    failure: Failure | None = None

    @property
    def reason(self) -> str:
        """The end reason as logs, metrics and call records give it."""
        if self.kind is EndKind.ENDED:
            return self.detail or "bot ended the call"
        if self.kind is EndKind.TRANSFERRED:
            return f"transferred to {self.detail}"
        if self.kind is EndKind.FAILED:
            return self.failure.reason if self.failure else f"failed: {self.detail}"
        return _FIXED_REASONS[self.kind]
