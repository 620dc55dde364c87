#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Indexes for pages of calls newest first: of all calls, and of one bot.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

``(started_at, call_sid)`` serves the list's order without a sort, deep pages
included; ``(bot, started_at, call_sid)`` the same for one bot's calls (before it,
SQLite sorted all of a bot's calls to show 50: 134 ms at 25,000 calls,
benchmarks/records_query.py).
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the two indexes."""
    op.create_index("ix_calls_started_sid", "calls", ["started_at", "call_sid"])
    op.create_index("ix_calls_bot_started_sid", "calls", ["bot", "started_at", "call_sid"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_calls_bot_started_sid", table_name="calls")
    op.drop_index("ix_calls_started_sid", table_name="calls")
