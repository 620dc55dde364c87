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
takes its first due number inside its calling hours, gives it the campaign's next dial
slot (``next_dial_at``, taken up to :data:`CLAIM_AHEAD_SECS` ahead, so the call leaves at
its slot whatever the database's latency) and moves ``next_dial_at`` on by
``60 / rate_per_minute`` seconds: together the instances never place more than the rate.
The calls this instance placed that still ring or wait for AMD count against its free
lines from the queue too, so a callback that lands on another instance frees them as
well. A number's calls then report back
(:class:`~pipecat_realtime_twilio.runner.campaign_outcomes.CampaignOutcomes`), and every
number ends with exactly one outcome.

Times are Unix seconds (``time.time()``): instances share them.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from pipecat_realtime_twilio.runner.calling_hours import CallingHours
from pipecat_realtime_twilio.runner.campaign_csv import CampaignNumbers
from pipecat_realtime_twilio.runner.campaign_model import (
    AMD_WAIT_SECS,
    CampaignSpec,
    Claim,
    ClaimResult,
    number_row,
)
from pipecat_realtime_twilio.runner.campaign_outcomes import CampaignOutcomes
from pipecat_realtime_twilio.runner.campaign_tables import campaigns_table, numbers_table

_SCAN = 20  # numbers looked at per campaign and claim

CLAIM_AHEAD_SECS = 0.5
"""How long before its slot a call may be claimed (the dialer waits for the slot)."""

RING_MARGIN_SECS = 10
"""A placed call counts as ringing for its ring time, the wait for AMD and this."""


class CampaignStore(CampaignOutcomes):
    """Campaigns and their numbers, on the call store's engine.

    Every method is synchronous; :meth:`aclaim` and :meth:`acall` run one in a worker thread.
    """

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

        The campaign stays ``canceled`` (its ``finished_at`` set once its last call
        ends). Canceling it again, or a campaign already done, cancels nothing.

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
                    .values(status="canceled")
                )
            self._settle(connection, campaign_id, now)
            return int(canceled)

    #
    # the dialer's queue
    #

    def claim(self, instance: str, now: float, lines: int | None = None) -> ClaimResult:
        """Take the next due number of a running campaign, keeping the campaign's pace.

        Args:
            instance: This instance's id (kept on the number).
            now: Unix time.
            lines: Claim nothing while this many of the calls ``instance`` placed ring
                or wait for AMD (None: no limit); its free lines.

        Returns:
            The claim, if a number was due, and how long to wait before the next try.
        """
        outcomes: list[str] = []
        wait = 1.0
        cc, nc = campaigns_table.c, numbers_table.c
        with self._write() as connection:
            if lines is not None and self._ringing(connection, instance, now) >= lines:
                return ClaimResult(None, 0.2)
            due = self._locked(
                select(campaigns_table)
                .where(cc.status == "running")
                .order_by(cc.next_dial_at)
                .limit(10)
            )
            for campaign in connection.execute(due).all():
                if campaign.next_dial_at > now + CLAIM_AHEAD_SECS:
                    wait = min(wait, campaign.next_dial_at - CLAIM_AHEAD_SECS - now)
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
                        self._end(connection, number, "expired", detail, now)
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

    @staticmethod
    def _ringing(connection: Connection, instance: str, now: float) -> int:
        """How many calls ``instance`` claimed ring or wait for AMD (not ended nor given up on).

        A call counts until AMD's result, or until its ring time, the wait for AMD and a
        margin have passed (from its answer, once answered): the bot may yet take it.
        """
        nc, cc = numbers_table.c, campaigns_table.c
        since = now - AMD_WAIT_SECS - RING_MARGIN_SECS
        query = (
            select(func.count())
            .select_from(numbers_table.join(campaigns_table, cc.id == nc.campaign_id))
            .where(nc.state == "dialing", nc.claimed_by == instance[:200])
            .where(nc.answered_by.is_(None))
            .where(
                or_(
                    and_(nc.answered_at.is_(None), nc.claimed_at + cc.ring_secs > since),
                    nc.answered_at > since,
                )
            )
        )
        return int(connection.execute(query).scalar_one())

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
        # The call's slot, and the next call of this campaign from any instance 60/rate s on.
        slot = max(campaign.next_dial_at, now)
        connection.execute(
            update(campaigns_table)
            .where(campaigns_table.c.id == campaign.id)
            .values(next_dial_at=slot + 60.0 / campaign.rate_per_minute)
        )
        return Claim(
            campaign.id,
            number.id,
            number.number,
            attempt,
            campaign.bot,
            campaign.from_number,
            campaign.ring_secs,
            slot,
        )

    def release(self, campaign_id: str, number_id: int, attempt: int, now: float) -> bool:
        """Give back a claimed number whose call was not placed (the dialer stopped).

        The try does not count; the number is due again at once.

        Args:
            campaign_id: Its campaign.
            number_id: The number.
            attempt: The try it was claimed for.
            now: Unix time.

        Returns:
            Whether it was given back (it was still claimed, with no call).
        """
        with self._write() as connection:
            row = self._number(connection, number_id, campaign_id, attempt)
            if row is None or row.call_sid is not None:
                return False
            self._set(
                connection,
                number_id,
                state="pending",
                attempts=attempt - 1,
                next_attempt_at=now,
                last_status=None,
                last_sequence=-1,
                claimed_by=None,
                claimed_at=None,
                updated_at=now,
            )
            return True

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

    #
    # async twins
    #

    async def aclaim(self, instance: str, now: float, lines: int | None = None) -> ClaimResult:
        """`claim` in a worker thread."""
        return await asyncio.to_thread(self.claim, instance, now, lines)

    async def acall(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run the method named ``method`` in a worker thread.

        Args:
            method: E.g. ``"progress"``.
            *args: Its arguments.
            **kwargs: Its keyword arguments.
        """
        return await asyncio.to_thread(getattr(self, method), *args, **kwargs)
