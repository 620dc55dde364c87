#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Pre-warm: open and configure a call's Realtime session before its stream starts.

While the runner answers Twilio's webhook, :meth:`Prewarm.prewarm` opens the
session, sends the configuration and, once ``session.updated`` confirms
``audio/pcmu``, asks for the greeting, so the greeting is ready when the stream
starts. What the server sends meanwhile is kept and handled first when the agent
starts and takes the session over. A refusal no retry cures is remembered, so
the call falls back at once instead of trying again.
"""

import asyncio
import contextlib
import time

from loguru import logger
from websockets.asyncio.client import ClientConnection

from pipecat_realtime_twilio.agent.guard import SessionGuard
from pipecat_realtime_twilio.agent.handshake import ConnectFailed, Refusal, open_realtime


class Prewarm(SessionGuard):
    """A session that can open before the call's pipeline starts."""

    _prewarm_refusal: Refusal | None = None  # why the pre-warm could not open the session

    def prewarm(self) -> asyncio.Task:
        """Start opening the Realtime session now, before the pipeline starts.

        The session is configured at once and, with a ``greeting``, the greeting
        is asked for, so it is ready when the call's stream starts (a greeting
        from the cache is not asked for: the model is told it said it). What the
        server sends meanwhile is kept; when the pipeline starts, the agent takes
        the session over and handles it first. If the session cannot open, the
        agent connects at start as usual. Close a session no call took with
        :meth:`close_prewarmed`.

        Returns:
            The opening task; its result says whether the session opened.
        """
        if self._prewarm_task is None:
            self._prewarm_task = asyncio.create_task(self._open_prewarmed(), name="prewarm")
        return self._prewarm_task

    async def _open_prewarmed(self) -> bool:
        try:
            self._websocket = await open_realtime(self._open_socket, name=f"{self} pre-warm")
        except ConnectFailed as e:
            logger.warning(f"{self} could not pre-warm the Realtime session: {e}")
            self._websocket = None
            if not e.refusal.transient:
                self._connect_failed = e.refusal  # no retry cures it: fall back at start
            self._prewarm_refusal = e.refusal
            return False
        self._session_opened_at = time.monotonic()
        self._early_reader = asyncio.create_task(self._keep_early_events(self._websocket))
        try:
            await self._configure()
        except Exception as e:  # the socket died at once: reconnect when the call starts
            logger.warning(f"{self} pre-warmed session failed: {e}")
        return True

    async def _keep_early_events(self, websocket: ClientConnection) -> None:
        """Keep what a pre-warmed session sends; ask for the greeting once it is configured."""
        with contextlib.suppress(Exception):  # closed: the receive loop will see it
            async for message in websocket:
                self._early_events.append(message)
                if _is_session_updated(message) and self._formats_confirmed(message):
                    await self._greet_early()

    async def _take_prewarmed(self) -> bool:
        """At start: wait for a pre-warm in progress; take its session over if it opened."""
        task, self._prewarm_task = self._prewarm_task, None
        waiting_since = time.monotonic()
        if task is None or not await task:
            if task is not None and self._prewarm_refusal is not None:  # retried in vain
                self._connect_budget.limit(waiting_since, self._prewarm_refusal)
            return False
        reader, self._early_reader = self._early_reader, None
        if reader is not None:
            reader.cancel()  # recv() is cancellation-safe: no message is lost
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._receive_task = self.create_task(self._receive_task_handler())
        return True

    async def close_prewarmed(self) -> None:
        """Close a pre-warmed session that no call took (the runner's timeout)."""
        task, self._prewarm_task = self._prewarm_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._early_reader is not None:
            self._early_reader.cancel()
            self._early_reader = None
        self._early_events.clear()
        await self._close_socket()


def _is_session_updated(message: str | bytes) -> bool:
    """Whether a raw server message is ``session.updated`` (without parsing all of it)."""
    if isinstance(message, bytes):
        return b'"session.updated"' in message[:80]
    return '"session.updated"' in message[:80]
