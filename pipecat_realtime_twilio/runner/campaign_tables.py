#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The campaigns' tables as revision 0004 leaves them, on the schema's one ``MetaData``.

``campaigns``: a campaign's settings, its status (running, paused, canceled, done) and
``next_dial_at``, the pace every instance's dialer keeps. ``campaign_numbers``: each of
its numbers, with its state (pending, dialing, done), tries, the current or last call,
and its one outcome.
"""

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from pipecat_realtime_twilio.runner.queries import metadata

campaigns_table = Table(
    "campaigns",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("bot", String(200), nullable=False),
    Column("from_number", String(64), nullable=False),
    Column("rate_per_minute", Double, nullable=False),
    Column("calling_hours", String(16), nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("retry_secs", Double, nullable=False),
    Column("ring_secs", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("next_dial_at", Double, nullable=False),
    Column("finished_at", Double),
    Index("ix_campaigns_status_next", "status", "next_dial_at"),
    Index("ix_campaigns_created", "created_at"),
)

numbers_table = Table(
    "campaign_numbers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "campaign_id", String(32), ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False
    ),
    Column("line", Integer, nullable=False),
    Column("number", String(64), nullable=False),
    Column("timezones", String(1000), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Double),
    Column("call_sid", String(64)),
    Column("last_status", String(32)),
    Column("last_sequence", Integer, nullable=False),
    Column("answered_at", Double),
    Column("answered_by", String(32)),
    Column("voicemail_left", Boolean, nullable=False),
    Column("outcome", String(16)),
    Column("detail", String(200)),
    Column("claimed_by", String(200)),
    Column("claimed_at", Double),
    Column("updated_at", Double, nullable=False),
    UniqueConstraint("campaign_id", "number", name="uq_campaign_numbers_number"),
    Index("ix_campaign_numbers_due", "campaign_id", "state", "next_attempt_at"),
    Index("ix_campaign_numbers_call_sid", "call_sid"),
    Index("ix_campaign_numbers_line", "campaign_id", "line"),
)
