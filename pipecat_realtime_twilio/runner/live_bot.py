#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Prompt bots on GPT-Live: ``engine: live`` in the front matter, checked and built.

A prompt bot (:mod:`~pipecat_realtime_twilio.runner.prompt_bot`) talks through the
Realtime API unless its front matter says ``engine: live``; then its agent is a
:class:`~pipecat_realtime_twilio.agent.live.LiveAgent`. GPT-Live decides turns
itself, transcribes the caller itself and has no speed setting, so the keys that
tune those on Realtime (:data:`REALTIME_ONLY`) are a mistake on a Live bot, named
with their line; ``backend_model`` (the Responses model GPT-Live delegates to) is
one on a Realtime bot. A Live bot's ``voice`` may be any GPT-Live voice
(:data:`~pipecat_realtime_twilio.agent.live_config.LIVE_VOICES`); its ``model`` must
be a GPT-Live one, and a Realtime bot's must not. ``tools`` (``warm_transfer``
included) and ``mcp`` servers work on both engines: on GPT-Live they are tools of the
Responses backend (function tools, and Responses ``mcp`` tools).
"""

from collections.abc import Callable, Mapping
from typing import Any

from pipecat_realtime_twilio.agent.live import LiveAgent
from pipecat_realtime_twilio.agent.live_config import LIVE_VOICES

REALTIME_ONLY = {
    "turn_detection": "GPT-Live decides turns itself",
    "noise_reduction": "GPT-Live has no noise reduction setting",
    "transcription": "GPT-Live transcribes the caller itself",
    "speed": "GPT-Live has no speed setting",
    "keypad_response_interval_secs": "GPT-Live answers keys when it sees fit",
}
"""Front matter keys a Live bot cannot have, and why."""

LIVE_ONLY = {"backend_model": "the Responses model GPT-Live delegates to"}
"""Front matter keys only a Live bot can have, and what they are."""

LIVE_MODEL_PREFIX = "gpt-live"


def engine_problem(
    data: Mapping[str, Any], engine: str, voice: str, model: str | None, realtime_voices: tuple
) -> tuple[str, str] | None:
    """What is wrong with a bot's front matter for its engine, if anything.

    Args:
        data: The front matter as read (keys present, even when null).
        engine: ``"realtime"`` or ``"live"``.
        voice: The bot's voice.
        model: The bot's model, if set.
        realtime_voices: The Realtime API's voices.

    Returns:
        ``(key, message)`` of the first problem, or None.
    """
    if engine == "live":
        for key, why in REALTIME_ONLY.items():
            if key in data:
                return key, f"Realtime-only ({why}); remove it from this engine: live bot"
        if model and not model.startswith(LIVE_MODEL_PREFIX):
            return "model", f"{model!r} is no GPT-Live model (e.g. gpt-live-1.1)"
        if voice not in LIVE_VOICES:
            return "voice", f"unknown GPT-Live voice {voice!r} (known: {', '.join(LIVE_VOICES)})"
        return None
    for key, what in LIVE_ONLY.items():
        if key in data:
            return key, f"Live-only ({what}); set engine: live or remove it"
    if model and model.startswith(LIVE_MODEL_PREFIX):
        return "model", f"{model!r} is a GPT-Live model: set engine: live"
    if voice not in realtime_voices:
        known = ", ".join(realtime_voices)
        return "voice", f"{voice!r} is a GPT-Live voice, not a Realtime one (known: {known})"
    return None


def check_engine(
    data: Mapping[str, Any],
    spec: Any,
    realtime_voices: tuple,
    fail: Callable[[str, str], Exception],
) -> None:
    """Raise ``fail(key, message)`` if the front matter does not fit the bot's engine.

    Args:
        data: The front matter as read.
        spec: The checked ``PromptBotSpec``.
        realtime_voices: The Realtime API's voices.
        fail: Makes the error for a key (the caller knows the file and its lines).
    """
    problem = engine_problem(data, spec.engine, spec.voice, spec.model, realtime_voices)
    if problem is not None:
        raise fail(*problem)


def live_agent(spec: Any, instructions: str, tools: list, options: dict[str, Any]) -> LiveAgent:
    """The agent of a prompt bot with ``engine: live``.

    Args:
        spec: The checked ``PromptBotSpec``.
        instructions: The prompt (and language line).
        tools: The bot's built-in tools (its MCP servers are added from ``spec.mcp``).
        options: The agent options the front matter set (limits, fallback line,
            first-byte timeout, keypad group size).

    Returns:
        The agent.
    """
    return LiveAgent(
        instructions=instructions,
        greeting=spec.greeting,
        voice=spec.voice,
        model=spec.model,
        backend_model=spec.backend_model,
        tools=[*tools, *spec.mcp] or None,
        fallback_number=spec.fallback_number,
        **options,
    )
