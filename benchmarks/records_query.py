"""The call store at scale: searches, a record, overviews and the schema migration, timed.

Usage (from the repository root)::

    .venv/bin/python benchmarks/records_query.py [--records 100000] [--repeat 5]
        [--migrate-rows 20000] [--postgres-url postgresql+psycopg://...] [--json FILE]

It fills a SQLite database (in a temporary folder) with ``--records`` synthetic
call records: 90 days of calls to 5 bots, a few turns of varied transcript each,
response latency samples, numbers that call back, end reasons as the runner writes
them (``caller hung up``, ``failed: connect: timeout``...). Most rows go in by a
bulk ``INSERT`` of exactly the columns ``CallStore.save`` writes
(``queries.row_values`` of each record); the last ``--saves`` go through
``CallStore.save`` itself, timed. Then, each the median of ``--repeat`` runs
after one warm-up, against the baseline of a plain ``SELECT count(*)`` over the
table measured in the same run (and, for reference, a scan that reads every row):

- ``CallStore.search`` with no filter (the console's first page), and with each
  filter alone: bot, since 7 days, end reason ``failed`` (a prefix), a number, a
  transcript search for a rare word and for a common one, and the unfiltered page
  half way down the list (``offset``); the count and the page statements of each
  are also timed apart, and the plans of the figures over ``--explain-ms`` are
  printed (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN);
- ``CallStore.get`` of one call;
- ``CallStore.overview`` of the last 7, 30 and 90 days.

Last, the migration: a database at the old schema (revision 0001: the original
columns only) with ``--migrate-rows`` rows, opened by ``CallStore`` (which upgrades
it to the head and fills the new columns from each row's JSON), in rows per second,
against inserting those rows; a sample of the filled rows is compared with
``row_values``.

With ``--postgres-url`` (a database you can write to) the same runs on PostgreSQL too,
in a schema of its own (``bench_...``, dropped at the end); there the table is
``ANALYZE``d after the fill (autovacuum would do it shortly after such a load). SQLite
gets no ``ANALYZE`` (the runner never runs one). Nothing here asserts a time: the
machine is shared and noisy; read the ratios of one run.
"""

import argparse
import json
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alembic import command  # noqa: E402
from loguru import logger  # noqa: E402
from sqlalchemy import Engine, create_engine, func, select, table, text  # noqa: E402
from sqlalchemy import column as sa_column  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from pipecat_realtime_twilio.agent.usage import Usage  # noqa: E402
from pipecat_realtime_twilio.runner.migrations import alembic_config  # noqa: E402
from pipecat_realtime_twilio.runner.queries import (  # noqa: E402
    CallQuery,
    calls_table,
    row_values,
)
from pipecat_realtime_twilio.runner.records import CallRecord, latency_summary  # noqa: E402
from pipecat_realtime_twilio.runner.store import CallStore  # noqa: E402

DAY = 86400.0
DAYS = 90
RARE_WORD = "xylophone"
"""In about one call in 20,000."""
COMMON_WORD = "order"
"""In a large share of the calls (the orders bot's, and others')."""
_BATCH = 2000  # rows per bulk INSERT

# ------------------------------------------------------------------------------------------
# synthetic records
# ------------------------------------------------------------------------------------------

BOTS = {  # name: (share of the calls, its number, what callers say, what it says)
    "front-desk": (0.35, "+14155550101"),
    "orders": (0.25, "+14155550102"),
    "billing": (0.20, "+14155550103"),
    "appointments": (0.15, "+14155550104"),
    "after-hours": (0.05, "+14155550105"),
}
NAMES = ["Maria", "James", "Aisha", "Wei", "Olga", "Tomás", "Priya", "Kwame", "Sofia", "Liam"]
DAYS_OF_WEEK = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
ITEMS = ["blue kettle", "desk lamp", "running shoes", "phone case", "coffee grinder", "backpack"]
CALLER_LINES = {
    "front-desk": [
        "Hi, what time do you open on {day}?",
        "I'd like to speak to someone about my account.",
        "Can you tell me where you're located?",
        "Is {name} in today?",
        "Do you have parking near the {day} market?",
    ],
    "orders": [
        "I'm calling about my order {num}, it hasn't arrived.",
        "Can I change the address on order {num}?",
        "I ordered a {item} last week and it came broken.",
        "Where is my {item}? The tracking hasn't moved since {day}.",
        "I want to cancel the order I placed on {day}.",
    ],
    "billing": [
        "I was charged twice for invoice {num}.",
        "Can I pay my bill over the phone?",
        "Why is my bill higher this month?",
        "I need a copy of invoice {num} for my records.",
        "My card ending in {last4} was declined.",
    ],
    "appointments": [
        "I'd like to book an appointment for {day}.",
        "Can I move my appointment with {name} to {day} afternoon?",
        "I need to cancel my appointment on {day}.",
        "Do you have anything earlier than {day}?",
        "Is {name} available {day} morning?",
    ],
    "after-hours": [
        "Is anyone there? I have an urgent problem.",
        "I'll call back tomorrow, can you take a message for {name}?",
        "What are your hours on {day}?",
        "My heating stopped working tonight.",
        "Please have {name} call me back.",
    ],
}
BOT_LINES = [
    "Sure, I can help with that.",
    "Let me look that up for you, one moment.",
    "I found order {num}: it shipped on {day} and should arrive in two days.",
    "Thanks, I've noted that for {name}.",
    "You're booked for {day} at {hour} o'clock.",
    "I'm sorry about that. I've opened a ticket, number {num}.",
    "Is there anything else I can help you with?",
    "Could you spell your last name for me?",
    "The payment of {amount} dollars went through.",
    "We're open from nine to five, Monday to {day}.",
]
CLOSINGS = ["No, that's all, thanks.", "Great, thank you. Bye.", "Okay. Goodbye.", "Thanks!"]
END_REASONS = [  # as CallEnd.reason writes them, with their share
    ("caller hung up", 0.60),
    ("caller said goodbye", 0.18),
    ("stream closed", 0.05),
    ("transferred to +14155550199", 0.06),
    ("failed: connect: timeout", 0.01),
    ("failed: connect: insufficient_quota", 0.005),
    ("failed: respond: server_error", 0.01),
    ("failed: greet: no_first_byte", 0.005),
    ("failed: stream: 31920", 0.005),
    ("runner shutting down", 0.01),
    ("pipeline ended", 0.005),
    ("max duration reached", 0.06),
]


def _number(rng: random.Random) -> str:
    return f"+1{rng.randrange(201, 990)}{rng.randrange(2000000, 9999999)}"


def _fill(line: str, rng: random.Random) -> str:
    return line.format(
        day=rng.choice(DAYS_OF_WEEK),
        name=rng.choice(NAMES),
        item=rng.choice(ITEMS),
        num=rng.randrange(10000, 99999),
        last4=rng.randrange(1000, 9999),
        hour=rng.randrange(8, 18),
        amount=rng.randrange(10, 400),
    )


def synthetic_records(count: int, now: float, seed: int = 7) -> Iterator[CallRecord]:
    """``count`` call records over the 90 days before ``now``, oldest first.

    Args:
        count: How many.
        now: The newest call's time bound (Unix time).
        seed: The random seed.

    Yields:
        Records as the runner keeps them.
    """
    rng = random.Random(seed)
    starts = sorted(now - rng.uniform(0, DAYS * DAY) for _ in range(count))
    regulars = [_number(rng) for _ in range(500)]  # a fifth of the calls come from them
    bots = list(BOTS)
    weights = [BOTS[b][0] for b in bots]
    reasons, reason_weights = zip(*END_REASONS, strict=True)
    for started in starts:
        bot = rng.choices(bots, weights)[0]
        caller = rng.choice(regulars) if rng.random() < 0.2 else _number(rng)
        outbound = rng.random() < 0.1
        duration = min(3600.0, rng.lognormvariate(4.3, 0.7))
        record = CallRecord(
            call_sid="CA" + rng.randbytes(16).hex(),
            bot=bot,
            from_number=BOTS[bot][1] if outbound else caller,
            to_number=caller if outbound else BOTS[bot][1],
            direction="outbound" if outbound else "inbound",
            model="gpt-realtime",
            started_at=started,
        )
        turns = max(2, min(40, int(duration / rng.uniform(8, 16))))
        rare_turn = 1 if rng.random() < 1 / 20000 else None  # the caller's first words
        at = started + 1.0
        latencies = []
        for i in range(turns):
            bot_turn = i % 2 == 0
            if bot_turn:
                text = _fill(rng.choice(BOT_LINES), rng) if i else "Hello, how can I help?"
                latency = max(200.0, rng.gauss(750, 220))
                if i:
                    latencies.append(latency)
                    record.turn_latencies.append({"at": at, "response_ms": round(latency, 1)})
            elif i >= turns - 2:
                text = rng.choice(CLOSINGS)
            else:
                text = _fill(rng.choice(CALLER_LINES[bot]), rng)
            if i == rare_turn:
                text += f" It sounded like a {RARE_WORD}."
            spoken = len(text) / 14
            interrupted = bot_turn and rng.random() < 0.07
            record.add_turn(
                "bot" if bot_turn else "caller",
                text,
                at=at + spoken,
                interrupted=interrupted,
                started_at=at,
            )
            if interrupted:
                record.barge_ins.append({"at": at + spoken, "heard_ms": 900.0, "item_id": None})
            at += spoken + 0.8
        record.latency = latency_summary(latencies)
        record.usage = Usage(
            input_text_tokens=rng.randrange(300, 900),
            input_audio_tokens=int(duration * 5),
            cached_text_tokens=rng.randrange(0, 600),
            cached_audio_tokens=int(duration * 3),
            output_text_tokens=turns * 20,
            output_audio_tokens=int(duration * 6),
        )
        record.cost_usd = round(duration * 0.0016, 6)
        record.cost = {"audio_in": record.cost_usd * 0.4, "audio_out": record.cost_usd * 0.6}
        record.stream_events = [
            {"event": "stream-started", "at": started + 0.4, "stream_sid": "MZ" + "0" * 32},
            {"event": "stream-stopped", "at": started + duration, "stream_sid": "MZ" + "0" * 32},
        ]
        if rng.random() < 0.3:
            record.recording = {
                "location": f"/data/recordings/2026/01/01/{record.call_sid}.wav",
                "bytes": int(duration * 32000) + 44,
                "duration_s": round(duration, 3),
                "sample_rate": 8000,
                "channels": 2,
            }
        record.finish(rng.choices(reasons, reason_weights)[0], ended_at=started + duration)
        record.webhook_delivered = rng.random() < 0.95
        yield record


def rows_of(records: Iterable[CallRecord], columns: list[str] | None) -> Iterator[dict]:
    """The rows ``CallStore.save`` writes: ``row_values`` (or only ``columns`` of it).

    Args:
        records: The records.
        columns: Only these columns (the old schema), or None for all of ``row_values``.

    Yields:
        Column name to value, ``call_sid`` included.
    """
    for record in records:
        values = row_values(record)
        if columns is not None:
            values = {name: values[name] for name in columns}
        yield {"call_sid": record.call_sid, **values}


def bulk_insert(engine: Engine, rows: Iterable[dict], columns: list[str] | None) -> int:
    """Insert rows in batches of :data:`_BATCH`, a transaction each.

    Args:
        engine: The database.
        rows: From :func:`rows_of`.
        columns: Their columns without ``call_sid`` (the old schema), or None for all.

    Returns:
        Rows inserted.
    """
    target = calls_table
    if columns is not None:
        target = table("calls", *(sa_column(name) for name in ["call_sid", *columns]))
    inserted = 0
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _BATCH:
            with engine.begin() as connection:
                connection.execute(target.insert(), batch)
            inserted += len(batch)
            batch = []
    if batch:
        with engine.begin() as connection:
            connection.execute(target.insert(), batch)
        inserted += len(batch)
    return inserted


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------


def timed(action: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall ms of ``repeat`` runs of ``action``, after one warm-up; and its result.

    Args:
        action: What to run.
        repeat: Runs timed.

    Returns:
        (median ms, the last result).
    """
    result = action()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def explain(engine: Engine, statement) -> list[str]:
    """The engine's plan of a statement (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN).

    Args:
        engine: The database.
        statement: A SQLAlchemy statement.

    Returns:
        The plan's lines.
    """
    sql = str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
            return [row[-1] for row in rows]
        return [row[0] for row in connection.exec_driver_sql("EXPLAIN " + sql).all()]


def _overview_query(since: float, until: float):
    """The statement ``queries.overview`` runs (for its plan)."""
    c = calls_table.c
    return (
        select(c.started_at, c.bot, c.end_reason, c.duration_s, c.cost_usd, c.response_ms)
        .where(c.started_at >= since, c.started_at < until)
        .order_by(c.started_at.asc())
    )


def measure(url: str, args, now: float) -> dict:
    """Fill a database at ``url``, then time the queries and the migration there.

    Args:
        url: An empty database (its ``calls`` table is made here).
        args: The options.
        now: The synthetic calls' end bound.

    Returns:
        The figures.
    """
    out: dict = {"url": make_url(url).render_as_string(hide_password=True)}
    store = CallStore(url)
    engine = create_engine(url)
    try:
        records = synthetic_records(args.records, now)
        bulk = max(0, args.records - args.saves)
        began = time.perf_counter()
        bulk_insert(engine, rows_of((next(records) for _ in range(bulk)), None), None)
        out["fill_rows_per_s"] = bulk / (time.perf_counter() - began)
        save_ms = []
        sample = None
        for record in records:
            began = time.perf_counter()
            store.save(record)
            save_ms.append((time.perf_counter() - began) * 1000)
            sample = record
        out["save_ms"] = statistics.median(save_ms) if save_ms else None
        out["saves"] = len(save_ms)
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.execute(text("ANALYZE calls"))
            with engine.connect() as connection:
                size = connection.execute(
                    text("SELECT pg_total_relation_size('calls')")
                ).scalar_one()
        else:
            with engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            database = make_url(url).database
            size = sum(
                os.path.getsize(p) for p in (database, database + "-wal") if p and os.path.exists(p)
            )
        out["db_mb"] = size / 2**20
        with engine.connect() as connection:
            out["rows"] = connection.execute(select(func.count()).select_from(calls_table)).scalar()
            regular = connection.execute(
                select(calls_table.c.from_number)
                .where(calls_table.c.direction == "inbound")
                .group_by(calls_table.c.from_number)
                .order_by(func.count().desc())
                .limit(1)
            ).scalar_one()
            some_sid = connection.execute(
                select(calls_table.c.call_sid)
                .order_by(calls_table.c.call_sid)
                .offset(out["rows"] // 2)
            ).first()[0]

        def count_all() -> int:
            with engine.connect() as connection:
                return connection.execute(text("SELECT count(*) FROM calls")).scalar_one()

        baseline, _ = timed(count_all, args.repeat)
        out["baseline_ms"] = baseline

        def read_all() -> int:  # every row's transcript read: what a scan of the table costs
            with engine.connect() as connection:
                sql = "SELECT max(length(transcript_text)) FROM calls"
                return connection.execute(text(sql)).scalar_one()

        out["full_scan_ms"], _ = timed(read_all, args.repeat)
        half = out["rows"] // 2
        searches = {
            "no filter (first page)": CallQuery(),
            "bot": CallQuery(bot="orders"),
            "since 7 days": CallQuery(since=now - 7 * DAY),
            'end reason "failed" (prefix)': CallQuery(end_reason="failed"),
            "number (a regular caller)": CallQuery(number=regular),
            f'transcript, rare word "{RARE_WORD}"': CallQuery(search=RARE_WORD),
            f'transcript, common word "{COMMON_WORD}"': CallQuery(search=COMMON_WORD),
            f"no filter, page at offset {half} (half way)": CallQuery(offset=half),
        }
        rows = []
        for label, query in searches.items():
            ms, page = timed(lambda q=query: store.search(q), args.repeat)

            def run_count(q=query) -> int:
                with engine.connect() as connection:
                    return connection.execute(q.count()).scalar_one()

            def run_page(q=query) -> int:
                with engine.connect() as connection:
                    return len(connection.execute(q.page()).all())

            count_ms, _ = timed(run_count, args.repeat)
            page_ms, _ = timed(run_page, args.repeat)
            rows.append(
                {
                    "figure": f"search: {label}",
                    "ms": ms,
                    "matched": page.total,
                    "returned": len(page.records),
                    "count_ms": count_ms,
                    "page_ms": page_ms,
                    "statements": {"count": query.count(), "page": query.page()},
                }
            )
        ms, got = timed(lambda: store.get(some_sid), args.repeat)
        rows.append(
            {
                "figure": "get one call",
                "ms": ms,
                "matched": int(got is not None),
                "returned": int(got is not None),
                "statements": {
                    "get": select(calls_table).where(calls_table.c.call_sid == some_sid)
                },
            }
        )
        for days in (7, 30, 90):
            since = now - days * DAY
            ms, summary = timed(lambda s=since: store.overview(s, now), args.repeat)
            rows.append(
                {
                    "figure": f"overview, {days} days",
                    "ms": ms,
                    "matched": summary["totals"]["calls"],
                    "returned": len(summary["days"]),
                    "statements": {"overview": _overview_query(since, now)},
                }
            )
        for row in rows:
            if row["ms"] > args.explain_ms:
                row["plans"] = {
                    name: explain(engine, statement)
                    for name, statement in row["statements"].items()
                }
            del row["statements"]
        out["queries"] = rows
        out["last_saved"] = sample.call_sid if sample is not None else None
    finally:
        engine.dispose()
        store.close()
    return out


# ------------------------------------------------------------------------------------------
# the migration from revision 0001
# ------------------------------------------------------------------------------------------

OLD_COLUMNS = ["bot", "started_at", "end_reason", "webhook_delivered", "record"]
NEW_COLUMNS = [
    "from_number",
    "to_number",
    "direction",
    "ended_at",
    "duration_s",
    "cost_usd",
    "transcript_text",
    "has_recording",
    "response_p50_ms",
    "response_ms",
]


def migration(url: str, rows: int, now: float) -> dict:
    """A database at revision 0001 with ``rows`` rows, opened (and upgraded) by ``CallStore``.

    Args:
        url: An empty database.
        rows: Rows in the old schema.
        now: The synthetic calls' end bound.

    Returns:
        Insert and upgrade rates, and how many sampled rows match ``row_values``.
    """
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0001")
        old_rows = list(rows_of(synthetic_records(rows, now, seed=11), OLD_COLUMNS))
        began = time.perf_counter()
        bulk_insert(engine, old_rows, OLD_COLUMNS)
        insert_s = time.perf_counter() - began
        del old_rows
        began = time.perf_counter()
        store = CallStore(url)
        upgrade_s = time.perf_counter() - began
        store.close()
        began = time.perf_counter()
        CallStore(url).close()
        reopen_ms = (time.perf_counter() - began) * 1000
        # Compare the filled columns of a sample with what save() would have written.
        expected = {
            r.call_sid: row_values(r)
            for i, r in enumerate(synthetic_records(rows, now, seed=11))
            if i % max(1, rows // 500) == 0
        }
        c = calls_table.c
        with engine.connect() as connection:
            found = connection.execute(
                select(c.call_sid, *(c[name] for name in NEW_COLUMNS)).where(
                    c.call_sid.in_(list(expected))
                )
            ).all()
        same = sum(
            all(_same(getattr(row, name), expected[row.call_sid][name]) for name in NEW_COLUMNS)
            for row in found
        )
    finally:
        engine.dispose()
    return {
        "rows": rows,
        "insert_rows_per_s": rows / insert_s,
        "upgrade_s": upgrade_s,
        "upgrade_rows_per_s": rows / upgrade_s,
        "reopen_ms": reopen_ms,
        "sampled": len(expected),
        "same": same,
    }


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    return a == b


# ------------------------------------------------------------------------------------------
# PostgreSQL: a schema of our own
# ------------------------------------------------------------------------------------------


class PostgresSchema:
    """A throwaway schema in the given database; its URL puts it first on the search path."""

    def __init__(self, url: str):
        """Create the schema.

        Args:
            url: A PostgreSQL database this user may create schemas in.
        """
        self.name = f"bench_{secrets.token_hex(4)}"
        self._admin = create_engine(url)
        with self._admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {self.name}"))
        self.url = (
            make_url(url)
            .update_query_dict({"options": f"-csearch_path={self.name}"})
            .render_as_string(hide_password=False)
        )

    def drop(self) -> None:
        """Drop the schema and all in it."""
        with self._admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {self.name} CASCADE"))
        self._admin.dispose()


# ------------------------------------------------------------------------------------------
# the tables
# ------------------------------------------------------------------------------------------


def _row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def print_engine(name: str, figures: dict, migrated: dict, explain_ms: float) -> None:
    """One engine's tables (Markdown), and the plans of the slow statements.

    Args:
        name: ``SQLite`` or ``PostgreSQL``.
        figures: From :func:`measure`.
        migrated: From :func:`migration`.
        explain_ms: The median ms past which plans were taken.
    """
    base = figures["baseline_ms"]
    print()
    print(
        f"{name}: {figures['rows']} records over {DAYS} days, 5 bots; database "
        f"{figures['db_mb']:.0f} MB; bulk fill {figures['fill_rows_per_s']:.0f} rows/s "
        "(making the records included); "
        f"CallStore.save into the full table, median of {figures['saves']}: "
        f"{figures['save_ms']:.2f} ms. Times: median of the runs after a warm-up."
    )
    print()
    _row("figure", "median ms", "x count(*)", "matched", "returned", "count / page ms")
    _row("---", "---:", "---:", "---:", "---:", "---:")
    _row("baseline: SELECT count(*) FROM calls", f"{base:.2f}", "1.00x", figures["rows"], "", "")
    scan = figures["full_scan_ms"]
    _row(
        "reference: a scan of the table, SELECT max(length(transcript_text))",
        f"{scan:.2f}",
        f"{scan / base:.2f}x",
        figures["rows"],
        "",
        "",
    )
    for q in figures["queries"]:
        parts = ""
        if "count_ms" in q:
            parts = f"{q['count_ms']:.2f} / {q['page_ms']:.2f}"
        _row(
            q["figure"],
            f"{q['ms']:.2f}",
            f"{q['ms'] / base:.2f}x",
            q["matched"],
            q["returned"],
            parts,
        )
    print()
    print(
        f"Migration 0001 -> head of {migrated['rows']} rows (CallStore opening the database): "
        f"{migrated['upgrade_s']:.2f} s, {migrated['upgrade_rows_per_s']:.0f} rows/s "
        f"(baseline: inserting those rows, {migrated['insert_rows_per_s']:.0f} rows/s; "
        f"upgrade / insert time "
        f"{migrated['insert_rows_per_s'] / migrated['upgrade_rows_per_s']:.2f}x); "
        f"opening it again at the head: {migrated['reopen_ms']:.0f} ms; filled columns equal "
        f"to row_values in {migrated['same']}/{migrated['sampled']} sampled rows."
    )
    slow = [q for q in figures["queries"] if q.get("plans")]
    if slow:
        print()
        print(f"Plans of the statements of the figures over {explain_ms:g} ms:")
        for q in slow:
            print()
            print(f"- {q['figure']}:")
            for statement, plan in q["plans"].items():
                print(f"  - {statement}:")
                for line in plan:
                    print(f"    - `{line}`")


def main() -> None:
    """Parse the options; run on SQLite, and PostgreSQL if given; print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the store")
    parser.add_argument(
        "--saves", type=int, default=300, help="of those, saved one by one by CallStore.save"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each query")
    parser.add_argument(
        "--migrate-rows", type=int, default=20_000, help="rows of the 0001 database"
    )
    parser.add_argument(
        "--explain-ms",
        type=float,
        default=10.0,
        help="print the plans of the queries slower than this (median ms)",
    )
    parser.add_argument("--postgres-url", help="also run on this PostgreSQL database")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    import sqlite3

    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}, {time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    now = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        print("  SQLite: filling and querying...", file=sys.stderr, flush=True)
        figures = measure(f"sqlite:///{tmp}/calls.db", args, now)
        print("  SQLite: migrating...", file=sys.stderr, flush=True)
        migrated = migration(f"sqlite:///{tmp}/old.db", args.migrate_rows, now)
        results["sqlite"] = {"queries": figures, "migration": migrated}
        print_engine("SQLite", figures, migrated, args.explain_ms)
    if args.postgres_url:
        schemas = [PostgresSchema(args.postgres_url), PostgresSchema(args.postgres_url)]
        try:
            print("  PostgreSQL: filling and querying...", file=sys.stderr, flush=True)
            figures = measure(schemas[0].url, args, now)
            print("  PostgreSQL: migrating...", file=sys.stderr, flush=True)
            migrated = migration(schemas[1].url, args.migrate_rows, now)
            results["postgresql"] = {"queries": figures, "migration": migrated}
            print_engine("PostgreSQL", figures, migrated, args.explain_ms)
        finally:
            for schema in schemas:
                schema.drop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
