#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The ``calls`` table as it was before migrations: indexed columns and the record as JSON.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

A database made before there were migrations has exactly this table (the store
created it with ``create_all``), and is stamped with this revision.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_INDEXED = ("bot", "started_at", "end_reason", "webhook_delivered")


def upgrade() -> None:
    """Create the ``calls`` table and its indexes."""
    op.create_table(
        "calls",
        sa.Column("call_sid", sa.String(128), primary_key=True),
        sa.Column("bot", sa.String(200), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("end_reason", sa.String(200)),
        sa.Column("webhook_delivered", sa.Boolean(), nullable=False),
        # MySQL's TEXT holds 64 KiB: too little for the transcript of a long call.
        sa.Column("record", sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb"), nullable=False),
    )
    for column in _INDEXED:
        op.create_index(f"ix_calls_{column}", "calls", [column])


def downgrade() -> None:
    """Drop the ``calls`` table."""
    op.drop_table("calls")
