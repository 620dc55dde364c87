#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Keypad input: digits the caller presses, grouped and handed to the model."""

import asyncio
from collections.abc import Awaitable, Callable

from pipecat_realtime_twilio.agent.controls import AgentControls

DTMF_TIMEOUT_SECS = 1.0
"""Keypad digits pressed within this long of each other reach the model together."""


class Keypad:
    """Groups the caller's key presses and sends each group on.

    Keys pressed within ``timeout_secs`` of each other form one group; ``#``
    ends a group at once.
    """

    def __init__(
        self,
        agent: AgentControls,
        send: Callable[[str], Awaitable[None]],
        timeout_secs: float = DTMF_TIMEOUT_SECS,
    ):
        """Initialize the keypad.

        Args:
            agent: The agent whose task manager runs the group timer.
            send: Called with each group of keys, e.g. ``"12#"``.
            timeout_secs: Most seconds between two keys of one group.
        """
        self._agent = agent
        self._send = send
        self._timeout_secs = timeout_secs
        self._keys: list[str] = []
        self._timer: asyncio.Task | None = None

    async def press(self, key: str) -> None:
        """Note a key the caller pressed.

        Args:
            key: ``0``-``9``, ``*`` or ``#``.
        """
        self._keys.append(key)
        await self.stop()
        if key == "#":
            await self._flush()
        else:
            self._timer = self._agent.create_task(self._flush_later(), "dtmf")

    async def stop(self) -> None:
        """Stop waiting for more keys (what was pressed stays for the next group)."""
        if self._timer is not None:
            await self._agent.cancel_task(self._timer)
            self._timer = None

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._timeout_secs)
        self._timer = None
        await self._flush()

    async def _flush(self) -> None:
        keys = "".join(self._keys)
        self._keys.clear()
        if keys:
            await self._send(keys)
