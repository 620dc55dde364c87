#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A budget of caller audio per call: at most a little faster than real time.

Twilio sends 20 ms of μ-law every 20 ms. A client that sends a minute of audio
in half a second would have all of it forwarded to OpenAI (and billed) at once;
:class:`InboundBudget`, a token bucket counted in bytes of 8 kHz μ-law, lets
through at most :data:`CALLER_AUDIO_BURST_MS` at once and then
:data:`CALLER_AUDIO_RATE_FACTOR` times real time, and drops (and counts) the rest.

The bucket starts full and refills while audio comes in at real time or slower,
so Twilio's jitter and the catch-up after a network stall of up to about
:data:`CALLER_AUDIO_BURST_MS` never lose audio.
"""

import time
from collections.abc import Callable

from pipecat_realtime_twilio.audio import BYTES_PER_MS

CALLER_AUDIO_RATE_FACTOR = 1.25
"""Caller audio let through per second, in seconds of audio, once the burst is used up."""

CALLER_AUDIO_BURST_MS = 2000
"""Caller audio, in ms, that may arrive at once (after a stall) without any being dropped."""


class InboundBudget:
    """A token bucket of caller audio bytes, refilled by a monotonic clock.

    Example::

        budget = InboundBudget()
        if budget.take(len(ulaw)):
            forward(ulaw)  # otherwise it was dropped and counted

    Each :meth:`take` costs one clock reading and a few float operations.
    """

    def __init__(
        self,
        *,
        rate_factor: float = CALLER_AUDIO_RATE_FACTOR,
        burst_ms: float = CALLER_AUDIO_BURST_MS,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Initialize the budget, full.

        Args:
            rate_factor: Seconds of audio let through per second, once the burst is spent.
            burst_ms: Milliseconds of audio that may arrive at once.
            clock: Seconds from a monotonic clock (tests give their own).

        Raises:
            ValueError: If ``rate_factor`` or ``burst_ms`` is not positive.
        """
        if rate_factor <= 0 or burst_ms <= 0:
            raise ValueError("rate_factor and burst_ms must be positive")
        self.rate_factor = rate_factor
        self.burst_ms = burst_ms
        self._rate = BYTES_PER_MS * 1000.0 * rate_factor  # bytes per second
        self._capacity = BYTES_PER_MS * float(burst_ms)
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()
        self._dropped_bytes = 0
        self._dropped_packets = 0

    @property
    def dropped_bytes(self) -> int:
        """Bytes of audio refused so far."""
        return self._dropped_bytes

    @property
    def dropped_ms(self) -> float:
        """Milliseconds of audio refused so far."""
        return self._dropped_bytes / BYTES_PER_MS

    @property
    def dropped_packets(self) -> int:
        """Packets refused so far."""
        return self._dropped_packets

    def take(self, size: int) -> bool:
        """Spend ``size`` bytes of the budget, if it has them.

        Args:
            size: Bytes of μ-law in the packet.

        Returns:
            True if the packet may go on; False if it must be dropped (it is counted).
        """
        now = self._clock()
        tokens = self._tokens + (now - self._last) * self._rate
        self._last = now
        if tokens > self._capacity:
            tokens = self._capacity
        if size <= tokens:
            self._tokens = tokens - size
            return True
        self._tokens = tokens
        self._dropped_bytes += size
        self._dropped_packets += 1
        return False
