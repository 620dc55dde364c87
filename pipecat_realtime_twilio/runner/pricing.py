#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a call cost: token usage of the Realtime API and OpenAI's prices per model.

Every ``response.done`` event of the Realtime API carries the ``usage`` of that
response. `Usage` adds them up over a call (`Usage.add_response_usage`) and
`cost_usd` prices the sum with the table `PRICES`::

    usage = Usage()
    usage.add_response_usage(event["response"]["usage"])  # for every response.done
    cost = cost_usd("gpt-realtime-2.1", usage)  # None for a model not in PRICES

Cached input tokens:
    In OpenAI's usage, ``input_token_details.text_tokens`` and ``audio_tokens``
    count *all* input tokens of that modality, the cached ones included
    (``cached_tokens_details`` is a subset, as the ``openai`` package's
    ``RealtimeResponseUsageInputTokenDetails`` says). `Usage` keeps them apart:
    its ``input_*`` fields hold only the **uncached** input tokens, billed at the
    input price, and its ``cached_*`` fields the cached ones, billed at the
    (much lower) cached input price. So the six fields never overlap and the cost
    is the sum of each field times its price.

Image tokens are neither counted nor priced: a phone call sends no images.
"""

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from loguru import logger


@dataclass(frozen=True)
class ModelPrice:
    """Prices of one Realtime model, in USD per million tokens.

    Parameters:
        audio_in: Uncached input audio.
        cached_audio_in: Cached input audio.
        audio_out: Output audio.
        text_in: Uncached input text.
        cached_text_in: Cached input text.
        text_out: Output text.
    """

    audio_in: float
    cached_audio_in: float
    audio_out: float
    text_in: float
    cached_text_in: float
    text_out: float


PRICES: dict[str, ModelPrice] = {
    # Sources, checked in 2026: OpenAI's model pages (developers.openai.com/api/docs/models/<id>)
    # and, for gpt-realtime's text prices, its model comparison page
    # (developers.openai.com/api/docs/models/compare?model=gpt-realtime). Audio in / cached /
    # out and text in / out of gpt-realtime, -1.5, -2 and -2.1-mini also agree with
    # shared/PROTOCOLS.md.
    #
    # gpt-realtime: audio from PROTOCOLS.md; text 4 / cached 0.40 / 16 from the compare page.
    "gpt-realtime": ModelPrice(
        audio_in=32.00,
        cached_audio_in=0.40,
        audio_out=64.00,
        text_in=4.00,
        cached_text_in=0.40,
        text_out=16.00,
    ),
    # models/gpt-realtime-1.5 (text cached input 0.40).
    "gpt-realtime-1.5": ModelPrice(
        audio_in=32.00,
        cached_audio_in=0.40,
        audio_out=64.00,
        text_in=4.00,
        cached_text_in=0.40,
        text_out=16.00,
    ),
    # models/gpt-realtime-2 (text cached input 0.40).
    "gpt-realtime-2": ModelPrice(
        audio_in=32.00,
        cached_audio_in=0.40,
        audio_out=64.00,
        text_in=4.00,
        cached_text_in=0.40,
        text_out=24.00,
    ),
    # models/gpt-realtime-2.1 (not in PROTOCOLS.md): the same prices as gpt-realtime-2.
    "gpt-realtime-2.1": ModelPrice(
        audio_in=32.00,
        cached_audio_in=0.40,
        audio_out=64.00,
        text_in=4.00,
        cached_text_in=0.40,
        text_out=24.00,
    ),
    # models/gpt-realtime-2.1-mini (text cached input 0.06).
    "gpt-realtime-2.1-mini": ModelPrice(
        audio_in=10.00,
        cached_audio_in=0.30,
        audio_out=20.00,
        text_in=0.60,
        cached_text_in=0.06,
        text_out=2.40,
    ),
    # gpt-realtime-mini is left out: no complete price of OpenAI's was found (only its text
    # input, 0.60, in a comparison on the gpt-realtime-2.1-mini page). Unpriced: cost None.
}
"""USD per million tokens of each Realtime model, by model id (without a date suffix)."""

_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_warned_models: set[str] = set()


def price_for(model: str) -> ModelPrice | None:
    """Return the prices of a model, or None if `PRICES` does not list it.

    A model id matches a table key when it is the key itself or the key followed by
    a dated snapshot suffix ``-YYYY-MM-DD`` (``gpt-realtime-2025-08-28`` is
    ``gpt-realtime``), case aside. Any other name that merely starts with a key does
    not match, so ``gpt-realtime-mini`` is never priced as ``gpt-realtime``, nor
    ``gpt-realtime-2.1-mini`` as ``gpt-realtime-2.1`` or ``gpt-realtime-2``.

    Args:
        model: The Realtime model id, e.g. ``gpt-realtime-2.1``.

    Returns:
        The model's prices, or None.
    """
    name = (model or "").strip().lower()
    if name in PRICES:
        return PRICES[name]
    return PRICES.get(_SNAPSHOT_SUFFIX.sub("", name))


def cost_usd(model: str, usage: "Usage") -> float | None:
    """Return what ``usage`` cost with ``model``, in USD.

    Args:
        model: The Realtime model id (a dated snapshot id is priced as its model).
        usage: The tokens used.

    Returns:
        The cost in USD, or None when the model has no price in `PRICES` (a warning
        is logged once per model).
    """
    price = price_for(model)
    if price is None:
        if model not in _warned_models:
            _warned_models.add(model)
            logger.warning(f"No price for Realtime model {model!r}: its calls have no cost")
        return None
    return (
        usage.input_audio_tokens * price.audio_in
        + usage.cached_audio_tokens * price.cached_audio_in
        + usage.output_audio_tokens * price.audio_out
        + usage.input_text_tokens * price.text_in
        + usage.cached_text_tokens * price.cached_text_in
        + usage.output_text_tokens * price.text_out
    ) / 1_000_000


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
