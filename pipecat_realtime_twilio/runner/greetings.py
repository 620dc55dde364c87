#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The runner's greeting cache: given to every call's agents, warmed up at start when asked.

:class:`RunnerGreetings` holds one
:class:`~pipecat_realtime_twilio.agent.greeting_cache.GreetingCache` (in memory, and in
``GREETING_CACHE_DIR`` when set) and gives it, with the bot's name, to every agent of a
call's pipeline as the pipeline is built (:meth:`RunnerGreetings.attach`), pre-warmed
or not, whatever the engine. The first call of a bot greets through the model and
fills the cache; the next ones play the greeting the moment their stream starts
(:mod:`~pipecat_realtime_twilio.agent.greeting`, and for GPT-Live
:mod:`~pipecat_realtime_twilio.agent.live_greeting`).

With ``GREETING_WARMUP=true`` and ``OPENAI_API_KEY`` set, :meth:`RunnerGreetings.start`
has the model say each Realtime prompt bot's greeting in the background, one session
per greeting, so even the first call's greeting is instant (a GPT-Live bot's is made
on its first call). Startup never waits for it;
a failure is logged and that greeting is made on first use instead. All of it is
bounded by :data:`WARMUP_TIMEOUT_SECS`.
"""

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from pipecat_realtime_twilio.agent.greeting import CachedGreeting
from pipecat_realtime_twilio.agent.greeting_cache import GreetingCache, UsesGreetingCache
from pipecat_realtime_twilio.agent.greeting_warmup import record_greeting
from pipecat_realtime_twilio.errors import BotError, SettingsError
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.runner.bots import Bot
from pipecat_realtime_twilio.settings import Settings, settings_in_effect

WARMUP_TIMEOUT_SECS = 60.0
"""Most seconds the whole start-up warm-up may take (each greeting: 20 s at most)."""


class RunnerGreetings:
    """The greeting cache of a runner, and its start-up warm-up."""

    def __init__(self, settings: Settings):
        """Initialize the cache.

        Args:
            settings: The runner's settings (``GREETING_CACHE_DIR``, ``GREETING_WARMUP``).

        Raises:
            SettingsError: If ``GREETING_CACHE_DIR`` cannot be created or written to.
        """
        self._settings = settings
        directory = settings.greeting_cache_dir
        try:
            self.cache = GreetingCache(directory or None)
        except OSError as e:
            raise SettingsError(f"GREETING_CACHE_DIR: cannot use '{directory}': {e}") from None
        self._warmup: asyncio.Task | None = None
        self.warmed: list[str] = []  # bots whose greeting the warm-up made

    def attach(self, bot: str, processors: list[FrameProcessor]) -> list[FrameProcessor]:
        """Give the cache to the agents of a call's pipeline (either engine), as it is built.

        Args:
            bot: The bot's name.
            processors: The call's pipeline.

        Returns:
            The same processors.
        """
        for processor in processors:
            if isinstance(processor, UsesGreetingCache):
                processor.use_greeting_cache(self.cache, bot)
        return processors

    @staticmethod
    def source(agent: Any) -> str | None:
        """Where a finished call's greeting came from: ``cache``, ``model``, or None.

        Args:
            agent: The agent that talked on the call, if any.
        """
        return getattr(agent, "greeting_source", None)

    def start(self, bots: Callable[[], dict[str, Bot]]) -> None:
        """Start the warm-up in the background, if ``GREETING_WARMUP`` and a key are set.

        Args:
            bots: The runner's bots, as they are when the warm-up runs.
        """
        settings = self._settings
        if not settings.greeting_warmup or self._warmup is not None:
            return
        if settings.openai_api_key is None:
            logger.info("Greeting warm-up: no OPENAI_API_KEY; greetings are made on first use")
            return
        self._warmup = asyncio.create_task(self._warm_up(bots), name="greeting-warmup")

    async def wait_warmed(self, timeout: float = WARMUP_TIMEOUT_SECS) -> bool:
        """Wait for the warm-up to finish (tests, tools).

        Args:
            timeout: Most seconds to wait.

        Returns:
            Whether it finished (or never started).
        """
        if self._warmup is None:
            return True
        done, _ = await asyncio.wait([self._warmup], timeout=timeout)
        return bool(done)

    async def close(self) -> None:
        """Stop a warm-up still running."""
        task, self._warmup = self._warmup, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _warm_up(self, bots: Callable[[], dict[str, Bot]]) -> None:
        prompt_bots = [b for b in bots().values() if b.path is not None and b.path.suffix == ".md"]
        try:
            async with asyncio.timeout(WARMUP_TIMEOUT_SECS):
                for bot in prompt_bots:
                    await self._warm(bot)
        except TimeoutError:
            logger.warning(f"Greeting warm-up: not done in {WARMUP_TIMEOUT_SECS:g} s; stopped")
        except Exception:  # never the runner's problem: those greetings come on first use
            logger.exception("Greeting warm-up failed")

    async def _warm(self, bot: Bot) -> None:
        call = CallSession.before_stream("CA" + "0" * 32, parameters={"bot": bot.name})
        try:
            with settings_in_effect(self._settings):
                processors = await bot.build(call)
        except BotError as e:
            logger.warning(f"Greeting warm-up: {e}")
            return
        for agent in _greeting_agents(processors):
            key = agent.greeting_key(bot.name)
            if key is None or self.cache.get(key) is not None:
                continue
            audio = await record_greeting(agent)
            if audio is not None and self.cache.put(key, audio):
                self.warmed.append(bot.name)
                logger.info(f"Greeting warm-up: bot '{bot.name}' greeting cached")


def _greeting_agents(processors: Iterable[FrameProcessor]) -> list[CachedGreeting]:
    return [p for p in processors if isinstance(p, CachedGreeting)]
