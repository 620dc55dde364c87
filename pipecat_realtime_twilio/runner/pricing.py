#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a call cost: OpenAI's prices per Realtime model, applied to a call's usage.

Every ``response.done`` event of the Realtime API carries the ``usage`` of that
response. The agent adds them up over a call
(:class:`~pipecat_realtime_twilio.agent.usage.Usage`) and `cost_usd` prices the
sum with the table `PRICES`::

    usage = Usage()
    usage.add_response_usage(event["response"]["usage"])  # for every response.done
    cost = cost_usd("gpt-realtime-2.1", usage)  # None for a model not in PRICES

Cached input tokens are billed at their own (much lower) price; `Usage` keeps them
apart from the uncached ones (see :mod:`pipecat_realtime_twilio.agent.usage`).
"""

import re
from dataclasses import dataclass

from loguru import logger

from pipecat_realtime_twilio.agent.usage import Usage


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


def cost_usd(model: str, usage: Usage) -> float | None:
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
