"""Searching call records and summing a range: every filter, pages, the overview; both engines."""

from datetime import UTC, datetime

import pytest

from pipecat_realtime_twilio.runner.queries import (
    MAX_LIMIT,
    CallPage,
    CallQuery,
    number_forms,
)
from pipecat_realtime_twilio.runner.records import CallRecord, latency_summary
from pipecat_realtime_twilio.runner.store import CallStore

DAY = 86400.0
D0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()  # midnight UTC


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.call)])
def store(request, tmp_path):
    """A store on a SQLite file, and on a real PostgreSQL server (a `call` test)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path}/calls.db"
    with CallStore(url) as store:
        yield store


def call(
    sid: str,
    started: float,
    *,
    bot: str = "front",
    reason: str = "caller_hung_up",
    said: str = "Hello",
    direction: str = "inbound",
    from_number: str | None = "+15550001111",
    to_number: str | None = "+15550002222",
    seconds: float = 60.0,
    cost: float | None = 0.1,
    response_ms: tuple[float, ...] = (),
) -> CallRecord:
    record = CallRecord(
        call_sid=sid,
        bot=bot,
        started_at=started,
        direction=direction,
        from_number=from_number,
        to_number=to_number,
        cost_usd=cost,
    )
    record.add_turn("caller", said, at=started + 1)
    record.add_turn("bot", "Of course, here it is.", at=started + 2)
    record.latency = latency_summary(response_ms)
    record.finish(reason, ended_at=started + seconds)
    return record


CALLS = [
    call("CA1", D0 + 100, said="Do you open on SUNDAY?", response_ms=(100, 200, 300)),
    call("CA2", D0 + 200, bot="survey", reason="failed: connect: quota", cost=None),
    call("CA3", D0 + DAY, reason="failed", said="100% sure", direction="outbound"),
    call("CA4", D0 + DAY + 10, reason="failed_over", said="1000 things", response_ms=(400,)),
    call("CA5", D0 + 2 * DAY, said="École fermée ?", from_number="client:alice"),
    call("CA6", D0 + 3 * DAY, said="a_b", to_number="+447700900123", seconds=30, cost=0.05),
    call("CA7", D0 + 3 * DAY + 5, said="axb", bot="survey", reason="transferred: +1555"),
]


@pytest.fixture
def calls(store):
    for record in CALLS:
        store.save(record)
    return store


def sids(page: CallPage) -> list[str]:
    return [r.call_sid for r in page.records]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (CallQuery(), ["CA7", "CA6", "CA5", "CA4", "CA3", "CA2", "CA1"]),
        (CallQuery(bot="survey"), ["CA7", "CA2"]),
        (CallQuery(bot="nobody"), []),
        (CallQuery(since=D0 + DAY), ["CA7", "CA6", "CA5", "CA4", "CA3"]),  # inclusive
        (CallQuery(until=D0 + DAY), ["CA2", "CA1"]),  # exclusive
        (CallQuery(since=D0 + DAY, until=D0 + 2 * DAY), ["CA4", "CA3"]),
        (CallQuery(end_reason="failed"), ["CA3", "CA2"]),  # itself, and "failed: ..."
        (CallQuery(end_reason="failed: connect"), ["CA2"]),
        (CallQuery(end_reason="failed_over"), ["CA4"]),
        (CallQuery(end_reason="fail"), []),
        (CallQuery(end_reason="transferred"), ["CA7"]),
        (CallQuery(direction="outbound"), ["CA3"]),
        (CallQuery(direction="inbound", bot="survey"), ["CA7", "CA2"]),
        (CallQuery(number="+15550001111"), ["CA7", "CA6", "CA4", "CA3", "CA2", "CA1"]),
        (CallQuery(number="+44 7700 900123"), ["CA6"]),  # the called number, typed loosely
        (CallQuery(number="447700900123"), ["CA6"]),  # without its +
        (CallQuery(number="(555) 000-1111"), []),  # another number: no country code
        (CallQuery(number="client:alice"), ["CA5"]),
        (CallQuery(search="sunday"), ["CA1"]),
        (CallQuery(search="OPEN ON"), ["CA1"]),
        (CallQuery(search="here it is"), [c.call_sid for c in reversed(CALLS)]),  # bot's side
        (CallQuery(search="100%"), ["CA3"]),  # % is no wildcard
        (CallQuery(search="a_b"), ["CA6"]),  # nor is _
        (CallQuery(search="école"), ["CA5"]),
        (CallQuery(search="FERMÉE"), ["CA5"]),
        (CallQuery(search="nowhere"), []),
        (CallQuery(bot="front", search="1000", since=D0 + DAY, end_reason="failed_over"), ["CA4"]),
    ],
)
def test_filters(calls, query, expected):
    page = calls.search(query)
    assert sids(page) == expected
    assert page.total == len(expected)


def test_pages_and_their_total(calls):
    page = calls.search(CallQuery(limit=2))
    assert sids(page) == ["CA7", "CA6"] and page.total == 7
    page = calls.search(CallQuery(limit=2, offset=2))
    assert sids(page) == ["CA5", "CA4"] and page.total == 7
    page = calls.search(CallQuery(limit=5, offset=6))
    assert sids(page) == ["CA1"]
    page = calls.search(CallQuery(offset=10))
    assert page.records == [] and page.total == 7
    assert calls.search(CallQuery(bot="survey", limit=1)).total == 2


def test_the_records_come_back_whole(calls):
    [record] = calls.search(CallQuery(search="sunday")).records
    assert record == CALLS[0]


def test_a_page_holds_at_most_max_limit(store):
    for n in range(MAX_LIMIT + 3):
        store.save(call(f"CA{n:05d}", D0 + n))
    page = store.search(CallQuery(limit=10_000))
    assert len(page.records) == MAX_LIMIT and page.total == MAX_LIMIT + 3
    assert page.records[0].call_sid == f"CA{MAX_LIMIT + 2:05d}"


def test_bad_pages_are_refused():
    with pytest.raises(ValueError, match="limit must be at least 1"):
        CallQuery(limit=0)
    with pytest.raises(ValueError, match="offset must be at least 0"):
        CallQuery(offset=-1)


def test_number_forms():
    assert number_forms(" +1 (555) 000-1111 ") == ["+15550001111", "15550001111"]
    assert number_forms("15550001111") == ["+15550001111", "15550001111"]
    assert number_forms("sip:alice@example.com") == ["sip:alice@example.com"]
    assert number_forms("١٢٣") == ["١٢٣"]  # digits, but not ASCII ones: as given


async def test_async_twins(calls):
    page = await calls.asearch(CallQuery(bot="survey"))
    assert sids(page) == ["CA7", "CA2"]
    summary = await calls.aoverview(D0, D0 + DAY)
    assert summary["totals"]["calls"] == 2


def test_overview(calls):
    summary = calls.overview(D0, D0 + 4 * DAY)
    assert summary["days"] == [
        {
            "day": "2026-11-01",
            "calls": 2,
            "minutes": 2.0,
            "cost_usd": 0.1,  # CA2 has no price
            "response_p50_ms": 200.0,
            "response_p95_ms": 290.0,
        },
        {
            "day": "2026-11-02",
            "calls": 2,
            "minutes": 2.0,
            "cost_usd": 0.2,
            "response_p50_ms": 400.0,
            "response_p95_ms": 400.0,
        },
        {
            "day": "2026-11-03",
            "calls": 1,
            "minutes": 1.0,
            "cost_usd": 0.1,
            "response_p50_ms": None,
            "response_p95_ms": None,
        },
        {
            "day": "2026-11-04",
            "calls": 2,
            "minutes": 1.5,
            "cost_usd": 0.15,
            "response_p50_ms": None,
            "response_p95_ms": None,
        },
    ]
    assert summary["by_bot"] == [
        {"bot": "front", "calls": 5, "minutes": 4.5, "cost_usd": 0.45},
        {"bot": "survey", "calls": 2, "minutes": 2.0, "cost_usd": 0.1},
    ]
    assert summary["end_reasons"] == [
        {"reason": "caller_hung_up", "calls": 3},
        {"reason": "failed", "calls": 2},
        {"reason": "failed_over", "calls": 1},
        {"reason": "transferred", "calls": 1},
    ]
    assert summary["totals"] == {"calls": 7, "minutes": 6.5, "cost_usd": 0.55}


def test_overview_of_a_range_lists_every_day_and_only_its_calls(calls):
    # From the middle of Oct 31 to the middle of Nov 2 (exclusive): three days, 4 calls.
    summary = calls.overview(D0 - DAY / 2, D0 + DAY + 10)
    assert [d["day"] for d in summary["days"]] == ["2026-10-31", "2026-11-01", "2026-11-02"]
    assert [d["calls"] for d in summary["days"]] == [0, 2, 1]
    assert summary["days"][0]["minutes"] == 0.0 and summary["days"][0]["cost_usd"] == 0.0
    # An end at midnight exactly takes no day after it.
    assert [d["day"] for d in calls.overview(D0, D0 + DAY)["days"]] == ["2026-11-01"]


def test_overview_of_nothing(store):
    summary = store.overview(D0, D0 + 2 * DAY)
    assert [d["calls"] for d in summary["days"]] == [0, 0]
    assert summary["by_bot"] == [] and summary["end_reasons"] == []
    assert summary["totals"] == {"calls": 0, "minutes": 0.0, "cost_usd": 0.0}


def test_overview_refuses_bad_ranges(store):
    with pytest.raises(ValueError, match="since < until"):
        store.overview(D0, D0)
    with pytest.raises(ValueError, match="since < until"):
        store.overview(D0, float("nan"))
    with pytest.raises(ValueError, match="at most 400 days"):
        store.overview(D0, D0 + 401 * DAY)
