#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Call records: what happened on a call, kept in a database and sent to a webhook.

- `CallRecord`: one call (who, when, how it ended, transcript, token usage and cost,
  response latency) as a dataclass that round-trips through JSON.
- `CallStore`: records in a SQL database through SQLAlchemy Core, by URL
  (``sqlite:///calls.db``, ``postgresql+psycopg://…``). Several runner processes may
  share one database: SQLite gets a busy timeout and WAL, and no SQL is specific to
  one engine. Sync methods, and ``a``-prefixed async twins that run in a thread.
- `WebhookSender`: POSTs a record as JSON, signed with HMAC-SHA256 when given a
  secret, with a timeout and bounded retries; `WebhookSender.deliver_pending` sends
  every stored record not yet delivered and marks those that arrived. Delivery is at
  least once: a receiver should deduplicate by ``call_sid``.

Example::

    store = CallStore("sqlite:///calls.db")
    await store.asave(record)
    sender = WebhookSender("https://example.com/calls", secret="s3cret")
    if await sender.deliver(record):
        await store.amark_delivered(record.call_sid)
    # later, e.g. at startup or on a timer:
    await sender.deliver_pending(store)

A receiver checks the signature over the raw body::

    hmac.compare_digest(
        request.headers["X-Call-Record-Signature"],
        hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest(),
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp
from loguru import logger
from sqlalchemy import (
    Boolean,
    Column,
    Double,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from pipecat_realtime_twilio.runner.pricing import Usage

SIGNATURE_HEADER = "X-Call-Record-Signature"
"""Header with the hex HMAC-SHA256 of the webhook body, keyed with the shared secret."""


def _json_safe(value: Any) -> Any:
    """Return ``value`` with only JSON types: non-finite floats become None, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _percentile(ordered: list[float], fraction: float) -> float:
    """Return a percentile of sorted samples, interpolating between the closest ranks."""
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(response_ms: Iterable[float]) -> dict[str, Any]:
    """Return the ``latency`` dict of a `CallRecord` from response latency samples.

    Args:
        response_ms: Milliseconds from the end of the caller's turn to the first
            audio of the answer, one per answer (non-finite samples are dropped).

    Returns:
        ``{"response_ms": [...], "p50_ms": float | None, "p90_ms": float | None}``;
        the percentiles interpolate between the closest ranks and are None without
        samples.
    """
    samples = [float(s) for s in response_ms if math.isfinite(float(s))]
    ordered = sorted(samples)
    return {
        "response_ms": samples,
        "p50_ms": _percentile(ordered, 0.5) if ordered else None,
        "p90_ms": _percentile(ordered, 0.9) if ordered else None,
    }


@dataclass
class CallRecord:
    """What happened on one call.

    Parameters:
        call_sid: Twilio's CallSid; the record's key.
        bot: Name of the bot that answered.
        from_number: Caller's number (Twilio's ``From``).
        to_number: Called number (Twilio's ``To``).
        direction: ``"inbound"`` or ``"outbound"``.
        model: Realtime model id of the call.
        started_at: Start, as a Unix timestamp in seconds.
        ended_at: End, as a Unix timestamp in seconds; None while the call lasts.
        duration_s: Length of the call in seconds.
        end_reason: Why the call ended (e.g. ``"caller_hung_up"``, ``"end_call"``).
        transcript: Turns in order, each ``{"role": "caller" | "bot", "text": str,
            "at": float (Unix timestamp), "interrupted": bool}``.
        usage: Realtime tokens used by the call.
        cost_usd: What the tokens cost, or None for a model without a price.
        latency: Response latency, as `latency_summary` returns it.
        webhook_delivered: Whether the record reached the webhook.
    """

    call_sid: str
    bot: str = ""
    from_number: str | None = None
    to_number: str | None = None
    direction: str = "inbound"
    model: str = ""
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    duration_s: float | None = None
    end_reason: str | None = None
    transcript: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    latency: dict[str, Any] = field(default_factory=lambda: latency_summary([]))
    webhook_delivered: bool = False

    def add_turn(
        self, role: str, text: str, at: float | None = None, interrupted: bool = False
    ) -> None:
        """Append a turn to the transcript.

        Args:
            role: ``"caller"`` or ``"bot"``.
            text: What was said.
            at: When, as a Unix timestamp; now if None.
            interrupted: Whether the caller cut the bot off.
        """
        self.transcript.append(
            {
                "role": role,
                "text": text,
                "at": time.time() if at is None else at,
                "interrupted": interrupted,
            }
        )

    def finish(self, end_reason: str, ended_at: float | None = None) -> None:
        """Set the end of the call: ``end_reason``, ``ended_at`` and ``duration_s``.

        Args:
            end_reason: Why the call ended.
            ended_at: When, as a Unix timestamp; now if None.
        """
        self.end_reason = end_reason
        self.ended_at = time.time() if ended_at is None else ended_at
        self.duration_s = max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a dict of JSON types (``usage`` as a dict of counts)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["usage"] = self.usage.as_dict()
        return _json_safe(data)

    def to_json(self) -> str:
        """Return the record as compact JSON text (non-finite floats become null)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        """Return the record that `to_dict` returned; unknown keys are ignored.

        Args:
            data: The record as a dict; only ``call_sid`` is required.

        Returns:
            The record.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["usage"] = Usage.from_dict(data.get("usage"))
        values["transcript"] = [dict(t) for t in data.get("transcript") or []]
        values["latency"] = dict(data.get("latency") or latency_summary([]))
        values["webhook_delivered"] = bool(data.get("webhook_delivered", False))
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> CallRecord:
        """Return the record that `to_json` returned.

        Args:
            text: JSON text of a record.

        Returns:
            The record.
        """
        return cls.from_dict(json.loads(text))


_metadata = MetaData()
calls_table = Table(
    "calls",
    _metadata,
    Column("call_sid", String(128), primary_key=True),
    Column("bot", String(200), nullable=False, index=True),
    Column("started_at", Double, nullable=False, index=True),
    Column("end_reason", String(200), index=True),
    Column("webhook_delivered", Boolean, nullable=False, index=True),
    # MySQL's TEXT holds 64 KiB: too little for the transcript of a long call.
    Column("record", Text().with_variant(LONGTEXT(), "mysql", "mariadb"), nullable=False),
)
"""The ``calls`` table: indexed columns for queries, and the whole record as JSON."""


def _create_engine(url: str, busy_timeout_s: float) -> Engine:
    """Return an engine for ``url``; SQLite waits for locks and runs in WAL mode."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
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
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return engine


class CallStore:
    """Call records in a SQL database, by SQLAlchemy URL.

    The table ``calls`` is created if missing. Every method is synchronous and
    thread-safe; the ``a``-prefixed methods run them in a worker thread for use on
    the event loop. Several processes may share one database.

    Example::

        store = CallStore("sqlite:///calls.db")
        store.save(record)
        store.get(record.call_sid)
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0):
        """Connect to the database and create the ``calls`` table if missing.

        Args:
            url: SQLAlchemy database URL, e.g. ``sqlite:///calls.db`` or
                ``postgresql+psycopg://user:pass@host/db`` (its driver must be installed).
            busy_timeout_s: How long SQLite waits for another process's write lock.
        """
        self.url = url
        self._engine = _create_engine(url, busy_timeout_s)
        self._create_table()

    def _create_table(self) -> None:
        try:
            _metadata.create_all(self._engine, checkfirst=True)
        except SQLAlchemyError:
            # Another process may have created it between the check and the CREATE.
            if not inspect(self._engine).has_table(calls_table.name):
                raise

    @staticmethod
    def _values(record: CallRecord) -> dict[str, Any]:
        # The indexed columns are cut to their length; the JSON keeps every character.
        return {
            "bot": (record.bot or "")[:200],
            "started_at": float(record.started_at),
            "end_reason": record.end_reason[:200] if record.end_reason else record.end_reason,
            "webhook_delivered": bool(record.webhook_delivered),
            "record": record.to_json(),
        }

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
        values = self._values(record)
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

    def get(self, call_sid: str) -> CallRecord | None:
        """Return the record of a call.

        Args:
            call_sid: The call's CallSid.

        Returns:
            The record, or None if none is stored (or it cannot be read).
        """
        query = select(calls_table).where(calls_table.c.call_sid == call_sid)
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return self._record(row) if row is not None else None

    def list(self, limit: int = 50, offset: int = 0) -> list[CallRecord]:
        """Return records, newest first (by ``started_at``).

        Args:
            limit: At most this many.
            offset: Skip this many newest ones first.

        Returns:
            The records.
        """
        query = (
            select(calls_table)
            .order_by(calls_table.c.started_at.desc(), calls_table.c.call_sid.desc())
            .limit(limit)
            .offset(offset)
        )
        return self._records(query)

    def undelivered(self, limit: int = 100) -> list[CallRecord]:
        """Return records not yet delivered to the webhook, oldest first.

        Args:
            limit: At most this many.

        Returns:
            The records.
        """
        query = (
            select(calls_table)
            .where(calls_table.c.webhook_delivered.is_(False))
            .order_by(calls_table.c.started_at.asc(), calls_table.c.call_sid.asc())
            .limit(limit)
        )
        return self._records(query)

    def _records(self, query: Any) -> list[CallRecord]:
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [r for r in (self._record(row) for row in rows) if r is not None]

    def mark_delivered(self, call_sid: str) -> bool:
        """Flag a record as delivered to the webhook; the record itself is unchanged.

        Args:
            call_sid: The call's CallSid.

        Returns:
            Whether a record was stored for the call.
        """
        query = (
            update(calls_table)
            .where(calls_table.c.call_sid == call_sid)
            .values(webhook_delivered=True)
        )
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

    async def aget(self, call_sid: str) -> CallRecord | None:
        """`get` in a worker thread.

        Args:
            call_sid: The call's CallSid.

        Returns:
            The record, or None.
        """
        return await asyncio.to_thread(self.get, call_sid)

    async def alist(self, limit: int = 50, offset: int = 0) -> list[CallRecord]:
        """`list` in a worker thread.

        Args:
            limit: At most this many.
            offset: Skip this many newest ones first.

        Returns:
            The records, newest first.
        """
        return await asyncio.to_thread(self.list, limit, offset)

    async def aundelivered(self, limit: int = 100) -> list[CallRecord]:
        """`undelivered` in a worker thread.

        Args:
            limit: At most this many.

        Returns:
            The undelivered records, oldest first.
        """
        return await asyncio.to_thread(self.undelivered, limit)

    async def amark_delivered(self, call_sid: str) -> bool:
        """`mark_delivered` in a worker thread.

        Args:
            call_sid: The call's CallSid.

        Returns:
            Whether a record was stored for the call.
        """
        return await asyncio.to_thread(self.mark_delivered, call_sid)

    def __enter__(self) -> CallStore:
        """Return the store."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the store."""
        self.close()


def sign_body(body: bytes, secret: str | bytes) -> str:
    """Return the webhook signature of a body: hex HMAC-SHA256 keyed with ``secret``.

    Args:
        body: The raw request body.
        secret: The shared secret (a str is UTF-8 encoded).

    Returns:
        The lowercase hex digest sent in ``X-Call-Record-Signature``.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str | bytes, signature: str | None) -> bool:
    """Return whether ``signature`` is the signature of ``body`` (in constant time).

    Args:
        body: The raw request body as received.
        secret: The shared secret.
        signature: The ``X-Call-Record-Signature`` header, or None if absent.

    Returns:
        True if it matches.
    """
    if not signature:
        return False
    return hmac.compare_digest(sign_body(body, secret), signature.strip().lower())


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # the receiver refused this record (4xx, 3xx): others may pass
    UNREACHABLE = "unreachable"  # no answer, timeouts or 5xx after every attempt


class WebhookSender:
    """POSTs call records as JSON to a webhook URL.

    Each request has a timeout. A connection error, a timeout, 408, 429 or 5xx is
    retried, up to ``attempts`` tries in all, after ``first_delay_s``, then twice as
    long each time up to ``max_delay_s``. Other answers are final: 2xx delivered,
    anything else (redirects included, which are not followed) failed. Failures are
    logged and never raise.

    Headers: ``Content-Type: application/json`` and, with a secret,
    ``X-Call-Record-Signature``: hex HMAC-SHA256 of the raw body (`sign_body`).
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None = None,
        timeout_s: float = 10.0,
        attempts: int = 3,
        first_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ):
        """Initialize the sender.

        Args:
            url: The webhook URL.
            secret: Shared secret to sign bodies with; None sends no signature.
            timeout_s: Timeout of each request, connecting included.
            attempts: Tries per record, at least 1.
            first_delay_s: Wait before the first retry.
            max_delay_s: Longest wait between tries.
            session: An aiohttp session to use (and leave open); by default each
                `deliver` or `deliver_pending` opens and closes its own.
        """
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if timeout_s <= 0 or first_delay_s < 0 or max_delay_s < 0:
            raise ValueError("timeout_s must be positive and the delays not negative")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._session = session

    def retry_delay(self, retry: int) -> float:
        """Return the wait before a retry.

        Args:
            retry: 1 for the first retry, 2 for the second, ...

        Returns:
            ``min(max_delay_s, first_delay_s * 2 ** (retry - 1))`` seconds.
        """
        return min(self.max_delay_s, self.first_delay_s * 2 ** (retry - 1))

    @contextlib.asynccontextmanager
    async def _session_scope(self) -> AsyncIterator[aiohttp.ClientSession]:
        if self._session is not None:
            yield self._session
            return
        async with aiohttp.ClientSession() as session:
            yield session

    async def deliver(self, record: CallRecord) -> bool:
        """Send one record, retrying as configured.

        The store is not touched: mark the record delivered if this returns True.

        Args:
            record: The record.

        Returns:
            True if the receiver answered 2xx.
        """
        async with self._session_scope() as session:
            return await self._deliver(session, record) is _Outcome.DELIVERED

    async def deliver_pending(self, store: CallStore, limit: int = 100) -> int:
        """Send the store's undelivered records, oldest first, and mark those that arrive.

        A record that fails stays undelivered in the store, unchanged, for a later
        call. When the receiver cannot be reached (after every attempt) the rest of
        the batch waits for a later call too; a record the receiver refuses (4xx)
        does not stop the others.

        Args:
            store: The store.
            limit: At most this many records per call.

        Returns:
            How many records were delivered and marked.
        """
        delivered = 0
        records = await store.aundelivered(limit)
        if not records:
            return 0
        async with self._session_scope() as session:
            for record in records:
                outcome = await self._deliver(session, record)
                if outcome is _Outcome.UNREACHABLE:
                    break
                if outcome is not _Outcome.DELIVERED:
                    continue
                try:
                    await store.amark_delivered(record.call_sid)
                    delivered += 1
                except Exception:
                    # It will be sent again: the receiver should deduplicate by call_sid.
                    logger.exception(f"Could not mark call record {record.call_sid} delivered")
        return delivered

    async def _deliver(self, session: aiohttp.ClientSession, record: CallRecord) -> _Outcome:
        body = record.to_json().encode()
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign_body(body, self.secret)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        for attempt in range(1, self.attempts + 1):
            try:
                async with session.post(
                    self.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    status = response.status
                if 200 <= status < 300:
                    return _Outcome.DELIVERED
                retry = status >= 500 or status in (408, 429)
                problem = f"HTTP {status}"
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                retry, problem = True, f"no answer within {self.timeout_s:g} s"
            except Exception as error:  # aiohttp.ClientError, a bad URL, ...
                retry, problem = True, f"{type(error).__name__}: {error}"
            if not retry:
                logger.warning(
                    f"Webhook refused call record {record.call_sid} ({problem}); not retried"
                )
                return _Outcome.REJECTED
            if attempt == self.attempts:
                logger.warning(
                    f"Webhook delivery of call record {record.call_sid} failed after "
                    f"{self.attempts} attempt(s): {problem}"
                )
                return _Outcome.UNREACHABLE
            delay = self.retry_delay(attempt)
            logger.info(
                f"Webhook delivery of call record {record.call_sid} failed ({problem}); "
                f"retrying in {delay:g} s"
            )
            await asyncio.sleep(delay)
        return _Outcome.UNREACHABLE  # not reached: attempts >= 1
