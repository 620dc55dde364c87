#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Tokens a call used: the ``usage`` of every Realtime ``response.done``, added up.

Cached input tokens:
    In OpenAI's usage, ``input_token_details.text_tokens`` and ``audio_tokens``
    count *all* input tokens of that modality, the cached ones included
    (``cached_tokens_details`` is a subset, as the ``openai`` package's
    ``RealtimeResponseUsageInputTokenDetails`` says). `Usage` keeps them apart:
    its ``input_*`` fields hold only the **uncached** input tokens and its
    ``cached_*`` fields the cached ones, so the six fields never overlap and
    pricing them (:mod:`pipecat_realtime_twilio.runner.pricing`) is a sum of
    each field times its price.

Image tokens are not counted: a phone call sends no images.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from loguru import logger


def _count(details: Any, key: str) -> int:
    """Return ``details[key]`` as a token count: 0 unless a finite number >= 0."""
    if not isinstance(details, dict):
        return 0
    value = details.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return max(0, int(value))


@dataclass
class Usage:
    """Tokens used by a call, summed over its responses.

    The six counts never overlap (see the module docstring): ``input_*`` are the
    **uncached** input tokens and ``cached_*`` the cached input tokens.

    Parameters:
        input_text_tokens: Uncached input text tokens.
        input_audio_tokens: Uncached input audio tokens.
        cached_text_tokens: Cached input text tokens.
        cached_audio_tokens: Cached input audio tokens.
        output_text_tokens: Output text tokens.
        output_audio_tokens: Output audio tokens.
    """

    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    def add_response_usage(self, usage: dict | None) -> None:
        """Add the ``usage`` object of one Realtime ``response.done`` event.

        Missing, None or malformed parts count as 0; tokens reported only as totals
        (``input_tokens`` without ``input_token_details``) cannot be priced and are
        not counted. Cached tokens are taken from ``cached_tokens_details`` and
        subtracted from their modality's input count; a ``cached_tokens`` total
        without that breakdown is ignored, so those tokens stay uncached (priced
        high rather than too low).

        Args:
            usage: ``response.usage`` of ``response.done``, e.g. ``{"input_tokens": …,
                "input_token_details": {"text_tokens": …, "audio_tokens": …,
                "cached_tokens_details": {"text_tokens": …, "audio_tokens": …}},
                "output_token_details": {"text_tokens": …, "audio_tokens": …}}``.
        """
        if not isinstance(usage, dict):
            return
        inputs = usage.get("input_token_details")
        outputs = usage.get("output_token_details")
        if not isinstance(inputs, dict) and _count(usage, "input_tokens"):
            logger.debug("Realtime usage without input_token_details: input tokens not counted")
        if not isinstance(outputs, dict) and _count(usage, "output_tokens"):
            logger.debug("Realtime usage without output_token_details: output tokens not counted")
        cached = inputs.get("cached_tokens_details") if isinstance(inputs, dict) else None
        cached_text = _count(cached, "text_tokens")
        cached_audio = _count(cached, "audio_tokens")
        self.input_text_tokens += max(0, _count(inputs, "text_tokens") - cached_text)
        self.input_audio_tokens += max(0, _count(inputs, "audio_tokens") - cached_audio)
        self.cached_text_tokens += cached_text
        self.cached_audio_tokens += cached_audio
        self.output_text_tokens += _count(outputs, "text_tokens")
        self.output_audio_tokens += _count(outputs, "audio_tokens")

    @property
    def total_tokens(self) -> int:
        """All tokens counted, input (cached or not) and output."""
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        """Return the counts as a JSON-ready dict (the field names as keys)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Usage":
        """Return the usage that `as_dict` returned; unknown keys are ignored.

        Args:
            data: A dict of counts (missing or malformed counts are 0).

        Returns:
            The usage.
        """
        return cls(**{f.name: _count(data, f.name) for f in fields(cls)})
