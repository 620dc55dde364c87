#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Pre-warmed calls: built, with their Realtime sessions opening, before their streams start.

While it answers Twilio's webhook the runner builds the call's pipeline (a
:class:`~pipecat_realtime_twilio.phone.call.CallSession` without its stream yet) and
starts every :class:`~pipecat_realtime_twilio.agent.realtime.RealtimeAgent` in it
opening its session: configured and with the greeting asked for, so the
greeting is ready when the stream starts instead of a connect, a session
update and the model's time to first byte later. The stream takes the call by
its CallSid; a call whose stream has not come within the timeout is closed.

A pre-warmed session lives in one process. When the stream reaches another
instance (behind a balancer), that one serves the call and, through the shared
state (``REDIS_URL``), tells the one that pre-warmed it, which closes the unused
session at once (:meth:`PrewarmedCalls.elsewhere`). Without ``REDIS_URL`` several
instances must route each stream to the instance that answered its webhook
(``STREAM_URL``), or turn pre-warm off.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from pipecat_realtime_twilio.agent.realtime import RealtimeAgent
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics


@dataclass
class PrewarmedCall:
    """A call built at the webhook, waiting for its media stream.

    Parameters:
        call: The call, without its stream.
        processors: The bot's pipeline for it.
        bot: The bot's name.
        agents: The Realtime agents in the pipeline, their sessions opening or open.
    """

    call: CallSession
    processors: list[FrameProcessor]
    bot: str
    agents: list[RealtimeAgent] = field(default_factory=list)


class PrewarmedCalls:
    """The runner's pre-warmed calls, by CallSid, each closed if its stream does not come.

    Outcomes are counted in ``prt_prewarm_total{outcome}``: ``used``, ``expired``,
    ``failed`` (a session that could not open; that call connects when its stream
    starts), ``dropped`` (closed unused for another reason: the webhook was asked
    again, the stream named another bot, Twilio reported the stream could not
    connect, the runner stopped) and ``elsewhere`` (the stream started on another
    instance).
    """

    def __init__(self, timeout_secs: float, metrics: RunnerMetrics):
        """Initialize the registry.

        Args:
            timeout_secs: How long a pre-warmed call waits for its stream.
            metrics: Where outcomes are counted.
        """
        self.timeout_secs = timeout_secs
        self._metrics = metrics
        self._calls: dict[str, PrewarmedCall] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task] = set()

    def __len__(self) -> int:
        """Pre-warmed calls waiting for their streams."""
        return len(self._calls)

    def add(self, call_sid: str, prewarmed: PrewarmedCall) -> None:
        """Start the call's sessions opening and wait for its stream.

        Args:
            call_sid: The Call SID the stream will bring.
            prewarmed: The call and its pipeline.
        """
        self._discard(call_sid, "dropped")  # Twilio asked the webhook again
        prewarmed.agents = [p for p in prewarmed.processors if isinstance(p, RealtimeAgent)]
        for agent in prewarmed.agents:
            agent.prewarm().add_done_callback(self._count_failure)
        self._calls[call_sid] = prewarmed
        loop = asyncio.get_running_loop()
        self._timers[call_sid] = loop.call_later(self.timeout_secs, self._expire, call_sid)

    def take(self, call_sid: str, bot: str) -> PrewarmedCall | None:
        """The pre-warmed call for ``call_sid`` (now its stream's), or None.

        Args:
            call_sid: The Call SID of the stream that started.
            bot: The bot the stream asks for; a call built for another is closed.
        """
        prewarmed = self._calls.get(call_sid)
        if prewarmed is None or prewarmed.bot != bot:
            self._discard(call_sid, "dropped")
            return None
        del self._calls[call_sid]
        self._timers.pop(call_sid).cancel()
        self._metrics.prewarm.labels("used").inc()
        return prewarmed

    def drop(self, call_sid: str) -> PrewarmedCall | None:
        """Close the call's pre-warmed sessions now: its stream will not come.

        Counted as ``dropped``.

        Args:
            call_sid: The call (Twilio said its stream could not connect).

        Returns:
            The pre-warmed call (its sessions closing), or None if there was none.
        """
        prewarmed = self._calls.get(call_sid)
        self._discard(call_sid, "dropped")
        return prewarmed

    def elsewhere(self, call_sid: str) -> bool:
        """Close the call's pre-warmed sessions now: its stream started on another instance.

        Counted as ``elsewhere``.

        Args:
            call_sid: The call.

        Returns:
            Whether there was a pre-warmed call for it here.
        """
        found = call_sid in self._calls
        self._discard(call_sid, "elsewhere")
        return found

    async def close(self) -> None:
        """Close every pre-warmed call (the runner stops)."""
        for call_sid in list(self._calls):
            self._discard(call_sid, "dropped")
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=5)

    def _expire(self, call_sid: str) -> None:
        if call_sid in self._calls:
            logger.warning(
                f"Call {call_sid}: no media stream within {self.timeout_secs:g} s; "
                "closing its pre-warmed Realtime session"
            )
            self._discard(call_sid, "expired")

    def _discard(self, call_sid: str, outcome: str) -> None:
        timer = self._timers.pop(call_sid, None)
        if timer is not None:
            timer.cancel()
        prewarmed = self._calls.pop(call_sid, None)
        if prewarmed is None:
            return
        self._metrics.prewarm.labels(outcome).inc()
        for agent in prewarmed.agents:
            task = asyncio.create_task(agent.close_prewarmed())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _count_failure(self, task: asyncio.Task) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            if task.exception() is None and task.result() is False:
                self._metrics.prewarm.labels("failed").inc()
