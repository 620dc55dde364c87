#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The runner's configured models that have an announced shutdown, for a warning at startup.

The models configured are ``OPENAI_REALTIME_MODEL``, the default transcription
model, and what prompt-only bots (``NAME.md``) name in their front matter. Python
bots choose their models in code, so only the agent itself can warn about them
(:func:`pipecat_realtime_twilio.agent.models.warn_once`).
"""

from collections.abc import Mapping
from datetime import date

from loguru import logger

from pipecat_realtime_twilio.agent.configuration import DEFAULT_TRANSCRIPTION_MODEL
from pipecat_realtime_twilio.agent.models import model_warnings
from pipecat_realtime_twilio.runner.bots import Bot
from pipecat_realtime_twilio.runner.prompt_bot import PromptBot
from pipecat_realtime_twilio.settings import Settings


def configured_models(settings: Settings, bots: Mapping[str, Bot]) -> tuple[list[str], list[str]]:
    """The Realtime and transcription models the settings and prompt-only bots name.

    Args:
        settings: The runner's settings (``OPENAI_REALTIME_MODEL``).
        bots: The bots by name; those built from a :class:`PromptBot` add the
            ``model`` of their front matter and, if they have one, the ``model`` of
            their ``transcription``.

    Returns:
        ``(realtime_models, transcription_models)``, with repeats.
    """
    realtime = [settings.openai_realtime_model]
    transcription = [DEFAULT_TRANSCRIPTION_MODEL]
    for bot in bots.values():
        prompt_bot = getattr(bot.builder, "__self__", None)
        if not isinstance(prompt_bot, PromptBot):
            continue
        spec = prompt_bot.spec
        if spec.model:
            realtime.append(spec.model)
        if spec.transcription and spec.transcription.model:
            transcription.append(spec.transcription.model)
    return realtime, transcription


def configured_model_warnings(
    settings: Settings, bots: Mapping[str, Bot], *, today: date | None = None
) -> list[str]:
    """One line per configured model that has an announced shutdown.

    Args:
        settings: The runner's settings.
        bots: The bots by name.
        today: The date to count from; today by default.

    Returns:
        The warnings (see :func:`pipecat_realtime_twilio.agent.models.model_warnings`).
    """
    realtime, transcription = configured_models(settings, bots)
    return model_warnings(realtime, transcription, today=today)


def log_model_warnings(
    settings: Settings, bots: Mapping[str, Bot], *, today: date | None = None
) -> list[str]:
    """Log a warning for each configured model that has an announced shutdown.

    Args:
        settings: The runner's settings.
        bots: The bots by name.
        today: The date to count from; today by default.

    Returns:
        The warnings logged.
    """
    lines = configured_model_warnings(settings, bots, today=today)
    for line in lines:
        logger.warning(line)
    return lines
