#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a call's stream callbacks need, on whichever instance Twilio sends them to.

Behind a balancer, Twilio's ``<Connect action>`` (``/stream-ended``) and stream
status callbacks (``/stream-status``) for a call may reach another instance than
the one that answered its webhook or ran its stream. :class:`StreamHandoff` keeps
two things per call, in this process and, with ``REDIS_URL``, in Redis:

- the action's answer (``{REDIS_PREFIX}action:{CallSid}``, :data:`ACTION_TTL_SECS`):
  the TwiML the call's end asked for (a ``<Dial>`` after a transfer, a spoken
  line). Written in the background when the call's end asks for it, before its
  stream closes; taken once (``GETDEL``), here first. An action that lands on an
  instance while the call's line is still held by another one (the call is ending
  there) waits up to :data:`ACTION_WAIT_SECS` for the answer to arrive.
- the calls awaiting their streams (``{REDIS_PREFIX}awaiting:{CallSid}``, their
  stream parameters as JSON, for the stream token's life and a margin): set when
  the webhook is answered, deleted when the stream starts on any instance. When
  the stream never comes, the first instance to claim the call (an atomic
  ``SET XX GET`` that leaves :data:`CLAIMED`) fails and records it, once; a later
  claim elsewhere sees the mark and waits for that instance's answer.

Without ``REDIS_URL`` only this process's view exists (one instance, as before).
With Redis unreachable, each operation falls back on it at once (counted in
``prt_shared_state_errors_total{operation}`` as ``action`` or ``awaiting``).
"""

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from redis.asyncio import Redis

from pipecat_realtime_twilio.logs import field
from pipecat_realtime_twilio.runner.admission import STREAM_TOKEN_TTL_SECS
from pipecat_realtime_twilio.runner.shared_state import FAILED, SharedState

CALLS_KEPT = 1000
"""Most calls awaiting their streams (or holding early events) remembered at once."""

ACTION_TTL_SECS = 600
"""How long a ``<Connect action>`` answer waits in Redis for Twilio to ask for it."""

AWAITING_TTL_SECS = int(STREAM_TOKEN_TTL_SECS) + 60
"""How long a call awaiting its stream is remembered in Redis: its token's life, and a margin."""

CLAIM_TTL_SECS = 60
"""How long a call whose missing stream an instance claimed stays marked so."""

CLAIMED = "claimed"
"""What ``awaiting:{CallSid}`` holds once an instance has claimed the call."""

ACTION_WAIT_SECS = 1.0
"""Most seconds ``/stream-ended`` waits for an answer another instance is writing."""

ACTION_POLL_SECS = 0.05
"""How often it looks meanwhile."""

_Request = Callable[[Redis], Awaitable[Any]]


def keep_bounded(kept: OrderedDict, key: str, value: Any, bound: int = CALLS_KEPT) -> None:
    """Set ``kept[key]`` as the newest entry, forgetting the oldest beyond ``bound``.

    Args:
        kept: The mapping.
        key: The key.
        value: Its value.
        bound: Most entries.
    """
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > bound:
        kept.popitem(last=False)


@dataclass(frozen=True)
class StreamClaim:
    """Who deals with a call whose stream never came.

    Parameters:
        parameters: Its stream parameters when this instance claimed it (it fails
            and records the call); None otherwise.
        remote: This instance claimed a call whose webhook another instance
            answered (that one is told to drop its pre-warmed session).
        elsewhere: Another instance claimed it first: it answers the action.
    """

    parameters: dict[str, str] | None = None
    remote: bool = False
    elsewhere: bool = False


class StreamHandoff:
    """Action answers and awaited streams, here and (with ``REDIS_URL``) in Redis."""

    def __init__(self, shared: SharedState):
        """Initialize it, empty.

        Args:
            shared: What the instances share (Redis, or this process alone).
        """
        self._shared = shared
        self._awaiting: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._actions: OrderedDict[str, str] = OrderedDict()

    #
    # calls awaiting their streams
    #

    def expect_stream(self, call_sid: str, parameters: dict[str, str]) -> None:
        """Note a call whose webhook was answered with a stream (in Redis in the background).

        Args:
            call_sid: The call.
            parameters: Its stream parameters (bot, from, to...), without the token.
        """
        keep_bounded(self._awaiting, call_sid, parameters)
        if self._shared.enabled:
            key, value = self._shared.key("awaiting", call_sid), json.dumps(parameters)
            self._write("awaiting", lambda r: r.set(key, value, ex=AWAITING_TTL_SECS))

    def stream_came(self, call_sid: str) -> None:
        """The call's stream started (here, or on another instance that said so).

        Args:
            call_sid: The call.
        """
        self._awaiting.pop(call_sid, None)
        if self._shared.enabled:
            key = self._shared.key("awaiting", call_sid)
            self._write("awaiting", lambda r: r.delete(key))

    def awaits_stream(self, call_sid: str) -> bool:
        """Whether this instance answered the call's webhook and its stream has not come.

        Args:
            call_sid: The call.
        """
        return call_sid in self._awaiting

    def forget(self, call_sid: str) -> None:
        """Forget the call here only: another instance failed it.

        Args:
            call_sid: The call.
        """
        self._awaiting.pop(call_sid, None)

    async def claim(self, call_sid: str) -> StreamClaim:
        """Claim a call whose stream never came: whoever claims it first fails it, once.

        Args:
            call_sid: The call (Twilio reported its stream failed, or asked the
                action URL for it).

        Returns:
            Whether this instance claimed it, and with what parameters.
        """
        local = self._awaiting.pop(call_sid, None)
        if not self._shared.enabled or not call_sid:
            return StreamClaim(local)
        key = self._shared.key("awaiting", call_sid)
        old = await self._shared.ask(
            "awaiting", lambda r: r.set(key, CLAIMED, xx=True, get=True, ex=CLAIM_TTL_SECS)
        )
        if old is FAILED or old is None:  # Redis down, or it never heard of the call
            return StreamClaim(local)
        if _text(old) == CLAIMED:
            return StreamClaim(elsewhere=True)
        if local is not None:
            return StreamClaim(local)
        return StreamClaim(_parameters(call_sid, old), remote=True)

    #
    # what the <Connect action> answers
    #

    def put_action(self, call_sid: str, twiml: str) -> None:
        """Keep what the action URL answers for the call (in Redis in the background).

        Args:
            call_sid: The call.
            twiml: The TwiML.
        """
        keep_bounded(self._actions, call_sid, twiml)
        if self._shared.enabled:
            self._write("action", self._set_action(call_sid, twiml))

    async def share_action(self, call_sid: str, twiml: str) -> None:
        """Keep what the action URL answers for the call, written to Redis before returning.

        Args:
            call_sid: The call.
            twiml: The TwiML.
        """
        keep_bounded(self._actions, call_sid, twiml)
        if self._shared.enabled:
            await self._shared.ask("action", self._set_action(call_sid, twiml))

    async def take_action(self, call_sid: str) -> str | None:
        """What the action URL answers for the call, once: this instance's first, then Redis's.

        Args:
            call_sid: The call.
        """
        twiml = self._actions.pop(call_sid, None)
        if not self._shared.enabled or not call_sid:
            return twiml
        key = self._shared.key("action", call_sid)
        if twiml is not None:
            self._write("action", lambda r: r.delete(key))  # asked here: no one else will
            return twiml
        return await self._take_shared(call_sid)

    async def wait_action(self, call_sid: str, claimed_elsewhere: bool) -> str | None:
        """Wait a moment for an answer another instance is about to write.

        It waits while the call's line is held by another instance (its call is
        ending there) or while another instance claimed it, for at most
        :data:`ACTION_WAIT_SECS`; not at all without Redis or with Redis down.

        Args:
            call_sid: The call.
            claimed_elsewhere: Another instance claimed the call (its stream never came).

        Returns:
            The answer, or None if none came.
        """
        if not self._shared.enabled or not call_sid:
            return None
        deadline = time.monotonic() + ACTION_WAIT_SECS
        while True:
            # Held, then asked: an answer written before the line was freed is found.
            waiting = claimed_elsewhere or await self._held_elsewhere(call_sid)
            twiml = await self._take_shared(call_sid)
            if twiml is not None or not waiting or time.monotonic() >= deadline:
                return twiml
            await asyncio.sleep(ACTION_POLL_SECS)

    #
    # Redis
    #

    def _set_action(self, call_sid: str, twiml: str) -> _Request:
        key = self._shared.key("action", call_sid)
        return lambda r: r.set(key, twiml, ex=ACTION_TTL_SECS)

    async def _take_shared(self, call_sid: str) -> str | None:
        key = self._shared.key("action", call_sid)
        found = await self._shared.ask("action", lambda r: r.getdel(key))
        if found is FAILED or found is None:
            return None
        return _text(found)

    async def _held_elsewhere(self, call_sid: str) -> bool:
        """Whether another instance holds the call's line (it streams or ends there)."""
        key = self._shared.key("lines", "owner")
        owner = await self._shared.ask("action", lambda r: r.hget(key, call_sid))
        if owner is FAILED or owner is None:
            return False
        return _text(owner) != self._shared.instance_id

    def _write(self, operation: str, request: _Request) -> None:
        self._shared.background(self._shared.ask(operation, request))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parameters(call_sid: str, stored: Any) -> dict[str, str]:
    """Stream parameters as Redis kept them; empty (logged) if they are not."""
    try:
        parameters = json.loads(stored)
    except ValueError:
        parameters = None
    if not isinstance(parameters, dict):
        logger.warning(f"Call {call_sid}: unreadable stream parameters in Redis {field(stored)}")
        return {}
    return {str(k): str(v) for k, v in parameters.items()}
