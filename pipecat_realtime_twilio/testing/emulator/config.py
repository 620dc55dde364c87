#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The session configuration: the server's defaults and how ``session.update`` applies."""

import copy
import time
from typing import Any

from .audio import FORMAT_RATES, PCM_RATE

DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. "
    "Act like a human, but remember that you aren't a human and that you can't do human "
    "things in the real world. Your voice and personality should be warm and engaging."
)
"""Instructions in the default session (a shortened version of the real server's)."""

DEFAULT_MODEL = "gpt-realtime"
"""Model reported when the client's URL has no ``?model=``."""

_SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}


def default_session(
    session_id: str, model: str, voice: str, instructions: str, expires_at: int | None = None
) -> dict:
    """Return the session object the server starts a connection with.

    Args:
        session_id: The ``sess_...`` id.
        model: The model from the connection URL.
        voice: The default voice.
        instructions: The default instructions.
        expires_at: When the session ends (unix seconds); None is an hour from now.

    Returns:
        The session, as sent in ``session.created``.
    """
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": instructions,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600 if expires_at is None else expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": PCM_RATE},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(_SERVER_VAD_DEFAULTS),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": PCM_RATE},
                "voice": voice,
                "speed": 1.0,
            },
        },
        "include": None,
    }


def deep_merge(base: dict, update: dict) -> None:
    """Merge ``update`` into ``base``; a dict whose ``type`` changes replaces the old one."""
    for key, value in update.items():
        current = base.get(key)
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and value.get("type", current.get("type")) == current.get("type")
        ):
            deep_merge(current, value)
        else:
            base[key] = copy.deepcopy(value)


def normalize_session(config: dict) -> None:
    """Fill in what an update left out: audio formats and the turn detection's defaults.

    Args:
        config: The session configuration, changed in place.
    """
    audio = config.setdefault("audio", {})
    for direction in ("input", "output"):
        section = audio.setdefault(direction, {})
        fmt = section.get("format")
        if not isinstance(fmt, dict) or fmt.get("type") not in FORMAT_RATES:
            section["format"] = {"type": "audio/pcm", "rate": PCM_RATE}
        elif fmt["type"] == "audio/pcm":
            fmt.setdefault("rate", PCM_RATE)
    detection = audio["input"].get("turn_detection")
    if isinstance(detection, dict):
        defaults = (
            _SEMANTIC_VAD_DEFAULTS
            if detection.get("type") == "semantic_vad"
            else _SERVER_VAD_DEFAULTS
        )
        for key, value in defaults.items():
            detection.setdefault(key, value)


def turn_detection(config: dict) -> dict | None:
    """Return the session's turn detection settings, or None when it is off."""
    detection = config["audio"]["input"].get("turn_detection")
    return detection if isinstance(detection, dict) else None


def output_audio(params: dict) -> dict:
    """Return the ``audio.output`` section of a session update or response, ``{}`` if absent."""
    return (params.get("audio") or {}).get("output") or {}
