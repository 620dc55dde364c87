#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The playback clock: what the caller has actually heard, from Twilio's mark echoes.

Twilio buffers the audio we send and plays it on the phone's own clock. The
only news of what was played is the ``mark`` echo: send a mark after a chunk of
audio and Twilio sends it back once the phone has played everything before it
(and at once, for every pending mark, on ``clear``).

:class:`PlaybackClock` keeps that bookkeeping with no I/O of its own: every
chunk sent is registered with its mark, every echo moves the heard position,
and between echoes the position advances with the wall clock, but never past
the next mark that has not come back (the phone may have stalled). From that
it answers how much of each assistant item the caller has heard and how much
audio is waiting at Twilio (the lead).
"""

import itertools
from collections import deque
from dataclasses import dataclass

from pipecat_realtime_twilio.audio import BYTES_PER_MS

MARKS_OVERDUE_SECS = 2.0
"""Without any echo for this long while audio is pending, trust the wall clock instead."""

_RTT_WEIGHT = 0.2  # of each new round-trip sample in the running estimate


@dataclass
class _SentChunk:
    mark: str
    end: int  # stream position (bytes) at the end of the chunk
    size: int
    item: str | None
    item_end: int  # bytes of the item sent up to the end of the chunk
    sent_at: float
    starts_playback: bool = False  # a start mark: echoed as soon as Twilio has it


class PlaybackClock:
    """Tracks what the phone has played, from the marks sent and echoed.

    Positions are in bytes of 8 kHz μ-law (8 bytes per ms). Times are any
    monotonic clock in seconds (the output uses ``loop.time()``).
    """

    def __init__(self, *, marks_overdue_secs: float = MARKS_OVERDUE_SECS):
        """Initialize an idle clock.

        Args:
            marks_overdue_secs: How long without any echo, while audio is pending,
                before the clock assumes the phone plays in real time regardless
                (for a peer that never echoes marks).
        """
        self._marks_overdue_secs = marks_overdue_secs
        self._names = itertools.count(1)
        self._pending: deque[_SentChunk] = deque()
        self._sent = 0  # stream bytes sent
        self._acked = 0  # stream bytes the phone is known to have played
        # When playback of the first pending chunk is known to have begun; None
        # while that is unknown (audio sent to an idle phone, start mark not back).
        self._anchor: float | None = None
        self._progress_at = 0.0  # last echo, or when the pending audio started
        self._item_sent: dict[str, int] = {}
        self._item_heard: dict[str, int] = {}
        self.marks_overdue = False
        self.round_trip_secs: float | None = None

    # -- sending ---------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Whether the phone has played everything sent (no mark pending)."""
        return not self._pending

    def start_mark(self, now: float) -> str:
        """Register a mark sent ahead of audio for an idle phone.

        Its echo comes back as soon as Twilio has it, which is when the audio
        after it starts to play.

        Args:
            now: The current time.

        Returns:
            The mark's name.
        """
        name = self._add(0, None, now)
        self._pending[-1].starts_playback = True
        return name

    def sent(self, size: int, item: str | None, now: float) -> str:
        """Register a chunk of audio sent to the phone; send its mark right after it.

        Args:
            size: The chunk's length in bytes.
            item: The assistant item the audio belongs to, if known.
            now: The current time.

        Returns:
            The name of the mark to send after the chunk.
        """
        return self._add(size, item, now)

    def _add(self, size: int, item: str | None, now: float) -> str:
        if not self._pending:
            self._anchor = None
            self._progress_at = now
        name = f"m{next(self._names)}"
        self._sent += size
        item_end = 0
        if item is not None:
            item_end = self._item_sent.get(item, 0) + size
            self._item_sent[item] = item_end
        self._pending.append(_SentChunk(name, self._sent, size, item, item_end, now))
        return name

    # -- echoes ----------------------------------------------------------------------

    def echoed(self, name: str, now: float) -> bool:
        """Note the echo of mark ``name``: everything sent before it was played.

        Args:
            name: The mark's name.
            now: When the echo arrived.

        Returns:
            Whether the mark was pending; echoes of marks flushed by a clear,
            or unknown ones, are ignored.
        """
        if not any(chunk.mark == name for chunk in self._pending):
            return False
        while self._pending:
            chunk = self._pending.popleft()
            if chunk.starts_playback:
                # Nothing played before it: its echo took one network round trip.
                sample = now - chunk.sent_at
                rtt = self.round_trip_secs
                self.round_trip_secs = sample if rtt is None else rtt + _RTT_WEIGHT * (sample - rtt)
            self._acked = max(self._acked, chunk.end)
            if chunk.item is not None:
                self._item_heard[chunk.item] = max(
                    self._item_heard.get(chunk.item, 0), chunk.item_end
                )
            if chunk.mark == name:
                break
        self._progress_at = now
        # The phone went on to what follows at the latest now, or when it was sent.
        self._anchor = max(now, self._pending[0].sent_at) if self._pending else None
        self.marks_overdue = False
        return True

    def clear(self, now: float) -> dict[str, int]:
        """Note a ``clear``: the phone drops everything not yet played.

        The phone goes on playing until the ``clear`` reaches it, half a round
        trip (measured from start marks) after it was sent; that audio is heard
        too.

        Args:
            now: When the clear was sent.

        Returns:
            For every item that had audio pending, the bytes of it the caller heard.
        """
        arrives = self.clear_lands(now)
        heard = {
            chunk.item: self.heard_bytes(chunk.item, arrives)
            for chunk in self._pending
            if chunk.item is not None
        }
        for item, size in heard.items():
            self._item_heard[item] = size
            self._item_sent[item] = size
        self._pending.clear()
        self._acked = self._sent
        self._anchor = None
        return heard

    def clear_lands(self, now: float) -> float:
        """When a ``clear`` sent at ``now`` reaches the phone: half a measured round trip later.

        Args:
            now: When the clear is sent.
        """
        return now + (self.round_trip_secs or 0.0) / 2

    # -- reading ---------------------------------------------------------------------

    def played_bytes(self, now: float) -> int:
        """Stream position (bytes) the phone has played by ``now`` (best estimate).

        Between echoes the phone plays in real time, so the position advances
        with the clock from the moment playback of the first pending chunk is
        known to have begun, but never past that chunk's mark, which has not come
        back. If no echo arrives for ``marks_overdue_secs``, the clock gives up
        on marks and assumes real-time playback of everything sent.

        Args:
            now: The current time.

        Returns:
            The position; never more than was sent.
        """
        if not any(chunk.size for chunk in self._pending):
            return self._acked
        if now - self._progress_at >= self._marks_overdue_secs:
            self.marks_overdue = True
            return min(self._sent, self._acked + _bytes(now - self._progress_at))
        if self._anchor is None or now <= self._anchor:
            return self._acked
        first = next(chunk for chunk in self._pending if chunk.size)
        return min(first.end, self._acked + _bytes(now - self._anchor))

    def heard_bytes(self, item: str, now: float) -> int:
        """How many bytes of ``item`` the caller has heard by ``now`` (best estimate).

        Args:
            item: The assistant item.
            now: The current time.

        Returns:
            Bytes heard; never more than were sent.
        """
        heard = self._item_heard.get(item, 0)
        position = self.played_bytes(now)
        for chunk in self._pending:
            start = chunk.end - chunk.size
            if start >= position:
                break
            if chunk.item == item:
                heard = max(heard, chunk.item_end - chunk.size + min(chunk.size, position - start))
        return heard

    def confirmed_bytes(self, item: str) -> int:
        """Bytes of ``item`` the phone has confirmed playing with mark echoes.

        Args:
            item: The assistant item.
        """
        return self._item_heard.get(item, 0)

    def settle(self, now: float) -> None:
        """With marks overdue, count everything the wall clock says was played as played.

        Args:
            now: The current time.
        """
        if self._pending and self.marks_overdue and self.played_bytes(now) >= self._sent:
            self.echoed(self._pending[-1].mark, now)

    def lead_ms(self, now: float) -> float:
        """Milliseconds of audio sent that the phone has not played yet."""
        return (self._sent - self.played_bytes(now)) / BYTES_PER_MS

    def forget(self, item: str) -> None:
        """Drop the bookkeeping of an item nobody will ask about again."""
        self._item_sent.pop(item, None)
        self._item_heard.pop(item, None)


def _bytes(secs: float) -> int:
    return round(secs * 1000 * BYTES_PER_MS)
