#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What the caller heard, as the phone output answers it: per item, from the playback clock.

:class:`HeardQueries` is the part of
:class:`~pipecat_realtime_twilio.phone.output.TwilioOutputTransport` that agents ask
about an assistant item (the bytes heard, confirmed, or discarded by a clear). It
reads the output's :class:`~pipecat_realtime_twilio.phone.playback.PlaybackClock`
and never sends anything.
"""

import asyncio

from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.phone.playback import PlaybackClock


class HeardQueries:
    """Per-item questions about what the caller heard (a mixin of the phone output)."""

    clock: PlaybackClock
    _dropped_items: set[str]  # items interrupted: their further audio is dropped

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def heard_ms(self, item: str) -> float:
        """Milliseconds of ``item`` the caller has heard (best estimate, now).

        Args:
            item: The assistant item id.
        """
        return self.clock.heard_bytes(item, self._now()) / BYTES_PER_MS

    def heard_bytes(self, item: str) -> int:
        """Bytes of ``item`` the caller has heard (best estimate, now).

        Args:
            item: The assistant item id.
        """
        return self.clock.heard_bytes(item, self._now())

    def confirmed_bytes(self, item: str) -> int:
        """Bytes of ``item`` the phone has confirmed playing with mark echoes.

        Args:
            item: The assistant item id.
        """
        return self.clock.confirmed_bytes(item)

    def forget(self, item: str) -> None:
        """Drop what the playback clock keeps about ``item`` (nobody will ask again).

        Args:
            item: The assistant item id.
        """
        self.clock.forget(item)

    def discarded(self, item: str) -> bool:
        """Whether ``item`` was interrupted (its further audio is dropped).

        Args:
            item: The assistant item id.
        """
        return item in self._dropped_items
