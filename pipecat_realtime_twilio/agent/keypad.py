#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Keypad input: digits the caller presses, grouped, bounded, and answered at a bounded rate.

A stranger on the phone can press keys as fast as the keypad allows. Each
response re-reads the whole conversation, so keys must not buy responses one
for one:

- Keys pressed within ``timeout_secs`` of each other form one group; ``#`` ends
  a group at once, and so does its ``max_digits``-th key (the next keys start a
  new group). Every group reaches the model (the agent's ``send``, a user
  message item), so no key is lost and no message is unbounded.
- A response to keypad input starts at once only when none started for keypad
  input within ``response_interval_secs`` and the bot is quiet (no response in
  progress, the caller has heard everything, the caller is not speaking).
  Otherwise ONE response waits until both hold; keys pressed meanwhile join the
  conversation and that one response answers them all. When the caller starts a
  turn the server answers (with the keys in context), the waiting one is dropped.
- Whether a key stops the bot talking is the agent's business (its ``send``): a
  stop costs nothing, only new responses do.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

from loguru import logger

from pipecat_realtime_twilio.agent.controls import AgentControls

DTMF_TIMEOUT_SECS = 1.0
"""Keypad digits pressed within this long of each other reach the model together."""

KEYPAD_MAX_DIGITS = 32
"""Most keys in one group: a full group goes to the model at once, the next keys start another."""

KEYPAD_RESPONSE_INTERVAL_SECS = 2.0
"""Least seconds between two responses started by keypad input; keys in between share one."""

KEYPAD_QUIET_WAIT_SECS = 30.0
"""Most seconds a waiting keypad response waits for the bot to be quiet before it is asked for."""

_POLL_SECS = 0.05  # how often a waiting response checks whether it may start


class Keypad:
    """Groups the caller's key presses, sends each group on, and asks for answers sparingly.

    Counters (for the call record): :attr:`groups` sent, :attr:`responses` asked
    for, :attr:`deferred` groups the limit held back (answered together with later
    keys by one response, or by the caller's next turn).
    """

    def __init__(
        self,
        agent: AgentControls,
        send: Callable[[str], Awaitable[None]],
        respond: Callable[[], Awaitable[None]],
        *,
        timeout_secs: float = DTMF_TIMEOUT_SECS,
        max_digits: int = KEYPAD_MAX_DIGITS,
        response_interval_secs: float = KEYPAD_RESPONSE_INTERVAL_SECS,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Initialize the keypad.

        Args:
            agent: The agent: its task manager runs the timers, and whether it is
                responding, playing or hearing the caller decides when to answer.
            send: Called with each group of keys, e.g. ``"12#"``: gives it to the model.
            respond: Asks the model for a response (to the keys sent so far).
            timeout_secs: Most seconds between two keys of one group.
            max_digits: Most keys in one group; a full group is sent at once.
            response_interval_secs: Least seconds between two keypad responses.
            clock: Monotonic seconds (for tests).

        Raises:
            ValueError: If ``max_digits`` is below 1 or a duration is negative.
        """
        if max_digits < 1:
            raise ValueError(f"max_digits must be at least 1, not {max_digits}")
        if timeout_secs < 0 or response_interval_secs < 0:
            raise ValueError("keypad timeouts and intervals cannot be negative")
        self._agent = agent
        self._send = send
        self._respond = respond
        self._timeout_secs = timeout_secs
        self._max_digits = max_digits
        self._interval_secs = response_interval_secs
        self._clock = clock
        self._keys: list[str] = []
        self._timer: asyncio.Task | None = None
        self._waiting: asyncio.Task | None = None  # the one response held back
        self._last_response: float | None = None  # clock() when one was last asked for
        self._full_logged = False
        self.groups = 0
        self.responses = 0
        self.deferred = 0

    async def press(self, key: str) -> None:
        """Note a key the caller pressed.

        Args:
            key: ``0``-``9``, ``*`` or ``#``.
        """
        self._keys.append(key)
        await self._stop_timer()
        if key == "#":
            await self._flush()
        elif len(self._keys) >= self._max_digits:
            if not self._full_logged:  # once per call: a flood is no news after the first
                self._full_logged = True
                logger.warning(
                    f"{self._agent} the caller pressed {self._max_digits} keys in one go; "
                    "sending them now, the next keys go in another group"
                )
            await self._flush()
        else:
            self._timer = self._agent.create_task(self._flush_later(), "dtmf")

    async def caller_spoke(self) -> None:
        """The caller started a turn the server will answer, keys in context: drop the wait."""
        await self._stop_waiting()

    async def stop(self) -> None:
        """Stop the timers: no group is sent and no response asked for any more."""
        await self._stop_timer()
        await self._stop_waiting()

    async def _stop_timer(self) -> None:
        """Stop waiting for more keys (what was pressed stays for the next group)."""
        if self._timer is not None:
            await self._agent.cancel_task(self._timer)
            self._timer = None

    async def _stop_waiting(self) -> None:
        if self._waiting is not None:
            await self._agent.cancel_task(self._waiting)
            self._waiting = None

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._timeout_secs)
        self._timer = None
        await self._flush()

    async def _flush(self) -> None:
        keys = "".join(self._keys)
        self._keys.clear()
        if keys:
            self.groups += 1
            await self._send(keys)
            await self._answer()

    #
    # answering: at most one response per interval, none over the bot
    #

    async def _answer(self) -> None:
        """Ask for a response to the keys sent, now or (one, for all of them) later."""
        if self._waiting is not None:
            self.deferred += 1  # the response already waiting answers these keys too
            return
        due = self._due()
        if due and self._quiet():
            await self._start()
            return
        if not due:
            self.deferred += 1  # held back by the limit, not only by the bot finishing
        self._waiting = self._agent.create_task(self._answer_when_allowed(), "keypad-response")

    async def _answer_when_allowed(self) -> None:
        while not self._due():
            await asyncio.sleep(_POLL_SECS)
        quiet_by = self._clock() + KEYPAD_QUIET_WAIT_SECS
        while not self._quiet() and self._clock() < quiet_by:
            await asyncio.sleep(_POLL_SECS)
        self._waiting = None
        await self._start()  # the agent queues it behind a response still in progress

    async def _start(self) -> None:
        self._last_response = self._clock()
        self.responses += 1
        await self._respond()

    def _due(self) -> bool:
        last = self._last_response
        return last is None or self._clock() - last >= self._interval_secs

    def _quiet(self) -> bool:
        agent = self._agent
        return not (agent.responding or agent.caller_speaking) and agent.phone_idle
