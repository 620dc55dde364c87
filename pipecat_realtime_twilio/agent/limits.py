#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Per-bot call limits: a maximum duration and a silence timeout."""

import asyncio
from dataclasses import dataclass

from loguru import logger

from pipecat_realtime_twilio.agent.controls import AgentControls


@dataclass
class CallLimits:
    """How long a call may last, and how long it may stay silent.

    Parameters:
        max_duration_secs: Longest call. When it is reached the bot stops,
            says ``closing_line`` and ends the call. None: no limit.
        closing_line: What the bot says when the time is up.
        silence_timeout_secs: Longest silence (neither side speaking). After the
            first the bot says ``silence_prompt``; after a second one in a row it
            says ``silence_goodbye`` and ends the call. None: no limit.
        silence_prompt: What the bot says after the first silence.
        silence_goodbye: What the bot says before ending a silent call.
    """

    max_duration_secs: float | None = None
    closing_line: str = "We've reached the time limit for this call. Thanks for calling. Goodbye!"
    silence_timeout_secs: float | None = None
    silence_prompt: str = "Are you still there?"
    silence_goodbye: str = "I haven't heard anything, so I'll end the call now. Goodbye!"

    def __post_init__(self):
        """Check the limits are positive."""
        for name in ("max_duration_secs", "silence_timeout_secs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")


class LimitsWatcher:
    """Enforces a :class:`CallLimits` on a call, through the agent that talks on it."""

    def __init__(self, agent: AgentControls, limits: CallLimits):
        """Initialize the watcher.

        Args:
            agent: The call's agent.
            limits: The limits.
        """
        self._agent = agent
        self._limits = limits
        self._tasks: list[asyncio.Task] = []
        self._quiet_since = 0.0
        self._prompted = False
        self._ending = False

    def start(self) -> None:
        """Start the timers (when the call starts)."""
        self._quiet_since = asyncio.get_running_loop().time()
        duration, silence = self._limits.max_duration_secs, self._limits.silence_timeout_secs
        if duration is not None:
            self._tasks.append(
                self._agent.create_task(self._watch_duration(duration), "max-duration")
            )
        if silence is not None:
            self._tasks.append(self._agent.create_task(self._watch_silence(silence), "silence"))

    async def stop(self) -> None:
        """Stop the timers."""
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current and not task.done():
                await self._agent.cancel_task(task)

    def caller_spoke(self) -> None:
        """Note caller activity (speech or keys): the silence count starts over."""
        self._quiet_since = asyncio.get_running_loop().time()
        self._prompted = False

    async def _watch_duration(self, secs: float) -> None:
        await asyncio.sleep(secs)
        if self._ending:
            return
        self._ending = True
        logger.info(f"{self._agent}: maximum call duration reached")
        await self._agent.interrupt()
        await self._agent.end_call(self._limits.closing_line, reason="maximum duration reached")

    def _busy(self) -> bool:
        agent = self._agent
        return agent.caller_speaking or agent.responding or not agent.phone_idle

    async def _watch_silence(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        while not self._ending:
            await asyncio.sleep(min(0.25, timeout / 4))
            now = loop.time()
            if self._busy():
                self._quiet_since = now
                continue
            if now - self._quiet_since < timeout:
                continue
            if not self._prompted:
                self._prompted = True
                self._quiet_since = now
                logger.info(f"{self._agent}: {timeout:g} s of silence, prompting the caller")
                await self._agent.say(self._limits.silence_prompt)
                continue
            self._ending = True
            logger.info(f"{self._agent}: silence again after the prompt, ending the call")
            await self._agent.end_call(self._limits.silence_goodbye, reason="silence timeout")
