#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Outbound campaigns in the call records' database: the queue every instance dials from.

The queue lives in ``DATABASE_URL`` (the same engine and migrations as the call records)
rather than in Redis: the records and the outcomes are in one place and change together,
it survives a Redis flush or restart, and the console's progress is one SQL query.

Several instances claim numbers at once. A claim (:meth:`CampaignStore.claim`) is one
transaction that locks a due campaign's row (PostgreSQL: ``SELECT ... FOR UPDATE SKIP
LOCKED``, so another instance passes over it; SQLite: ``BEGIN IMMEDIATE``, one writer),
takes its first due number inside its calling hours, and moves the campaign's
``next_dial_at`` on by ``60 / rate_per_minute`` seconds: together the instances never
place more than the rate. A number's calls then report back (:meth:`progress`,
:meth:`amd`, :meth:`finish`), each checked against the number's current call and the
callbacks' ``SequenceNumber``, so repeats and late or out-of-order callbacks change
nothing. Every number ends with exactly one outcome (:data:`OUTCOMES`).

Times are Unix seconds (``time.time()``): instances share them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from pipecat_realtime_twilio.runner.calling_hours import CallingHours
from pipecat_realtime_twilio.runner.campaign_csv import CampaignNumbers
from pipecat_realtime_twilio.runner.campaign_model import (
    AMD_WAIT_SECS,
    FINAL_STATUSES,
    HUMAN,
    OUTCOMES,
    RETRIED,
    CampaignSpec,
    Claim,
    ClaimResult,
    answered_outcome,
    number_row,
)
from pipecat_realtime_twilio.runner.campaign_progress import CampaignReads
from pipecat_realtime_twilio.runner.campaign_tables import campaigns_table, numbers_table

_SCAN = 20  # numbers looked at per campaign and claim

__all__ = [
    "AMD_WAIT_SECS",
    "FINAL_STATUSES",
    "HUMAN",
    "OUTCOMES",
    "CampaignSpec",
    "CampaignStore",
    "Claim",
    "ClaimResult",
]


class CampaignStore(CampaignReads):
    """Campaigns and their numbers, on the call store's engine.

    Every method is synchronous; the ``a``-prefixed ones run it in a worker thread.
    """

    def __init__(self, engine: Engine):
        """Use ``engine`` (its schema migrated by ``CallStore``).

        Args:
            engine: The database's engine.
        """
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction that may read, then write: SQLite's write lock taken at once."""
        with self._engine.connect() as connection:
            if self._engine.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    def _locked(self, query: Any) -> Any:
        return query.with_for_update(skip_locked=True) if self._postgres else query

    #
    # campaigns
    #

    def create(self, spec: CampaignSpec, numbers: CampaignNumbers, now: float) -> str:
        """Store a new running campaign and its numbers (invalid ones done at once).

        Args:
            spec: Its settings.
            numbers: Its numbers.
            now: Unix time.

        Returns:
            The campaign's id.
        """
        campaign_id = "cmp_" + secrets.token_hex(8)
        rows = [
            number_row(campaign_id, e.line, e.number, ",".join(e.timezones), now)
            for e in numbers.valid
        ] + [
            {
                **number_row(campaign_id, e.line, e.number, "", now),
                "state": "done",
                "outcome": "invalid",
                "detail": (e.problem or "")[:200],
            }
            for e in numbers.invalid
        ]
        with self._write() as connection:
            connection.execute(
                campaigns_table.insert().values(
                    id=campaign_id,
                    name=spec.name,
                    bot=spec.bot,
                    from_number=spec.from_number,
                    rate_per_minute=spec.rate_per_minute,
                    calling_hours=spec.calling_hours,
                    max_attempts=spec.max_attempts,
                    retry_secs=spec.retry_secs,
                    ring_secs=spec.ring_secs,
                    status="running" if numbers.valid else "done",
                    created_at=now,
                    next_dial_at=now,
                    finished_at=None if numbers.valid else now,
                )
            )
            if rows:
                connection.execute(numbers_table.insert(), rows)
        return campaign_id

    def cancel(self, campaign_id: str, now: float) -> int | None:
        """Cancel a campaign: its pending numbers end ``canceled``; calls under way finish.

        Args:
            campaign_id: The campaign.
            now: Unix time.

        Returns:
            How many numbers were canceled; None if there is no such campaign.
        """
        with self._write() as connection:
            campaign = connection.execute(
                select(campaigns_table.c.status).where(campaigns_table.c.id == campaign_id)
            ).first()
            if campaign is None:
                return None
            canceled = connection.execute(
                update(numbers_table)
                .where(numbers_table.c.campaign_id == campaign_id)
                .where(numbers_table.c.state == "pending")
                .values(state="done", outcome="canceled", updated_at=now)
            ).rowcount
            if campaign.status in ("running", "paused"):
                connection.execute(
                    update(campaigns_table)
                    .where(campaigns_table.c.id == campaign_id)
                    .values(status="canceled", finished_at=now)
                )
            return int(canceled)

    def claim(self, instance: str, now: float) -> ClaimResult:
        """Take the next due number of a running campaign, keeping the campaign's pace.

        Args:
            instance: This instance's id (kept on the number).
            now: Unix time.

        Returns:
            The claim, if a number was due, and how long to wait before the next try.
        """
        outcomes: list[str] = []
        wait = 1.0
        cc, nc = campaigns_table.c, numbers_table.c
        with self._write() as connection:
            due = self._locked(
                select(campaigns_table)
                .where(cc.status == "running")
                .order_by(cc.next_dial_at)
                .limit(10)
            )
            for campaign in connection.execute(due).all():
                if campaign.next_dial_at > now:
                    wait = min(wait, campaign.next_dial_at - now)
                    continue
                hours = CallingHours.parse(campaign.calling_hours)
                pending = self._locked(
                    select(numbers_table)
                    .where(nc.campaign_id == campaign.id, nc.state == "pending")
                    .where(nc.next_attempt_at <= now)
                    .order_by(nc.next_attempt_at, nc.line)
                    .limit(_SCAN)
                )
                for number in connection.execute(pending).all():
                    zones = [z for z in number.timezones.split(",") if z]
                    opening = hours.next_opening(zones or ["UTC"], now)
                    if opening is None:
                        detail = f"no moment within {hours} in all of {', '.join(zones)}"
                        self._set(
                            connection,
                            number.id,
                            state="done",
                            outcome="expired",
                            detail=detail[:200],
                            updated_at=now,
                        )
                        outcomes.append("expired")
                    elif opening > now:
                        self._set(connection, number.id, next_attempt_at=opening, updated_at=now)
                    else:
                        return ClaimResult(
                            self._take(connection, campaign, number, instance, now),
                            0.0,
                            tuple(outcomes),
                        )
                self._settle(connection, campaign.id, now)
        return ClaimResult(None, max(wait, 0.0), tuple(outcomes))

    def _take(
        self, connection: Connection, campaign: Any, number: Any, instance: str, now: float
    ) -> Claim:
        attempt = number.attempts + 1
        self._set(
            connection,
            number.id,
            state="dialing",
            attempts=attempt,
            call_sid=None,
            last_status="claimed",
            last_sequence=-1,
            answered_at=None,
            answered_by=None,
            voicemail_left=False,
            claimed_by=instance[:200],
            claimed_at=now,
            updated_at=now,
        )
        # The next call of this campaign, from any instance, at least 60/rate s from now.
        connection.execute(
            update(campaigns_table)
            .where(campaigns_table.c.id == campaign.id)
            .values(next_dial_at=max(campaign.next_dial_at, now) + 60.0 / campaign.rate_per_minute)
        )
        return Claim(
            campaign.id,
            number.id,
            number.number,
            attempt,
            campaign.bot,
            campaign.from_number,
            campaign.ring_secs,
            campaign.rate_per_minute,
        )

    def _settle(self, connection: Connection, campaign_id: str, now: float) -> None:
        """Mark a campaign done when none of its numbers waits or is being dialed."""
        c = numbers_table.c
        open_numbers = connection.execute(
            select(func.count())
            .select_from(numbers_table)
            .where(c.campaign_id == campaign_id, c.state != "done")
        ).scalar_one()
        if open_numbers == 0:
            connection.execute(
                update(campaigns_table)
                .where(campaigns_table.c.id == campaign_id)
                .where(campaigns_table.c.status.in_(("running", "paused", "canceled")))
                .values(status="done", finished_at=now)
            )

    @staticmethod
    def _set(connection: Connection, number_id: int, **values: Any) -> None:
        connection.execute(
            update(numbers_table).where(numbers_table.c.id == number_id).values(**values)
        )

    def _number(self, connection: Connection, number_id: int, campaign_id: str) -> Any:
        query = select(
            numbers_table,
            campaigns_table.c.max_attempts,
            campaigns_table.c.retry_secs,
            campaigns_table.c.calling_hours,
            campaigns_table.c.status.label("campaign_status"),
        )
        query = query.join(campaigns_table, campaigns_table.c.id == numbers_table.c.campaign_id)
        query = query.where(
            numbers_table.c.id == number_id, numbers_table.c.campaign_id == campaign_id
        )
        if self._postgres:
            query = query.with_for_update(of=numbers_table)
        return connection.execute(query).first()

    def placed(
        self, campaign_id: str, number_id: int, attempt: int, call_sid: str, now: float
    ) -> None:
        """Note the call Twilio accepted for a claimed number.

        Args:
            campaign_id: Its campaign.
            number_id: The number.
            attempt: The try the call is.
            call_sid: The call.
            now: Unix time.
        """
        with self._write() as connection:
            connection.execute(
                update(numbers_table)
                .where(numbers_table.c.id == number_id, numbers_table.c.campaign_id == campaign_id)
                .where(numbers_table.c.attempts == attempt, numbers_table.c.state == "dialing")
                .where(numbers_table.c.call_sid.is_(None))
                .values(call_sid=call_sid, updated_at=now)
            )

    def refused(
        self,
        campaign_id: str,
        number_id: int,
        attempt: int,
        outcome: str | None,
        detail: str,
        now: float,
    ) -> str | None:
        """Twilio refused to place a claimed number's call.

        Args:
            campaign_id: Its campaign.
            number_id: The number.
            attempt: The try.
            outcome: ``invalid`` for a number Twilio says cannot be called; None to
                count the try as ``failed`` (retried while tries are left).
            detail: What Twilio said.
            now: Unix time.

        Returns:
            The number's outcome, or None when it will be tried again.
        """
        with self._write() as connection:
            row = self._number(connection, number_id, campaign_id)
            if row is None or row.state != "dialing" or row.attempts != attempt:
                return None
            if outcome is not None:
                self._set(
                    connection,
                    number_id,
                    state="done",
                    outcome=outcome,
                    last_status="refused",
                    detail=detail[:200],
                    updated_at=now,
                )
                self._settle(connection, campaign_id, now)
                return outcome
            return self._retry_or_end(connection, row, "failed", detail, now)

    def progress(
        self,
        campaign_id: str,
        number_id: int,
        call_sid: str,
        status: str,
        sequence: int,
        answered_by: str | None,
        duration: int | None,
        now: float,
    ) -> str | None:
        """A status callback of a number's call: note it, and end or retry on a final one.

        Args:
            campaign_id: Its campaign.
            number_id: The number.
            call_sid: The callback's call.
            status: Its ``CallStatus``.
            sequence: Its ``SequenceNumber``.
            answered_by: Its ``AnsweredBy``, if any.
            duration: Its ``CallDuration`` (final callbacks), if any.
            now: Unix time.

        Returns:
            The number's outcome if this callback gave it one (once); else None.
        """
        with self._write() as connection:
            row = self._number(connection, number_id, campaign_id)
            if row is None or row.state != "dialing":
                return None  # done already (a repeat), or canceled meanwhile
            if row.call_sid not in (None, call_sid) or sequence <= row.last_sequence:
                return None  # an earlier try's call, or a callback older than one seen
            values: dict[str, Any] = {
                "call_sid": call_sid,
                "last_status": status,
                "last_sequence": sequence,
                "updated_at": now,
            }
            if answered_by and row.answered_by is None:
                values["answered_by"] = answered_by
            if status == "in-progress" and row.answered_at is None:
                values["answered_at"] = now
            self._set(connection, number_id, **values)
            if status not in FINAL_STATUSES:
                return None
            if status in RETRIED:
                return self._retry_or_end(connection, row, status, f"call {status}", now)
            if status == "canceled":
                outcome = "canceled"
            else:
                outcome = answered_outcome(
                    row.answered_by or answered_by, row.voicemail_left, duration
                )
            self._set(connection, number_id, state="done", outcome=outcome)
            self._settle(connection, campaign_id, now)
            return outcome

    def amd(
        self,
        campaign_id: str,
        number_id: int,
        call_sid: str,
        answered_by: str,
        voicemail_left: bool,
        now: float,
    ) -> bool:
        """Note Twilio's AMD result for a number's call (the first one counts).

        Args:
            campaign_id: Its campaign.
            number_id: The number.
            call_sid: The call.
            answered_by: ``human``, ``machine_end_beep``...
            voicemail_left: Whether the runner answered with the voicemail message.
            now: Unix time.

        Returns:
            Whether it was the number's current call and its first result.
        """
        with self._write() as connection:
            row = self._number(connection, number_id, campaign_id)
            if row is None or row.state != "dialing" or row.call_sid not in (None, call_sid):
                return False
            if row.answered_by is not None:
                return False
            self._set(
                connection,
                number_id,
                call_sid=call_sid,
                answered_by=answered_by,
                voicemail_left=voicemail_left,
                updated_at=now,
            )
            return True

    def stale(self, older_than: float, limit: int = 50) -> list[tuple[str, int, str | None, int]]:
        """Numbers dialing since before ``older_than``: (campaign, number, call, try).

        Args:
            older_than: Unix time.
            limit: At most this many.
        """
        c = numbers_table.c
        query = (
            select(c.campaign_id, c.id, c.call_sid, c.attempts)
            .where(c.state == "dialing", c.claimed_at < older_than)
            .order_by(c.claimed_at)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [
                (r.campaign_id, r.id, r.call_sid, r.attempts) for r in connection.execute(query)
            ]

    def _retry_or_end(
        self, connection: Connection, row: Any, status: str, detail: str, now: float
    ) -> str | None:
        outcome = RETRIED.get(status, "failed")
        if row.attempts < row.max_attempts and row.campaign_status in ("running", "paused"):
            retry_at = now + row.retry_secs * 2 ** (row.attempts - 1)
            zones = [z for z in row.timezones.split(",") if z] or ["UTC"]
            opening = CallingHours.parse(row.calling_hours).next_opening(zones, retry_at)
            if opening is not None:
                self._set(
                    connection,
                    row.id,
                    state="pending",
                    next_attempt_at=opening,
                    detail=detail[:200],
                    updated_at=now,
                )
                return None
        self._set(
            connection, row.id, state="done", outcome=outcome, detail=detail[:200], updated_at=now
        )
        self._settle(connection, row.campaign_id, now)
        return outcome

    #
    # async twins
    #

    async def aclaim(self, instance: str, now: float) -> ClaimResult:
        """`claim` in a worker thread."""
        return await asyncio.to_thread(self.claim, instance, now)

    async def acall(self, method: str, *args: Any) -> Any:
        """Run the method named ``method`` in a worker thread.

        Args:
            method: E.g. ``"progress"``.
            *args: Its arguments.
        """
        return await asyncio.to_thread(getattr(self, method), *args)
