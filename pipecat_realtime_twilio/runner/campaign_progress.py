#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Reading campaigns: their progress (counts by state and outcome) and their numbers.

:class:`CampaignReads` is the read side of
:class:`~pipecat_realtime_twilio.runner.campaign_store.CampaignStore`, for the API, the
console and the CLI.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, func, select

from pipecat_realtime_twilio.runner.campaign_tables import campaigns_table, numbers_table


class CampaignReads:
    """Campaigns and numbers as the API shows them (the store's engine)."""

    _engine: Engine

    def campaigns(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Campaigns, newest first, each with its progress.

        Args:
            limit: At most this many.
            offset: Skip this many newest first.
        """
        query = (
            select(campaigns_table)
            .order_by(campaigns_table.c.created_at.desc(), campaigns_table.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
            return [self._summary(connection, row) for row in rows]

    def count(self) -> int:
        """How many campaigns there are."""
        with self._engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(campaigns_table)).scalar_one()
            )

    def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        """One campaign with its progress; None if there is no such campaign.

        Args:
            campaign_id: The campaign.
        """
        query = select(campaigns_table).where(campaigns_table.c.id == campaign_id)
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
            return self._summary(connection, row) if row is not None else None

    def numbers(self, campaign_id: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """A campaign's numbers in their CSV order.

        Args:
            campaign_id: The campaign.
            limit: At most this many.
            offset: Skip this many first.
        """
        query = (
            select(numbers_table)
            .where(numbers_table.c.campaign_id == campaign_id)
            .order_by(numbers_table.c.line, numbers_table.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self._engine.connect() as connection:
            return [_number_dict(row) for row in connection.execute(query)]

    def _summary(self, connection: Connection, row: Any) -> dict[str, Any]:
        c = numbers_table.c
        by = select(c.state, c.outcome, func.count()).where(c.campaign_id == row.id)
        states: dict[str, int] = {}
        outcomes: dict[str, int] = {}
        for state, outcome, n in connection.execute(by.group_by(c.state, c.outcome)):
            states[state] = states.get(state, 0) + n
            if outcome is not None:
                outcomes[outcome] = outcomes.get(outcome, 0) + n
        return {
            "id": row.id,
            "name": row.name,
            "bot": row.bot,
            "from": row.from_number,
            "rate_per_minute": row.rate_per_minute,
            "calling_hours": row.calling_hours,
            "max_attempts": row.max_attempts,
            "retry_secs": row.retry_secs,
            "ring_secs": row.ring_secs,
            "status": row.status,
            "created_at": row.created_at,
            "finished_at": row.finished_at,
            "total": sum(states.values()),
            "done": states.get("done", 0),
            "states": states,
            "outcomes": outcomes,
        }


def _number_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "line": row.line,
        "number": row.number,
        "timezones": [z for z in row.timezones.split(",") if z],
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "call_sid": row.call_sid,
        "last_status": row.last_status,
        "answered_by": row.answered_by,
        "voicemail_left": bool(row.voicemail_left),
        "outcome": row.outcome,
        "detail": row.detail,
        "claimed_by": row.claimed_by,
        "updated_at": row.updated_at,
    }
