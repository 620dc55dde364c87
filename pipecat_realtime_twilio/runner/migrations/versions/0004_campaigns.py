#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Outbound campaigns: the ``campaigns`` and ``campaign_numbers`` tables, the shared queue.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

A campaign's settings, status and the pace it holds across instances (``next_dial_at``);
each of its numbers with its state (pending, dialing, done), tries, the current call and
its one outcome. Every instance's dialer claims numbers from here
(:mod:`~pipecat_realtime_twilio.runner.campaign_store`).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the two tables and their indexes."""
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("bot", sa.String(200), nullable=False),
        sa.Column("from_number", sa.String(64), nullable=False),
        sa.Column("rate_per_minute", sa.Double(), nullable=False),
        sa.Column("calling_hours", sa.String(16), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_secs", sa.Double(), nullable=False),
        sa.Column("ring_secs", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("next_dial_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double()),
    )
    op.create_index("ix_campaigns_status_next", "campaigns", ["status", "next_dial_at"])
    op.create_index("ix_campaigns_created", "campaigns", ["created_at"])
    op.create_table(
        "campaign_numbers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "campaign_id",
            sa.String(32),
            sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("timezones", sa.String(1000), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double()),
        sa.Column("call_sid", sa.String(64)),
        sa.Column("last_status", sa.String(32)),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.Column("answered_at", sa.Double()),
        sa.Column("answered_by", sa.String(32)),
        sa.Column("voicemail_left", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("detail", sa.String(200)),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("claimed_at", sa.Double()),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("campaign_id", "number", name="uq_campaign_numbers_number"),
    )
    op.create_index(
        "ix_campaign_numbers_due", "campaign_numbers", ["campaign_id", "state", "next_attempt_at"]
    )
    op.create_index("ix_campaign_numbers_call_sid", "campaign_numbers", ["call_sid"])
    op.create_index("ix_campaign_numbers_line", "campaign_numbers", ["campaign_id", "line"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("campaign_numbers")
    op.drop_table("campaigns")
