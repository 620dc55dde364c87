#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a GPT-Live call cost: its session's minutes, and its backend model's tokens.

A GPT-Live call is billed for the Live model per minute of active session
(:data:`~pipecat_realtime_twilio.runner.pricing.LIVE_PRICES`, prorated by the second
the server reports) and for the Responses model it delegates to by that model's
tokens (its row in :data:`~pipecat_realtime_twilio.runner.pricing.PRICES`, or a
``PRICES_FILE``)::

    cost = live_cost_by_kind(prices, "gpt-live-1.1", 95.0, "gpt-5.4-mini", usage)
    # {"live": 0.0792, "text_in": ..., "cached_text_in": ..., "text_out": ...}
"""

import re

from loguru import logger

from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.runner.pricing import LIVE_COST_KIND, LIVE_PRICES, PriceTable

_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_warned: set[str] = set()


def live_price_for(model: str) -> float | None:
    """USD per minute of a GPT-Live model (a dated snapshot id as its model), or None.

    Args:
        model: The Live model id, e.g. ``gpt-live-1.1``.
    """
    name = (model or "").strip().lower()
    if name in LIVE_PRICES:
        return LIVE_PRICES[name]
    return LIVE_PRICES.get(_SNAPSHOT_SUFFIX.sub("", name))


def live_cost_by_kind(
    prices: PriceTable, model: str, billed_seconds: float, backend_model: str, usage: Usage
) -> dict[str, float]:
    """What a GPT-Live call cost, in USD by kind.

    Args:
        prices: The prices in effect (for the backend model).
        model: The Live model.
        billed_seconds: Seconds of active session billed.
        backend_model: The Responses model delegated work went to.
        usage: The backend's tokens (text only).

    Returns:
        ``{"live": the minutes' cost, "text_in", "cached_text_in", "text_out"}`` (the
        backend's kinds only when it used tokens); empty when the Live model has no
        price, or the backend used tokens and has none (no cost is better than one
        too low).
    """
    per_minute = live_price_for(model)
    if per_minute is None:
        if model not in _warned:
            _warned.add(model)
            logger.warning(f"No price for GPT-Live model {model!r}: its calls have no cost")
        return {}
    cost = {LIVE_COST_KIND: max(0.0, billed_seconds) / 60 * per_minute}
    if usage.total_tokens:
        backend = prices.cost_by_kind(backend_model, usage)
        if not backend:
            return {}
        cost.update({kind: usd for kind, usd in backend.items() if "audio" not in kind})
    return cost


def live_cost_usd(
    prices: PriceTable, model: str, billed_seconds: float, backend_model: str, usage: Usage
) -> float | None:
    """What a GPT-Live call cost, in USD: the sum of :func:`live_cost_by_kind`, or None.

    Args:
        prices: The prices in effect (for the backend model).
        model: The Live model.
        billed_seconds: Seconds of active session billed.
        backend_model: The Responses model delegated work went to.
        usage: The backend's tokens.
    """
    cost = live_cost_by_kind(prices, model, billed_seconds, backend_model, usage)
    return sum(cost.values()) if cost else None
