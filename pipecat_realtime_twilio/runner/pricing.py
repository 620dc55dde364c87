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
`cost_by_kind` splits the cost by the six kinds of token (the record's ``cost``);
`cost_usd` is the sum of that split.

Other prices (a contract, a new model) come from a JSON file, ``PRICES_FILE``,
that replaces or adds to the table: a `PriceTable` holds the prices in effect
without changing `PRICES`::

    prices = PriceTable.from_settings(settings)  # PRICES, updated from PRICES_FILE
    cost = prices.cost_usd(record.model, record.usage)

The file maps model ids to their six prices, USD per million tokens::

    {"gpt-realtime-2.1": {"audio_in": 32, "cached_audio_in": 0.4, "audio_out": 64,
                          "text_in": 4, "cached_text_in": 0.4, "text_out": 24}}

GPT-Live (a bot with ``engine: live``) is billed differently: the Live model per
minute of active session (`LIVE_PRICES`, prorated by the second), and the
Responses model it delegates to by its tokens (a text model's row of `PRICES`, its
audio prices 0); :mod:`~pipecat_realtime_twilio.runner.live_pricing` prices both.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.settings import Settings


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
    # models/gpt-realtime-mini (platform.openai.com/docs/models/gpt-realtime-mini, as stored
    # in 2025; its text input 0.60 is also in the comparison on models/gpt-realtime-2.1-mini).
    # Its snapshots -2025-10-06 and -2025-12-15 match it by their date suffix.
    "gpt-realtime-mini": ModelPrice(
        audio_in=10.00,
        cached_audio_in=0.30,
        audio_out=20.00,
        text_in=0.60,
        cached_text_in=0.06,
        text_out=2.40,
    ),
    # models/gpt-4o-realtime-preview (marked "Shut down"): the prices of its later snapshots.
    # Its first, -2024-10-01 (also gone), cost more (audio cached 20, as quoted from the
    # pricing page on community.openai.com) and would be priced too low here.
    "gpt-4o-realtime-preview": ModelPrice(
        audio_in=40.00,
        cached_audio_in=2.50,
        audio_out=80.00,
        text_in=5.00,
        cached_text_in=2.50,
        text_out=20.00,
    ),
    # models/gpt-4o-mini-realtime-preview (text cached input 0.30, as audio's).
    "gpt-4o-mini-realtime-preview": ModelPrice(
        audio_in=10.00,
        cached_audio_in=0.30,
        audio_out=20.00,
        text_in=0.60,
        cached_text_in=0.30,
        text_out=2.40,
    ),
    # Responses models GPT-Live delegates to (text only: audio prices 0).
    # gpt-5.4-mini: input 0.75, cached input 0.075, output 4.50 (OpenAI's launch prices, as
    # quoted in March 2026). The default OPENAI_LIVE_BACKEND_MODEL.
    "gpt-5.4-mini": ModelPrice(
        audio_in=0.0,
        cached_audio_in=0.0,
        audio_out=0.0,
        text_in=0.75,
        cached_text_in=0.075,
        text_out=4.50,
    ),
    # Left out, unpriced (cost None) until OpenAI publishes all six prices:
    # - gpt-audio-mini: models/gpt-audio-mini lists only text 0.60 / 2.40 (no audio and no
    #   cached prices) and marks the Realtime endpoint not supported.
    # - gpt-audio-1.5: models/gpt-audio-1.5 lists text 2.50 / 10 and audio 32 / 64 but no
    #   cached input price (and the Realtime endpoint not supported).
}
"""USD per million tokens of each Realtime model, by model id (without a date suffix)."""

LIVE_PRICES: dict[str, float] = {
    # GPT-Live over a WebSocket: $0.05 per minute of active session, billed by the second
    # (the $0.02 per minute of standby is for WebRTC sessions only).
    "gpt-live-1": 0.05,
    "gpt-live-1.1": 0.05,
}
"""USD per minute of active session of each GPT-Live model, by model id."""

LIVE_COST_KIND = "live"
"""The kind of a Live call's cost that pays for the session's minutes."""

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
    return _lookup(PRICES, model)


COST_KINDS = ("audio_in", "cached_audio_in", "audio_out", "text_in", "cached_text_in", "text_out")
"""The kinds of `cost_by_kind`, in order: the fields of `ModelPrice`."""


def cost_by_kind(usage: Usage, price: ModelPrice | None) -> dict[str, float]:
    """Return what ``usage`` cost at ``price``, in USD, by kind of token.

    The kinds are `COST_KINDS`: uncached, cached and output audio, then the same
    for text. `cost_usd` is the sum of the values, added in that order.

    Args:
        usage: The tokens used.
        price: The model's prices; None for a model without a price.

    Returns:
        USD by kind (every kind, zeros included), or an empty dict without a price.
    """
    if price is None:
        return {}
    tokens = (
        usage.input_audio_tokens,
        usage.cached_audio_tokens,
        usage.output_audio_tokens,
        usage.input_text_tokens,
        usage.cached_text_tokens,
        usage.output_text_tokens,
    )
    return {
        kind: count * getattr(price, kind) / 1_000_000
        for kind, count in zip(COST_KINDS, tokens, strict=True)
    }


def cost_usd(model: str, usage: Usage) -> float | None:
    """Return what ``usage`` cost with ``model``, in USD.

    Args:
        model: The Realtime model id (a dated snapshot id is priced as its model).
        usage: The tokens used.

    Returns:
        The cost in USD, or None when the model has no price in `PRICES` (a warning
        is logged once per model).
    """
    return _cost(model, price_for(model), usage)


class PriceTable:
    """The prices in effect: `PRICES`, or `PRICES` updated from ``PRICES_FILE``.

    A table is its own copy; building one changes neither `PRICES` nor another table.
    It matches model ids as `price_for` does.
    """

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None):
        """Initialize the table.

        Args:
            prices: Prices by model id; `PRICES` (copied) by default.
        """
        source = PRICES if prices is None else prices
        self._prices = {_key(model): price for model, price in source.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> "PriceTable":
        """`PRICES` updated with the prices of a JSON file (see `load_prices`).

        Args:
            path: The file.

        Returns:
            The table.

        Raises:
            SettingsError: If the file cannot be read or is not a valid price table.
        """
        file_prices = load_prices(path)
        logger.info(f"PRICES_FILE {path}: prices of {len(file_prices)} models")
        return cls({**PRICES, **file_prices})

    @classmethod
    def from_settings(cls, settings: Settings) -> "PriceTable":
        """The table of ``settings``: `PRICES`, updated from ``PRICES_FILE`` if set.

        Args:
            settings: The runner's settings.

        Returns:
            The table.

        Raises:
            SettingsError: If ``PRICES_FILE`` cannot be read or is not a valid price table.
        """
        path = settings.prices_file
        return cls() if not path else cls.from_file(path)

    @property
    def prices(self) -> Mapping[str, ModelPrice]:
        """The prices by model id (lower case), read-only."""
        return MappingProxyType(self._prices)

    def price_for(self, model: str) -> ModelPrice | None:
        """Return the prices of a model, or None (matched as `price_for` matches).

        Args:
            model: The Realtime model id.

        Returns:
            The model's prices, or None.
        """
        return _lookup(self._prices, model)

    def cost_usd(self, model: str, usage: Usage) -> float | None:
        """Return what ``usage`` cost with ``model``, in USD.

        Args:
            model: The Realtime model id.
            usage: The tokens used.

        Returns:
            The cost in USD, or None when the table has no price for the model (a
            warning is logged once per model).
        """
        return _cost(model, self.price_for(model), usage)

    def cost_by_kind(self, model: str, usage: Usage) -> dict[str, float]:
        """Return what ``usage`` cost with ``model``, in USD by kind (see `cost_by_kind`).

        Args:
            model: The Realtime model id.
            usage: The tokens used.

        Returns:
            USD by kind, summing to `cost_usd`; empty when the table has no price
            for the model.
        """
        return cost_by_kind(usage, self.price_for(model))


def load_prices(path: str | Path) -> dict[str, ModelPrice]:
    """Read a ``PRICES_FILE``: a JSON object of prices, USD per million tokens, by model.

    Each model id (matched case aside, a dated snapshot suffix allowed) maps to an
    object of exactly ``audio_in``, ``cached_audio_in``, ``audio_out``, ``text_in``,
    ``cached_text_in`` and ``text_out``: finite numbers, none negative.

    Args:
        path: The file.

    Returns:
        The prices by model id (lower case).

    Raises:
        SettingsError: One line naming ``PRICES_FILE``, the file and what is wrong
            (the model and field, for a bad price).
    """
    where = f"PRICES_FILE {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SettingsError(f"{where}: cannot read the file: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{where}: the file is not UTF-8 text") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_repeated_keys)
    except json.JSONDecodeError as error:
        raise SettingsError(
            f"{where}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except _RepeatedKey as error:
        raise SettingsError(f"{where}: {error.args[0]}: listed twice") from None
    if not isinstance(data, dict):
        raise SettingsError(
            f"{where}: expected a JSON object of prices by model id, not {_json_type(data)}"
        )
    prices: dict[str, ModelPrice] = {}
    for model, entry in data.items():
        key = _key(model)
        if not key:
            raise SettingsError(f"{where}: a model id is empty")
        if key in prices:
            raise SettingsError(f"{where}: {model}: listed twice (model ids match case aside)")
        if not isinstance(entry, dict):
            raise SettingsError(
                f"{where}: {model}: expected an object of the six prices, not {_json_type(entry)}"
            )
        try:
            price = _FilePrice.model_validate(entry)
        except ValidationError as error:
            problems = error.errors()
            first = problems[0]
            field = ".".join(str(part) for part in first["loc"])
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SettingsError(f"{where}: {model}: {field}: {first['msg']}{more}") from None
        prices[key] = ModelPrice(**price.model_dump())
    return prices


_Price = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]


class _FilePrice(BaseModel):
    """One model's prices in a ``PRICES_FILE``."""

    model_config = ConfigDict(extra="forbid")

    audio_in: _Price
    cached_audio_in: _Price
    audio_out: _Price
    text_in: _Price
    cached_text_in: _Price
    text_out: _Price


class _RepeatedKey(ValueError):
    """A model named twice in the prices file (JSON would keep only the last)."""


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKey(key)
        result[key] = value
    return result


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    kinds = ((list, "an array"), (str, "a string"), (int | float, "a number"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "a value")


def _key(model: str) -> str:
    return (model or "").strip().lower()


def _lookup(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    name = _key(model)
    if name in prices:
        return prices[name]
    return prices.get(_SNAPSHOT_SUFFIX.sub("", name))


def _cost(model: str, price: ModelPrice | None, usage: Usage) -> float | None:
    if price is None:
        if model not in _warned_models:
            _warned_models.add(model)
            logger.warning(f"No price for Realtime model {model!r}: its calls have no cost")
        return None
    return sum(cost_by_kind(usage, price).values())  # the same sum as the record's `cost`
