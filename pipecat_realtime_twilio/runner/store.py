#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Call records in a SQL database through SQLAlchemy Core, by URL.

``sqlite:///calls.db`` by default, or any engine SQLAlchemy reaches with a
synchronous driver (``postgresql+psycopg://…``, installed by the ``postgres`` extra).
Several runner processes may share one database: SQLite gets a busy timeout and
WAL, and no SQL is specific to one engine. Sync methods, and ``a``-prefixed async
twins that run in a thread.

The schema is migrated in place when a store opens
(:mod:`~pipecat_realtime_twilio.runner.migrations`, Alembic): the whole record as
JSON, and real columns for what calls are filtered and summed by
(:mod:`~pipecat_realtime_twilio.runner.queries`: ``search`` and ``overview``).

A URL that cannot be used (malformed, an asyncio or missing driver, a database
that cannot be reached or whose schema a newer version upgraded) raises
`StoreError` when the store opens, with one line naming ``DATABASE_URL``; errors
after that are SQLAlchemy's (`describe_error` makes one line of them).

Example::

    store = CallStore("sqlite:///calls.db")
    await store.asave(record)
    await store.aget(record.call_sid)
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.runner.migrations import SchemaTooNew, upgrade
from pipecat_realtime_twilio.runner.queries import (
    CallPage,
    CallQuery,
    calls_table,
    newest_first,
    overview,
    row_values,
    undelivered_first,
)
from pipecat_realtime_twilio.runner.records import CallRecord

POSTGRES_HINT = (
    "for PostgreSQL: pip install 'pipecat-realtime-twilio[postgres]' "
    "and use postgresql+psycopg://user:password@host/database"
)
"""How to get the PostgreSQL driver, for messages about a missing one."""

_CONNECT_TIMEOUT_S = 10
"""Seconds a PostgreSQL connection attempt may take (libpq's ``connect_timeout``)."""


class StoreError(SettingsError):
    """``DATABASE_URL`` cannot be used: malformed, its driver missing, or unreachable.

    A `SettingsError`, so the command line reports it in one line (exit 2).
    """


def describe_error(error: BaseException) -> str:
    """Return one line about a database error: the driver's own message.

    SQLAlchemy's messages span lines (the SQL, a link); the driver's error
    (``error.orig``) says what went wrong, e.g. ``database is locked``.

    Args:
        error: The error, from SQLAlchemy or a driver.

    Returns:
        The message on one line.
    """
    orig = getattr(error, "orig", None)
    text = " ".join(str(orig if orig is not None else error).split())
    return text or type(error).__name__


def _check_url(url: str) -> URL:
    """Parse ``url`` and check that its driver is installed and synchronous.

    Raises:
        StoreError: Naming ``DATABASE_URL`` and what is wrong.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            "DATABASE_URL: not a database URL; SQLAlchemy's form is "
            "dialect+driver://user:password@host/database, e.g. sqlite:///calls.db"
        ) from None
    name = parsed.drivername
    hint = POSTGRES_HINT if parsed.get_backend_name() == "postgresql" else ""
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise StoreError(
            f"DATABASE_URL: SQLAlchemy knows no database or driver {name!r}"
            + (f"; {hint}" if hint else "")
        ) from None
    if dialect.is_async:
        raise StoreError(
            f"DATABASE_URL: {name} is an asyncio driver; call records need a synchronous "
            "one, e.g. sqlite:///calls.db or postgresql+psycopg://…"
        )
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise StoreError(
            f"DATABASE_URL: the driver of {name} is not installed ({error}); "
            + (hint or f"install the Python package SQLAlchemy's {name} dialect uses")
        ) from None
    return parsed


def _create_engine(parsed: URL, busy_timeout_s: float) -> Engine:
    """Return an engine for ``parsed``; SQLite waits for locks and runs in WAL mode."""
    if parsed.get_backend_name() != "sqlite":
        libpq = parsed.get_driver_name() in ("psycopg", "psycopg2")
        if libpq and "connect_timeout" not in parsed.query:
            # libpq waits for a host that does not answer as long as TCP does (minutes).
            parsed = parsed.update_query_dict({"connect_timeout": str(_CONNECT_TIMEOUT_S)})
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    connect_args: dict[str, Any] = {"timeout": busy_timeout_s}
    options: dict[str, Any] = {}
    if in_memory:
        # One shared connection, or every thread (asyncio.to_thread) sees its own database.
        connect_args["check_same_thread"] = False
        options["poolclass"] = StaticPool
    elif not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args=connect_args, **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not in_memory:
                # Readers and a writer at once, across processes.
                _use_wal(cursor, busy_timeout_s)
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return engine


def _use_wal(cursor: sqlite3.Cursor, timeout_s: float) -> None:
    """Switch a SQLite file to WAL, waiting out another process doing the same.

    Switching takes an exclusive lock and SQLite does not wait for it (its busy
    timeout does not apply), so two processes opening a new file at once could
    see ``database is locked``; retry until ``timeout_s`` instead.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class CallStore:
    """Call records in a SQL database, by SQLAlchemy URL.

    The schema is brought to the newest revision when the store opens (a new
    database gets the table, an older one is upgraded in place). Every method is synchronous and
    thread-safe; the ``a``-prefixed methods run them in a worker thread for use on
    the event loop. Several processes may share one database.

    Example::

        store = CallStore("sqlite:///calls.db")
        store.save(record)
        store.get(record.call_sid)
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0):
        """Connect to the database and bring its schema to the newest revision.

        Args:
            url: SQLAlchemy database URL, e.g. ``sqlite:///calls.db`` or
                ``postgresql+psycopg://user:pass@host/db`` (its driver must be installed).
            busy_timeout_s: How long SQLite waits for another process's write lock.

        Raises:
            StoreError: If the URL is malformed, its driver is missing or works with
                asyncio only, the database cannot be opened or upgraded, or its schema
                is newer than this version knows; the message names ``DATABASE_URL``.
        """
        self.url = url
        parsed = _check_url(url)
        where = parsed.render_as_string(hide_password=True)
        try:
            self._engine = _create_engine(parsed, busy_timeout_s)
        except OSError as error:  # the folder of a SQLite file
            raise StoreError(
                f"DATABASE_URL: cannot create the folder of {where}: {error.strerror or error}"
            ) from error
        try:
            upgrade(self._engine)
        except SchemaTooNew as error:
            self._engine.dispose()
            raise StoreError(f"DATABASE_URL: {where}: {error}") from error
        except (SQLAlchemyError, sqlite3.Error) as error:
            self._engine.dispose()
            raise StoreError(
                f"DATABASE_URL: cannot open the database {where}: {describe_error(error)}"
            ) from error

    @property
    def engine(self) -> Engine:
        """The database's engine (the campaigns' tables share it)."""
        return self._engine

    @staticmethod
    def _record(row: Any) -> CallRecord | None:
        try:
            record = CallRecord.from_json(row.record)
        except (ValueError, TypeError) as error:
            logger.error(f"Unreadable call record {row.call_sid!r} in the store: {error}")
            return None
        record.webhook_delivered = bool(row.webhook_delivered)
        return record

    def save(self, record: CallRecord) -> None:
        """Insert the record, or replace the stored one with the same ``call_sid``.

        The stored delivered flag becomes ``record.webhook_delivered``.

        Args:
            record: The record.
        """
        values = row_values(record)
        where = calls_table.c.call_sid == record.call_sid
        for attempt in range(2):
            try:
                with self._engine.begin() as connection:
                    result = connection.execute(update(calls_table).where(where).values(values))
                    if result.rowcount == 0:
                        connection.execute(
                            calls_table.insert().values(call_sid=record.call_sid, **values)
                        )
                return
            except IntegrityError:
                # Another process inserted the same call between our UPDATE and INSERT.
                if attempt:
                    raise

    def save_if(self, record: CallRecord, revision: int) -> bool:
        """Replace the call's stored record only if it is still ``revision``, as read.

        Args:
            record: The changed record.
            revision: The stored revision the change was made from.

        Returns:
            Whether it was replaced (False: none stored, or another change came first).
        """
        row = self._row(record.call_sid)
        stored = self._record(row) if row is not None else None
        if stored is None or stored.revision != revision:
            return False
        unchanged = (calls_table.c.call_sid == record.call_sid) & (
            calls_table.c.record == row.record
        )
        query = update(calls_table).where(unchanged).values(row_values(record))
        with self._engine.begin() as connection:
            return connection.execute(query).rowcount > 0

    def get(self, call_sid: str) -> CallRecord | None:
        """Return the record of a call.

        Args:
            call_sid: The call's CallSid.

        Returns:
            The record, or None if none is stored (or it cannot be read).
        """
        row = self._row(call_sid)
        return self._record(row) if row is not None else None

    def _row(self, call_sid: str) -> Any:
        query = select(calls_table).where(calls_table.c.call_sid == call_sid)
        with self._engine.connect() as connection:
            return connection.execute(query).first()

    def list(self, limit: int = 50, offset: int = 0) -> builtins.list[CallRecord]:
        """Return records, newest first (by ``started_at``).

        Args:
            limit: At most this many.
            offset: Skip this many newest ones first.

        Returns:
            The records.
        """
        return self._records(newest_first(limit, offset))

    def undelivered(self, limit: int = 100) -> builtins.list[CallRecord]:
        """Return records not yet delivered to the webhook, oldest first.

        Args:
            limit: At most this many.

        Returns:
            The records.
        """
        return self._records(undelivered_first(limit))

    def search(self, query: CallQuery) -> CallPage:
        """Return a page of the records the query matches, newest first, and their count.

        Args:
            query: The filters and the page.

        Returns:
            The page.
        """
        with self._engine.connect() as connection:
            total = int(connection.execute(query.count()).scalar_one())
        records = self._records(query.page()) if total > query.offset else []
        return CallPage(records=records, total=total)

    def overview(self, since: float, until: float) -> dict[str, Any]:
        """Sum the calls that started in ``[since, until)`` per UTC day, bot and end.

        See :func:`~pipecat_realtime_twilio.runner.queries.overview`.

        Args:
            since: Start of the range, Unix time (inclusive).
            until: End of the range, Unix time (exclusive).

        Returns:
            ``{"days", "by_bot", "end_reasons", "totals"}``, JSON-ready.

        Raises:
            ValueError: ``until`` not after ``since``, or a range over 400 days.
        """
        with self._engine.connect() as connection:
            return overview(connection, since, until)

    def _records(self, query: Any) -> builtins.list[CallRecord]:
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [r for r in (self._record(row) for row in rows) if r is not None]

    def mark_delivered(self, call_sid: str, revision: int | None = None) -> bool:
        """Flag a record as delivered to the webhook; the record itself is unchanged.

        Args:
            call_sid: The call's CallSid.
            revision: Only if the stored record is this revision of the call's record
                (a record stored again meanwhile, amended, is still to be delivered).

        Returns:
            Whether a record was stored for the call (of that revision) and flagged.
        """
        where = calls_table.c.call_sid == call_sid
        if revision is not None:
            row = self._row(call_sid)
            stored = self._record(row) if row is not None else None
            if stored is None or stored.revision != revision:
                return False
            where = where & (calls_table.c.record == row.record)  # unchanged since read
        query = update(calls_table).where(where).values(webhook_delivered=True)
        with self._engine.begin() as connection:
            return connection.execute(query).rowcount > 0

    def close(self) -> None:
        """Close the database connections."""
        self._engine.dispose()

    async def asave(self, record: CallRecord) -> None:
        """`save` in a worker thread.

        Args:
            record: The record.
        """
        await asyncio.to_thread(self.save, record)

    async def asave_if(self, record: CallRecord, revision: int) -> bool:
        """`save_if` in a worker thread.

        Args:
            record: The changed record.
            revision: The stored revision the change was made from.

        Returns:
            Whether it was replaced.
        """
        return await asyncio.to_thread(self.save_if, record, revision)

    async def aget(self, call_sid: str) -> CallRecord | None:
        """`get` in a worker thread.

        Args:
            call_sid: The call's CallSid.

        Returns:
            The record, or None.
        """
        return await asyncio.to_thread(self.get, call_sid)

    async def alist(self, limit: int = 50, offset: int = 0) -> builtins.list[CallRecord]:
        """`list` in a worker thread.

        Args:
            limit: At most this many.
            offset: Skip this many newest ones first.

        Returns:
            The records, newest first.
        """
        return await asyncio.to_thread(self.list, limit, offset)

    async def aundelivered(self, limit: int = 100) -> builtins.list[CallRecord]:
        """`undelivered` in a worker thread.

        Args:
            limit: At most this many.

        Returns:
            The undelivered records, oldest first.
        """
        return await asyncio.to_thread(self.undelivered, limit)

    async def asearch(self, query: CallQuery) -> CallPage:
        """`search` in a worker thread.

        Args:
            query: The filters and the page.

        Returns:
            The page.
        """
        return await asyncio.to_thread(self.search, query)

    async def aoverview(self, since: float, until: float) -> dict[str, Any]:
        """`overview` in a worker thread.

        Args:
            since: Start of the range, Unix time (inclusive).
            until: End of the range, Unix time (exclusive).

        Returns:
            ``{"days", "by_bot", "end_reasons", "totals"}``, JSON-ready.
        """
        return await asyncio.to_thread(self.overview, since, until)

    async def amark_delivered(self, call_sid: str, revision: int | None = None) -> bool:
        """`mark_delivered` in a worker thread.

        Args:
            call_sid: The call's CallSid.
            revision: Only if the stored record is this revision.

        Returns:
            Whether a record was stored for the call (of that revision) and flagged.
        """
        return await asyncio.to_thread(self.mark_delivered, call_sid, revision)

    def __enter__(self) -> CallStore:
        """Return the store."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the store."""
        self.close()
