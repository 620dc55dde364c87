#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Finding call records: the ``calls`` table, filters, pages, and the overview of a range.

:data:`calls_table` is the table as the newest migration
(:mod:`~pipecat_realtime_twilio.runner.migrations`) leaves it: the whole record as JSON
in ``record``, and real columns, derived from it by :func:`row_values`, for what calls
are filtered and summed by. :class:`CallQuery` says which calls;
:class:`~pipecat_realtime_twilio.runner.store.CallStore` runs it (``search``) and sums a
time range (``overview``) with the statements and helpers here. The SQL is SQLAlchemy
Core and the same on every engine: no engine's own functions (dates, percentiles), the
rest is done in Python.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Double,
    Index,
    MetaData,
    Select,
    String,
    Table,
    Text,
    and_,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.sql.elements import ColumnElement

from pipecat_realtime_twilio.runner.records import CallRecord, _percentile

MAX_LIMIT = 500
"""Most records one page of a search holds (a larger ``limit`` is cut to this)."""

MAX_OVERVIEW_DAYS = 400
"""Longest range an overview sums, in days."""

_DAY_S = 86400.0
_BATCH = 1000  # rows read at a time by an overview

# MySQL's TEXT holds 64 KiB: too little for the record or transcript of a long call.
_LONG_TEXT = Text().with_variant(LONGTEXT(), "mysql", "mariadb")

metadata = MetaData()
calls_table = Table(
    "calls",
    metadata,
    Column("call_sid", String(128), primary_key=True),
    Column("bot", String(200), nullable=False, index=True),
    Column("started_at", Double, nullable=False, index=True),
    Column("end_reason", String(200), index=True),
    Column("webhook_delivered", Boolean, nullable=False, index=True),
    Column("record", _LONG_TEXT, nullable=False),
    # Revision 0002: what calls are filtered and summed by, derived from the record.
    Column("from_number", String(64), index=True),
    Column("to_number", String(64), index=True),
    Column("direction", String(32), index=True),
    Column("ended_at", Double),
    Column("duration_s", Double, index=True),
    Column("cost_usd", Double, index=True),
    Column("transcript_text", _LONG_TEXT),
    Column("has_recording", Boolean, nullable=False, server_default=false()),
    Column("response_p50_ms", Double),
    Column("response_ms", Text),
    # Revision 0003: pages newest first, of all calls and of one bot, without a sort.
    Index("ix_calls_started_sid", "started_at", "call_sid"),
    Index("ix_calls_bot_started_sid", "bot", "started_at", "call_sid"),
)
"""The ``calls`` table: the whole record as JSON, and columns to filter and sum by.

``transcript_text`` is every turn's text (both sides), lower-cased, a line each;
``has_recording`` says the runner kept its own recording of the call (``recording``);
``response_ms`` is the JSON list of the call's response latency samples.
"""

_NEWEST_FIRST = (calls_table.c.started_at.desc(), calls_table.c.call_sid.desc())


def transcript_text(record: CallRecord) -> str:
    """Return what was said on the call, both sides, lower-cased: one line per turn.

    Args:
        record: The record.
    """
    return "\n".join(str(turn.get("text") or "") for turn in record.transcript).lower()


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _cut(value: str | None, length: int) -> str | None:
    return value[:length] if value else None


def row_values(record: CallRecord) -> dict[str, Any]:
    """Return the row of ``record`` in :data:`calls_table`, all but ``call_sid``.

    The short columns are cut to their length; the JSON keeps every character.

    Args:
        record: The record.

    Returns:
        Column name to value.
    """
    samples = [s for s in map(_finite, record.latency.get("response_ms") or []) if s is not None]
    recording = record.recording if isinstance(record.recording, dict) else None
    return {
        "bot": (record.bot or "")[:200],
        "started_at": float(record.started_at),
        "end_reason": _cut(record.end_reason, 200),
        "webhook_delivered": bool(record.webhook_delivered),
        "record": record.to_json(),
        "from_number": _cut(record.from_number, 64),
        "to_number": _cut(record.to_number, 64),
        "direction": _cut(record.direction, 32),
        "ended_at": _finite(record.ended_at),
        "duration_s": _finite(record.duration_s),
        "cost_usd": _finite(record.cost_usd),
        "transcript_text": transcript_text(record),
        "has_recording": bool(recording and recording.get("location")),
        "response_p50_ms": _finite(record.latency.get("p50_ms")),
        "response_ms": json.dumps(samples),
    }


def _like_escaped(text: str) -> str:
    """``text`` for a LIKE pattern whose escape character is the backslash."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def number_forms(number: str) -> list[str]:
    """Return the stored forms that match a phone number as someone typed it.

    Spaces, dashes, dots and brackets go; digits with or without a leading ``+``
    match both ``+15551234567`` and ``15551234567``. Anything else (``client:alice``,
    a SIP address) matches as given.

    Args:
        number: The number, e.g. ``+1 (555) 123-4567``.

    Returns:
        The forms, one or two.
    """
    text = number.strip()
    compact = re.sub(r"[\s().\-]", "", text)
    digits = compact.removeprefix("+")
    if digits.isdigit() and digits.isascii():
        return [f"+{digits}", digits]
    return [text]


@dataclass(frozen=True)
class CallQuery:
    """Which call records a search returns; every filter given must hold.

    Parameters:
        bot: Only calls to this bot.
        since: Only calls that started at or after this Unix time.
        until: Only calls that started before this Unix time.
        end_reason: Only calls that ended so: the reason itself, or any reason it
            begins followed by ``:`` (``"failed"`` matches ``"failed: connect: quota"``).
        direction: Only ``"inbound"`` or only ``"outbound"`` calls.
        number: Only calls from or to this number (see :func:`number_forms`).
        search: Only calls whose transcript (either side) has this text, in any case.
        limit: At most this many records (at most :data:`MAX_LIMIT`).
        offset: Skip this many of the newest matching calls first.

    Raises:
        ValueError: ``limit`` below 1 or ``offset`` below 0.
    """

    bot: str | None = None
    since: float | None = None
    until: float | None = None
    end_reason: str | None = None
    direction: str | None = None
    number: str | None = None
    search: str | None = None
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset must be at least 0, not {self.offset}")

    def conditions(self) -> list[ColumnElement[bool]]:
        """Return the WHERE conditions of the filters given (all must hold)."""
        c = calls_table.c
        where: list[ColumnElement[bool]] = []
        if self.bot is not None:
            where.append(c.bot == self.bot)
        if self.since is not None:
            where.append(c.started_at >= float(self.since))
        if self.until is not None:
            where.append(c.started_at < float(self.until))
        if self.end_reason is not None:
            # "failed" or "failed: ...": a range, which uses the index on both engines
            # (SQLite's LIKE ignores case and so cannot), and ":" + 1 is ";".
            reason = self.end_reason.strip()
            prefixed = and_(c.end_reason >= reason + ":", c.end_reason < reason + ";")
            where.append(or_(c.end_reason == reason, prefixed))
        if self.direction is not None:
            where.append(c.direction == self.direction)
        if self.number is not None and self.number.strip():
            forms = number_forms(self.number)
            where.append(or_(c.from_number.in_(forms), c.to_number.in_(forms)))
        if self.search:
            pattern = "%" + _like_escaped(self.search.lower()) + "%"
            where.append(c.transcript_text.like(pattern, escape="\\"))
        return where

    def page(self) -> Select:
        """Return the SELECT of the matching rows of this page, newest first."""
        return (
            select(calls_table)
            .where(*self.conditions())
            .order_by(*_NEWEST_FIRST)
            .limit(min(self.limit, MAX_LIMIT))
            .offset(self.offset)
        )

    def count(self) -> Select:
        """Return the SELECT of how many calls match, all pages."""
        return select(func.count()).select_from(calls_table).where(*self.conditions())


def newest_first(limit: int, offset: int = 0) -> Select:
    """Return the SELECT of a page of all rows, newest first (``CallStore.list``).

    Args:
        limit: At most this many.
        offset: Skip this many newest ones first.
    """
    return select(calls_table).order_by(*_NEWEST_FIRST).limit(limit).offset(offset)


def undelivered_first(limit: int) -> Select:
    """Return the SELECT of rows not yet delivered to the webhook, oldest first.

    Args:
        limit: At most this many.
    """
    order = (calls_table.c.started_at.asc(), calls_table.c.call_sid.asc())
    undelivered = calls_table.c.webhook_delivered.is_(False)
    return select(calls_table).where(undelivered).order_by(*order).limit(limit)


@dataclass
class CallPage:
    """One page of a search.

    Parameters:
        records: The page's records, newest first.
        total: How many calls match, on every page.
    """

    records: list[CallRecord]
    total: int


#
# the overview
#


def _day(at: float) -> date:
    # Whole seconds: fromtimestamp rounds to microseconds, and would put the float just
    # before a midnight (an exclusive `until`) on the next day.
    return datetime.fromtimestamp(math.floor(at), UTC).date()


def _samples(text: str | None) -> list[float]:
    try:
        values = json.loads(text) if text else []
    except ValueError:
        return []
    if not isinstance(values, list):
        return []
    return [s for s in map(_finite, values) if s is not None]


class _Sums:
    """Calls, minutes and cost added up."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0
        self.cost_usd = 0.0

    def add(self, duration_s: float | None, cost_usd: float | None) -> None:
        self.calls += 1
        self.seconds += _finite(duration_s) or 0.0
        self.cost_usd += _finite(cost_usd) or 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "minutes": round(self.seconds / 60, 3),
            "cost_usd": round(self.cost_usd, 6),
        }


def _check_range(since: float, until: float) -> None:
    if not (math.isfinite(since) and math.isfinite(until)) or until <= since:
        raise ValueError(f"an overview needs since < until, not {since!r} and {until!r}")
    if until - since > MAX_OVERVIEW_DAYS * _DAY_S:
        raise ValueError(f"an overview covers at most {MAX_OVERVIEW_DAYS} days")


def overview(connection: Connection, since: float, until: float) -> dict[str, Any]:
    """Sum the calls that started in ``[since, until)``: per UTC day, per bot, per end.

    One pass over six small columns of the calls in the range, oldest first, read
    :data:`_BATCH` rows at a time; only one day's response latency samples are held at
    once (a day's percentiles are taken when the next day starts).

    Args:
        connection: A connection to the database.
        since: Start of the range, Unix time (inclusive).
        until: End of the range, Unix time (exclusive).

    Returns:
        ``{"days": [{"day": "YYYY-MM-DD", "calls", "minutes", "cost_usd",
        "response_p50_ms", "response_p95_ms"}, ...], "by_bot": [{"bot", "calls",
        "minutes", "cost_usd"}, ...], "end_reasons": [{"reason", "calls"}, ...],
        "totals": {"calls", "minutes", "cost_usd"}}``: every day of the range, those
        without calls too (percentiles None without samples); bots and reasons
        (the part of the end reason before its first ``:``) most calls first.

    Raises:
        ValueError: ``until`` not after ``since``, or a range over
            :data:`MAX_OVERVIEW_DAYS`.
    """
    _check_range(since, until)
    first, last = _day(since), _day(math.nextafter(until, -math.inf))
    days = {first + timedelta(days=n): _Sums() for n in range((last - first).days + 1)}
    latency: dict[date, dict[str, float | None]] = {}
    by_bot: dict[str, _Sums] = {}
    reasons: dict[str, int] = {}
    totals = _Sums()
    c = calls_table.c
    query = (
        select(c.started_at, c.bot, c.end_reason, c.duration_s, c.cost_usd, c.response_ms)
        .where(c.started_at >= since, c.started_at < until)
        .order_by(c.started_at.asc())
    )
    day: date | None = None
    samples: list[float] = []
    result = connection.execution_options(yield_per=_BATCH).execute(query)
    for row in result:
        this_day = _day(row.started_at)
        if this_day != day:
            if day is not None:
                latency[day] = _latency(samples)
            day, samples = this_day, []
        samples.extend(_samples(row.response_ms))
        days[this_day].add(row.duration_s, row.cost_usd)
        by_bot.setdefault(row.bot, _Sums()).add(row.duration_s, row.cost_usd)
        totals.add(row.duration_s, row.cost_usd)
        reason = (row.end_reason or "unknown").split(":", 1)[0].strip() or "unknown"
        reasons[reason] = reasons.get(reason, 0) + 1
    if day is not None:
        latency[day] = _latency(samples)
    empty = _latency(())
    return {
        "days": [
            {"day": d.isoformat(), **sums.as_dict(), **latency.get(d, empty)}
            for d, sums in days.items()
        ],
        "by_bot": [
            {"bot": bot, **sums.as_dict()}
            for bot, sums in sorted(by_bot.items(), key=lambda item: (-item[1].calls, item[0]))
        ],
        "end_reasons": [
            {"reason": reason, "calls": calls}
            for reason, calls in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
        ],
        "totals": totals.as_dict(),
    }


def _latency(samples: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(samples)
    if not ordered:
        return {"response_p50_ms": None, "response_p95_ms": None}
    return {
        "response_p50_ms": round(_percentile(ordered, 0.5), 1),
        "response_p95_ms": round(_percentile(ordered, 0.95), 1),
    }
