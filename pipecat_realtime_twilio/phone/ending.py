#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""How a call ended, as data: one :class:`CallEnd` for every way a call can end."""

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pipecat_realtime_twilio.failures import Failure
from pipecat_realtime_twilio.targets import InvalidTransferTarget, check_transfer_target


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
        transfer_to: Where the fallback transfers the caller (``FAILED``), if anywhere.
        at: When the end was decided, as a Unix timestamp (not compared).
    """

    kind: EndKind
    detail: str = ""
    next_twiml: str | None = None
    failure: Failure | None = None
    transfer_to: str | None = None
    at: float = field(default_factory=time.time, compare=False)

    def transfer(self) -> dict[str, Any] | None:
        """The transfer this end makes, as call records keep it (``CallRecord.transfers``).

        Returns:
            ``{"target", "at", "kind": "transfer"}`` for a transfer by the bot,
            ``{"target", "at", "kind": "fallback"}`` for a fallback that dials a
            number (not one whose number cannot be dialled: that says its line);
            None for any other end.
        """
        if self.kind is EndKind.TRANSFERRED:
            return {"target": self.detail, "at": self.at, "kind": "transfer"}
        if self.kind is EndKind.FAILED and self.transfer_to:
            try:
                target = check_transfer_target(self.transfer_to)
            except InvalidTransferTarget:
                return None
            return {"target": target, "at": self.at, "kind": "fallback"}
        return None

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
