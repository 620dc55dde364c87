"""Tests for token usage and call cost: the price table, model matching and usage mapping."""

import json

import pytest
from loguru import logger

from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.runner import pricing
from pipecat_realtime_twilio.runner.live_pricing import (
    live_cost_by_kind,
    live_cost_usd,
    live_price_for,
)
from pipecat_realtime_twilio.runner.pricing import (
    COST_KINDS,
    LIVE_PRICES,
    PRICES,
    ModelPrice,
    PriceTable,
    cost_by_kind,
    cost_usd,
    load_prices,
    price_for,
)
from pipecat_realtime_twilio.settings import Settings

# A usage of every kind, with distinct counts so a price applied to the wrong kind shows.
USAGE = Usage(
    input_text_tokens=1_234,
    input_audio_tokens=5_678,
    cached_text_tokens=910,
    cached_audio_tokens=1_112,
    output_text_tokens=1_314,
    output_audio_tokens=15_161,
)


@pytest.fixture
def warnings():
    """Loguru warnings logged during the test, and a fresh once-per-model memory."""
    pricing._warned_models.clear()
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    yield messages
    logger.remove(sink)
    pricing._warned_models.clear()


def test_table_has_the_published_prices():
    # USD per million tokens: audio in / cached / out, text in / cached / out.
    expected = {
        "gpt-realtime": (32, 0.40, 64, 4, 0.40, 16),
        "gpt-realtime-1.5": (32, 0.40, 64, 4, 0.40, 16),
        "gpt-realtime-2": (32, 0.40, 64, 4, 0.40, 24),
        "gpt-realtime-2.1": (32, 0.40, 64, 4, 0.40, 24),
        "gpt-realtime-2.1-mini": (10, 0.30, 20, 0.60, 0.06, 2.40),
        "gpt-realtime-mini": (10, 0.30, 20, 0.60, 0.06, 2.40),
        "gpt-4o-realtime-preview": (40, 2.50, 80, 5, 2.50, 20),
        "gpt-4o-mini-realtime-preview": (10, 0.30, 20, 0.60, 0.30, 2.40),
        "gpt-5.4-mini": (0, 0, 0, 0.75, 0.075, 4.50),  # GPT-Live's default backend
    }
    assert set(PRICES) == set(expected)
    for model, numbers in expected.items():
        assert PRICES[model] == ModelPrice(*numbers), model


@pytest.mark.parametrize("model", sorted(PRICES))
def test_cost_of_every_priced_model_by_hand(model):
    p = PRICES[model]
    expected = (
        1_234 * p.text_in
        + 5_678 * p.audio_in
        + 910 * p.cached_text_in
        + 1_112 * p.cached_audio_in
        + 1_314 * p.text_out
        + 15_161 * p.audio_out
    ) / 1e6
    assert cost_usd(model, USAGE) == pytest.approx(expected, rel=1e-12)
    assert cost_usd(model, Usage()) == 0


def test_cost_of_one_response_in_dollars():
    # gpt-realtime-2: 1M uncached audio in $32 + 1M audio out $64 + 1M text out $24.
    usage = Usage(input_audio_tokens=1_000_000, output_audio_tokens=1_000_000)
    usage.output_text_tokens = 1_000_000
    assert cost_usd("gpt-realtime-2", usage) == pytest.approx(32 + 64 + 24)
    # The mini: 10 + 20 + 2.40.
    assert cost_usd("gpt-realtime-2.1-mini", usage) == pytest.approx(10 + 20 + 2.40)


def test_cached_tokens_are_priced_at_the_cached_rate():
    cached = Usage(cached_audio_tokens=1_000_000, cached_text_tokens=1_000_000)
    uncached = Usage(input_audio_tokens=1_000_000, input_text_tokens=1_000_000)
    assert cost_usd("gpt-realtime-2.1", cached) == pytest.approx(0.40 + 0.40)
    assert cost_usd("gpt-realtime-2.1", uncached) == pytest.approx(32 + 4)
    assert cost_usd("gpt-realtime-2.1-mini", cached) == pytest.approx(0.30 + 0.06)

    # Through a response.done usage: 1000 audio tokens of which 800 cached.
    usage = Usage()
    usage.add_response_usage(
        {
            "input_tokens": 1000,
            "input_token_details": {
                "audio_tokens": 1000,
                "text_tokens": 0,
                "cached_tokens": 800,
                "cached_tokens_details": {"audio_tokens": 800, "text_tokens": 0},
            },
        }
    )
    assert cost_usd("gpt-realtime-2.1", usage) == pytest.approx((200 * 32 + 800 * 0.40) / 1e6)


def test_unknown_model_has_no_cost_and_warns_once(warnings):
    assert cost_usd("gpt-unknown-voice", USAGE) is None
    assert cost_usd("gpt-unknown-voice", USAGE) is None
    assert cost_usd("another-model", USAGE) is None
    assert len(warnings) == 2
    assert "gpt-unknown-voice" in warnings[0] and "another-model" in warnings[1]
    # Models without all six published prices are left out.
    assert cost_usd("gpt-audio-mini", USAGE) is None
    assert cost_usd("gpt-audio-1.5", USAGE) is None


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("gpt-realtime", "gpt-realtime"),
        ("gpt-realtime-2025-08-28", "gpt-realtime"),
        ("gpt-realtime-1.5", "gpt-realtime-1.5"),
        ("gpt-realtime-2", "gpt-realtime-2"),
        ("gpt-realtime-2.1", "gpt-realtime-2.1"),
        ("gpt-realtime-2.1-2026-03-01", "gpt-realtime-2.1"),
        ("gpt-realtime-2.1-mini", "gpt-realtime-2.1-mini"),
        ("gpt-realtime-2.1-mini-2026-03-01", "gpt-realtime-2.1-mini"),
        ("GPT-Realtime-2.1-Mini", "gpt-realtime-2.1-mini"),
        ("gpt-realtime-mini", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-12-15", "gpt-realtime-mini"),
        ("gpt-4o-realtime-preview-2025-06-03", "gpt-4o-realtime-preview"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"),
        ("gpt-realtime-mini-2", None),
        ("gpt-audio-mini-2025-12-15", None),
        ("gpt-realtime-2.1-max", None),
        ("gpt-realtime-3", None),
        ("", None),
    ],
)
def test_model_names_and_snapshots(model, key):
    assert price_for(model) is (PRICES[key] if key else None)


def test_mini_is_not_priced_as_its_big_sibling():
    # A different price from gpt-realtime-2.1 and gpt-realtime, so a wrong match shows.
    mini = cost_usd("gpt-realtime-2.1-mini-2026-03-01", USAGE)
    assert mini == pytest.approx(cost_usd("gpt-realtime-2.1-mini", USAGE))
    assert mini < cost_usd("gpt-realtime-2.1", USAGE) / 3
    # Nor gpt-realtime-mini (and its snapshots) as gpt-realtime, nor the 4o mini as the 4o.
    for small, big in [
        ("gpt-realtime-mini", "gpt-realtime"),
        ("gpt-realtime-mini-2025-12-15", "gpt-realtime-2025-08-28"),
        ("gpt-4o-mini-realtime-preview", "gpt-4o-realtime-preview"),
    ]:
        assert price_for(small) != price_for(big), small
        assert cost_usd(small, USAGE) < cost_usd(big, USAGE) / 3, small
    assert price_for("gpt-realtime-mini-2025-10-06") is PRICES["gpt-realtime-mini"]


def test_add_response_usage_maps_a_realtime_usage():
    # The shape of response.done's usage; text_tokens and audio_tokens include the cached ones.
    usage_event = {
        "total_tokens": 821,
        "input_tokens": 789,
        "output_tokens": 32,
        "input_token_details": {
            "text_tokens": 313,
            "audio_tokens": 476,
            "image_tokens": 0,
            "cached_tokens": 640,
            "cached_tokens_details": {"text_tokens": 256, "audio_tokens": 384, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": 9, "audio_tokens": 23},
    }
    usage = Usage()
    usage.add_response_usage(usage_event)
    assert usage == Usage(
        input_text_tokens=313 - 256,
        input_audio_tokens=476 - 384,
        cached_text_tokens=256,
        cached_audio_tokens=384,
        output_text_tokens=9,
        output_audio_tokens=23,
    )
    # Input (uncached + cached) and output add up to OpenAI's totals.
    assert usage.total_tokens == 821

    usage.add_response_usage(usage_event)  # a second response adds up
    assert usage.cached_audio_tokens == 768 and usage.input_text_tokens == 114
    assert usage.output_audio_tokens == 46 and usage.total_tokens == 1642


def test_add_response_usage_of_the_emulator():
    from pipecat_realtime_twilio.testing.emulator.usage import input_audio_tokens, response_usage

    class Response:
        kind = "audio"
        audio_ms = 2_000
        transcript = "Hello there, how can I help?"
        arguments = None

    event_usage = response_usage(Response(), audio_in=input_audio_tokens(3_000), text_in=120)
    usage = Usage()
    usage.add_response_usage(event_usage)
    assert usage.input_audio_tokens == 30 and usage.input_text_tokens == 120
    assert usage.cached_audio_tokens == usage.cached_text_tokens == 0
    assert usage.output_audio_tokens == 40 and usage.output_text_tokens == 7
    assert usage.total_tokens == event_usage["total_tokens"]


@pytest.mark.parametrize(
    "usage_event",
    [
        None,
        {},
        "not a dict",
        {"input_tokens": 10, "output_tokens": 5},  # totals without details
        {"input_token_details": None, "output_token_details": None},
        {"input_token_details": {"text_tokens": None, "cached_tokens_details": None}},
        {"input_token_details": {"text_tokens": "12", "audio_tokens": -3}},
        {"output_token_details": {"text_tokens": float("nan"), "audio_tokens": True}},
    ],
)
def test_add_response_usage_ignores_missing_and_malformed_parts(usage_event):
    usage = Usage()
    usage.add_response_usage(usage_event)
    assert usage == Usage()


def test_partial_usage_counts_what_is_there():
    usage = Usage()
    usage.add_response_usage(
        {
            "input_token_details": {"audio_tokens": 50, "cached_tokens": 40},  # no breakdown
            "output_token_details": {"audio_tokens": 20.0},
        }
    )
    # Cached total without a breakdown: counted as uncached (priced high, never too low).
    assert usage == Usage(input_audio_tokens=50, output_audio_tokens=20)

    # More cached than the total (inconsistent): cached as reported, uncached never negative.
    usage = Usage()
    usage.add_response_usage(
        {"input_token_details": {"text_tokens": 5, "cached_tokens_details": {"text_tokens": 8}}}
    )
    assert usage.input_text_tokens == 0 and usage.cached_text_tokens == 8


def test_as_dict_is_json_and_round_trips():
    data = json.loads(json.dumps(USAGE.as_dict()))
    assert data == {
        "input_text_tokens": 1_234,
        "input_audio_tokens": 5_678,
        "cached_text_tokens": 910,
        "cached_audio_tokens": 1_112,
        "output_text_tokens": 1_314,
        "output_audio_tokens": 15_161,
    }
    assert Usage.from_dict(data) == USAGE
    assert Usage.from_dict({"input_text_tokens": 3, "future_field": 1}) == Usage(3)
    assert Usage.from_dict(None) == Usage()


# PRICES_FILE

SIX = {
    "audio_in": 32,
    "cached_audio_in": 0.4,
    "audio_out": 64,
    "text_in": 4,
    "cached_text_in": 0.4,
    "text_out": 16,
}


def write_prices(tmp_path, data) -> str:
    path = tmp_path / "prices.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def test_prices_file_overrides_a_model_and_adds_one(tmp_path):
    contract = {**SIX, "audio_in": 20, "audio_out": 40, "text_out": 20}
    path = write_prices(
        tmp_path,
        {"gpt-realtime-2.1": contract, "GPT-Realtime-Future": {**SIX, "cached_text_in": 0}},
    )
    assert load_prices(path) == {
        "gpt-realtime-2.1": ModelPrice(20, 0.4, 40, 4, 0.4, 20),
        "gpt-realtime-future": ModelPrice(32, 0.4, 64, 4, 0, 16),
    }

    table = PriceTable.from_settings(Settings(prices_file=path, _env_file=None))
    assert table.price_for("gpt-realtime-2.1") == ModelPrice(20, 0.4, 40, 4, 0.4, 20)
    assert table.price_for("gpt-realtime-2.1-2026-03-01") == table.price_for("gpt-realtime-2.1")
    assert table.price_for("gpt-realtime-future") == ModelPrice(32, 0.4, 64, 4, 0, 16)
    # The rest of the built-in table stays.
    assert table.price_for("gpt-realtime-2.1-mini") is PRICES["gpt-realtime-2.1-mini"]
    usage = Usage(input_audio_tokens=1_000_000, output_audio_tokens=1_000_000)
    assert table.cost_usd("gpt-realtime-2.1", usage) == pytest.approx(20 + 40)

    # The built-in table and the module's functions are untouched.
    assert PRICES["gpt-realtime-2.1"] == ModelPrice(32, 0.40, 64, 4, 0.40, 24)
    assert "gpt-realtime-future" not in PRICES
    assert cost_usd("gpt-realtime-2.1", usage) == pytest.approx(32 + 64)
    assert price_for("gpt-realtime-future") is None


def test_without_a_prices_file_the_table_is_the_built_in_one(warnings):
    table = PriceTable.from_settings(Settings(_env_file=None))
    assert dict(table.prices) == PRICES
    for model in PRICES:
        assert table.cost_usd(model, USAGE) == cost_usd(model, USAGE)
    assert table.cost_usd("gpt-unknown-voice", USAGE) is None
    assert len(warnings) == 1
    with pytest.raises(TypeError):
        table.prices["x"] = PRICES["gpt-realtime"]  # type: ignore[index]


def test_a_table_is_its_own_copy():
    prices = {"my-model": PRICES["gpt-realtime"]}
    table = PriceTable(prices)
    prices["my-model"] = PRICES["gpt-realtime-mini"]
    assert table.price_for("my-model") is PRICES["gpt-realtime"]
    assert table.price_for("gpt-realtime") is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            {"gpt-realtime-2.1": {**SIX, "audio_out": -1}},
            "gpt-realtime-2.1: audio_out: Input should be greater than or equal to 0",
        ),
        (
            {"gpt-realtime-2.1": {k: v for k, v in SIX.items() if k != "text_in"}},
            "gpt-realtime-2.1: text_in: Field required",
        ),
        ({"m": {**SIX, "image_in": 5}}, "m: image_in: Extra inputs are not permitted"),
        ({"m": {**SIX, "text_out": "16"}}, "m: text_out: Input should be a valid number"),
        ({"m": {**SIX, "text_out": True}}, "m: text_out: Input should be a valid number"),
        ({"m": {**SIX, "text_out": None}}, "m: text_out: Input should be a valid number"),
        ('{"m": {"audio_in": Infinity}}', "m: audio_in: Input should be a finite number"),
        ('{"m": {"audio_in": NaN}}', "m: audio_in: Input should be a finite number"),
        ({"m": [1, 2, 3, 4, 5, 6]}, "m: expected an object of the six prices, not an array"),
        ({"m": {}}, "m: audio_in: Field required (and 5 more)"),
        ({" ": SIX}, "a model id is empty"),
        ({"Model": SIX, "model": SIX}, "model: listed twice"),
        (f'{{"m": {json.dumps(SIX)}, "m": {json.dumps(SIX)}}}', "m: listed twice"),
        ([SIX], "expected a JSON object of prices by model id, not an array"),
        ("null", "expected a JSON object of prices by model id, not null"),
        ('{"m": {"audio_in": 1,}}', "not valid JSON: Expecting property name"),
        ("", "not valid JSON: Expecting value (line 1, column 1)"),
    ],
)
def test_a_bad_prices_file_is_one_settings_error_line(tmp_path, content, problem):
    path = write_prices(tmp_path, content)
    with pytest.raises(SettingsError) as caught:
        load_prices(path)
    message = str(caught.value)
    assert message.startswith(f"PRICES_FILE {path}: ")
    assert problem in message
    assert "\n" not in message
    # The same from the settings.
    with pytest.raises(SettingsError, match="PRICES_FILE"):
        PriceTable.from_settings(Settings(prices_file=path, _env_file=None))


def test_a_missing_or_unreadable_prices_file(tmp_path):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(SettingsError) as caught:
        load_prices(missing)
    assert str(caught.value) == (
        f"PRICES_FILE {missing}: cannot read the file: No such file or directory"
    )
    with pytest.raises(SettingsError, match=r"^PRICES_FILE .*: cannot read the file: "):
        load_prices(tmp_path)  # a folder
    binary = tmp_path / "prices.bin"
    binary.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(SettingsError, match=r"^PRICES_FILE .*prices.bin: the file is not UTF-8"):
        load_prices(binary)


def test_the_cost_splits_by_kind_and_adds_up_to_cost_usd():
    price = PRICES["gpt-realtime-2.1"]
    split = cost_by_kind(USAGE, price)
    assert tuple(split) == COST_KINDS  # every kind, in the price's order
    assert split == {
        "audio_in": pytest.approx(5_678 * 32 / 1e6),
        "cached_audio_in": pytest.approx(1_112 * 0.40 / 1e6),
        "audio_out": pytest.approx(15_161 * 64 / 1e6),
        "text_in": pytest.approx(1_234 * 4 / 1e6),
        "cached_text_in": pytest.approx(910 * 0.40 / 1e6),
        "text_out": pytest.approx(1_314 * 24 / 1e6),
    }
    # Exactly the sum, for every priced model and for a table's own prices.
    for model in PRICES:
        assert sum(cost_by_kind(USAGE, PRICES[model]).values()) == cost_usd(model, USAGE), model
    table = PriceTable({"house-model": ModelPrice(1, 2, 3, 4, 5, 6)})
    house = table.cost_by_kind("house-model-2026-01-01", USAGE)
    assert house["text_out"] == pytest.approx(1_314 * 6 / 1e6)
    assert sum(house.values()) == table.cost_usd("house-model", USAGE)
    # Nothing used: zeros of every kind, still summing to the cost.
    assert cost_by_kind(Usage(), price) == dict.fromkeys(COST_KINDS, 0.0)


def test_no_price_no_split(warnings):
    assert cost_by_kind(USAGE, None) == {}
    assert PriceTable().cost_by_kind("gpt-unknown-voice", USAGE) == {}
    assert cost_usd("gpt-unknown-voice", USAGE) is None


def test_live_calls_are_priced_by_the_minute_plus_the_backends_tokens():
    assert LIVE_PRICES == {"gpt-live-1": 0.05, "gpt-live-1.1": 0.05}
    assert live_price_for("gpt-live-1.1-2026-11-01") == 0.05
    assert live_price_for("gpt-realtime-2") is None
    table = PriceTable()
    backend = Usage(input_text_tokens=10_000, cached_text_tokens=2_000, output_text_tokens=1_000)
    cost = live_cost_by_kind(table, "gpt-live-1.1", 90.0, "gpt-5.4-mini", backend)
    assert cost == pytest.approx(
        {
            "live": 1.5 * 0.05,
            "text_in": 10_000 * 0.75 / 1e6,
            "cached_text_in": 2_000 * 0.075 / 1e6,
            "text_out": 1_000 * 4.50 / 1e6,
        }
    )
    total = live_cost_usd(table, "gpt-live-1.1", 90.0, "gpt-5.4-mini", backend)
    assert total == pytest.approx(sum(cost.values()))
    # No backend tokens: the minutes alone, whatever the backend model.
    assert live_cost_by_kind(table, "gpt-live-1", 60.0, "unpriced", Usage()) == {"live": 0.05}


def test_a_live_call_without_the_prices_it_needs_has_no_cost(warnings):
    table = PriceTable()
    tokens = Usage(output_text_tokens=10)
    assert live_cost_by_kind(table, "gpt-live-9", 60.0, "gpt-5.4-mini", tokens) == {}
    assert live_cost_usd(table, "gpt-live-1.1", 60.0, "unpriced-backend", tokens) is None
    assert any("gpt-live-9" in m for m in warnings)
