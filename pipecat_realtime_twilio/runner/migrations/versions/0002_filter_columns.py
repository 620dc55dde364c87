#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Real columns for what calls are filtered and summed by, filled from the stored records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Numbers, direction, end, duration, cost, the transcript's text (lower-cased, for
search), whether the runner kept a recording, and response latency (p50 and the
samples); indexes for the filters. Rows already stored are filled from their JSON
record, 500 at a time, in call SID order. This revision derives the values itself
(as ``queries.row_values`` did when it was written), so it stays what it was when
that function changes.
"""

import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op
from loguru import logger
from sqlalchemy.dialects.mysql import LONGTEXT

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 500


def _columns() -> list[sa.Column]:
    """The new columns (new objects each time: a column belongs to one table)."""
    return [
        sa.Column("from_number", sa.String(64)),
        sa.Column("to_number", sa.String(64)),
        sa.Column("direction", sa.String(32)),
        sa.Column("ended_at", sa.Double()),
        sa.Column("duration_s", sa.Double()),
        sa.Column("cost_usd", sa.Double()),
        sa.Column("transcript_text", sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb")),
        sa.Column("has_recording", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("response_p50_ms", sa.Double()),
        sa.Column("response_ms", sa.Text()),
    ]


_INDEXED = ("from_number", "to_number", "direction", "duration_s", "cost_usd")


def upgrade() -> None:
    """Add the columns and their indexes, and fill them for the records already stored."""
    for column in _columns():
        op.add_column("calls", column)
    for name in _INDEXED:
        op.create_index(f"ix_calls_{name}", "calls", [name])
    _backfill()


def downgrade() -> None:
    """Drop the columns and their indexes."""
    for name in _INDEXED:
        op.drop_index(f"ix_calls_{name}", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        for column in _columns():
            batch.drop_column(column.name)


def _backfill() -> None:
    names = [column.name for column in _columns()]
    calls = sa.table("calls", *(sa.column(n) for n in ["call_sid", "record", *names]))
    change = (
        sa.update(calls)
        .where(calls.c.call_sid == sa.bindparam("b_call_sid"))
        .values({name: sa.bindparam(f"b_{name}") for name in names})
    )
    connection = op.get_bind()
    last: str | None = None
    filled = 0
    while True:
        query = sa.select(calls.c.call_sid, calls.c.record).order_by(calls.c.call_sid)
        if last is not None:
            query = query.where(calls.c.call_sid > last)
        rows = connection.execute(query.limit(_BATCH)).all()
        if not rows:
            break
        values = [
            {"b_call_sid": sid, **{f"b_{k}": v for k, v in found.items()}}
            for sid, found in ((row.call_sid, _values(row.call_sid, row.record)) for row in rows)
            if found is not None
        ]
        if values:
            connection.execute(change, values)
        filled += len(values)
        last = rows[-1].call_sid
    if filled:
        logger.info(f"Call records: filled the new columns of {filled} stored records")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any, length: int) -> str | None:
    return str(value)[:length] if value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _values(call_sid: str, record: str) -> dict[str, Any] | None:
    """The new columns of a stored record; None (left empty) if it cannot be read."""
    try:
        data = json.loads(record)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        latency = _dict(data.get("latency"))
        samples = [s for s in map(_finite, latency.get("response_ms") or []) if s is not None]
        turns = [t for t in data.get("transcript") or [] if isinstance(t, dict)]
        recording = _dict(data.get("recording"))
        return {
            "from_number": _text(data.get("from_number"), 64),
            "to_number": _text(data.get("to_number"), 64),
            "direction": _text(data.get("direction"), 32),
            "ended_at": _finite(data.get("ended_at")),
            "duration_s": _finite(data.get("duration_s")),
            "cost_usd": _finite(data.get("cost_usd")),
            "transcript_text": "\n".join(str(t.get("text") or "") for t in turns).lower(),
            "has_recording": bool(recording.get("location")),
            "response_p50_ms": _finite(latency.get("p50_ms")),
            "response_ms": json.dumps(samples),
        }
    except (ValueError, TypeError, AttributeError) as error:
        logger.warning(f"Call record {call_sid!r}: unreadable ({error}); its new columns are empty")
        return None
