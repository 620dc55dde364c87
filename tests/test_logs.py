"""Log lines strangers cannot forge or flood, and callers' numbers masked (unit tier)."""

from loguru import logger

from pipecat_realtime_twilio.logs import (
    Throttled,
    field,
    mask_numbers,
    masked_number,
    patch_record,
    show_numbers,
)


def test_numbers_are_masked_unless_shown():
    assert masked_number("+15551234567") == "+1********67"
    assert masked_number("sip:alice@example.com") == "sip:***@example.com"
    assert masked_number("anonymous") == "anonymous" and masked_number(None) == "?"
    assert (
        mask_numbers("transferred to +15551234567 at 12:00")
        == "transferred to +1********67 at 12:00"
    )
    show_numbers(True)
    try:
        assert masked_number("+15551234567") == "+15551234567"
        assert mask_numbers("to +15551234567") == "to +15551234567"
    finally:
        show_numbers(False)


def test_outside_values_are_escaped_and_bounded():
    assert field("CA1\nINFO | forged") == "CA1\\nINFO | forged"
    assert field("a\x1b[31mred\u2028") == "a\\x1b[31mred\\u2028"
    assert field("x" * 100, 10) == "x" * 10 + "…(+90)"


def test_the_patcher_keeps_every_message_on_one_line():
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        logger.patch(patch_record).bind(call_sid="CA\nx").info(
            "call from +15551234567\nERROR forged"
        )
    finally:
        logger.remove(sink)
    assert lines == ["call from +1********67\\nERROR forged\n"]


def test_a_flood_of_one_kind_writes_one_line():
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    throttled = Throttled(interval_secs=3600)
    try:
        logged = [throttled.warning("signature", f"refused {i}") for i in range(100)]
        throttled.warning("other", "another kind")
    finally:
        logger.remove(sink)
    assert logged.count(True) == 1 and lines == ["refused 0\n", "another kind\n"]
