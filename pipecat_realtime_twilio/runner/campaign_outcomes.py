#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a claimed number's call reports back, and the one outcome it gives the number.

:class:`CampaignOutcomes` is the half of
:class:`~pipecat_realtime_twilio.runner.campaign_store.CampaignStore` that follows a number
after its claim: Twilio refusing the call (:meth:`~CampaignOutcomes.refused`), its status
callbacks (:meth:`~CampaignOutcomes.progress`), its AMD result (:meth:`~CampaignOutcomes.amd`),
the retry with its backoff, and the numbers left dialing (:meth:`~CampaignOutcomes.stale`).

Every report names the try it belongs to (the callbacks' URLs carry ``attempt``) and is
checked against the number's row, in one transaction that locks it: a report of an
earlier try, a repeat, or a callback older than one already seen (``SequenceNumber``)
changes nothing, on whichever instance it lands. A number ends once, with one of
:data:`~pipecat_realtime_twilio.runner.campaign_model.OUTCOMES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from pipecat_realtime_twilio.runner.calling_hours import CallingHours
from pipecat_realtime_twilio.runner.campaign_model import (
    FINAL_STATUSES,
    RETRIED,
    answered_outcome,
)
from pipecat_realtime_twilio.runner.campaign_progress import CampaignReads
from pipecat_realtime_twilio.runner.campaign_tables import campaigns_table, numbers_table


class CampaignOutcomes(CampaignReads):
    """A number's calls reporting back (the store's engine; every method synchronous)."""

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

    @staticmethod
    def _set(connection: Connection, number_id: int, **values: Any) -> None:
        connection.execute(
            update(numbers_table).where(numbers_table.c.id == number_id).values(**values)
        )

    def _settle(self, connection: Connection, campaign_id: str, now: float) -> None:
        """Finish a campaign none of whose numbers waits or is being dialed.

        A running one becomes ``done``; a canceled one stays ``canceled``. Either gets its
        ``finished_at`` when its last number ends.
        """
        c, cc = numbers_table.c, campaigns_table.c
        open_numbers = connection.execute(
            select(func.count())
            .select_from(numbers_table)
            .where(c.campaign_id == campaign_id, c.state != "done")
        ).scalar_one()
        if open_numbers == 0:
            for statuses, status in ((("running", "paused"), "done"), (("canceled",), "canceled")):
                connection.execute(
                    update(campaigns_table)
                    .where(cc.id == campaign_id, cc.status.in_(statuses), cc.finished_at.is_(None))
                    .values(status=status, finished_at=now)
                )

    def _number(
        self, connection: Connection, number_id: int, campaign_id: str, attempt: int
    ) -> Any:
        """The number's row (locked) with its campaign's settings, if ``attempt`` is its try.

        None when there is no such number, or it is not being dialed in that try (done
        already, pending a retry, or dialed again since).
        """
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
        row = connection.execute(query).first()
        if row is None or row.state != "dialing" or row.attempts != attempt:
            return None
        return row

    def refused(
        self,
        campaign_id: str,
        number_id: int,
        attempt: int,
        outcome: str | None,
        detail: str,
        now: float,
    ) -> str | None:
        """Twilio refused to place a claimed number's call (or it was never placed).

        Args:
            campaign_id: Its campaign.
            number_id: The number.
            attempt: The try.
            outcome: ``invalid`` for a number Twilio says cannot be called; None to
                count the try as ``failed`` (retried while tries are left).
            detail: What Twilio said.
            now: Unix time.

        Returns:
            The number's outcome, or None when it will be tried again (or the report
            is not about its current try).
        """
        with self._write() as connection:
            row = self._number(connection, number_id, campaign_id, attempt)
            if row is None:
                return None
            if outcome is None:
                return self._retry_or_end(connection, row, "failed", detail, now)
            self._end(connection, row, outcome, detail, now, last_status="refused")
            return outcome

    def progress(
        self,
        campaign_id: str,
        number_id: int,
        attempt: int,
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
            attempt: The try the call is (from the callback's URL).
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
            row = self._number(connection, number_id, campaign_id, attempt)
            if row is None:
                return None  # done already (a repeat), canceled, or an earlier try's call
            if row.call_sid not in (None, call_sid) or sequence <= row.last_sequence:
                return None  # another call of this try, or a callback older than one seen
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
            self._end(connection, row, outcome, row.detail, now)
            return outcome

    def amd(
        self,
        campaign_id: str,
        number_id: int,
        attempt: int,
        call_sid: str,
        answered_by: str,
        now: float,
    ) -> bool:
        """Note Twilio's AMD result for a number's call (the first one counts).

        Args:
            campaign_id: Its campaign.
            number_id: The number.
            attempt: The try the call is (from the callback's URL).
            call_sid: The call.
            answered_by: ``human``, ``machine_end_beep``...
            now: Unix time.

        Returns:
            Whether it was the number's current call and its first result.
        """
        with self._write() as connection:
            row = self._number(connection, number_id, campaign_id, attempt)
            if row is None or row.call_sid not in (None, call_sid) or row.answered_by is not None:
                return False
            self._set(
                connection,
                number_id,
                call_sid=call_sid,
                answered_by=answered_by,
                updated_at=now,
            )
            return True

    def voicemail_said(
        self, campaign_id: str, number_id: int, attempt: int, call_sid: str, now: float
    ) -> bool:
        """Twilio took the voicemail message for the number's call: the message is left.

        Noted only once Twilio accepted it (a machine that hung up first gets none), and
        only while the call is the number's current one and the number has no outcome.

        Args:
            campaign_id: Its campaign.
            number_id: The number.
            attempt: The try the call is.
            call_sid: The call.
            now: Unix time.

        Returns:
            Whether it was noted.
        """
        with self._write() as connection:
            row = self._number(connection, number_id, campaign_id, attempt)
            if row is None or row.call_sid != call_sid or row.outcome is not None:
                return False
            self._set(connection, number_id, voicemail_left=True, updated_at=now)
            return True

    def stale(
        self, older_than: float, limit: int = 50, *, placed: bool | None = None
    ) -> list[tuple[str, int, str | None, int]]:
        """Numbers dialing since before ``older_than``: (campaign, number, call, try).

        Args:
            older_than: Unix time.
            limit: At most this many (the oldest).
            placed: Only those with a call (True) or without one (False); None: both.
                The dialer asks for each kind apart, so that calls going on for long
                cannot hide a try never placed behind them.
        """
        c = numbers_table.c
        query = (
            select(c.campaign_id, c.id, c.call_sid, c.attempts)
            .where(c.state == "dialing", c.claimed_at < older_than)
            .order_by(c.claimed_at)
            .limit(limit)
        )
        if placed is not None:
            query = query.where(c.call_sid.is_not(None) if placed else c.call_sid.is_(None))
        with self._engine.connect() as connection:
            return [
                (r.campaign_id, r.id, r.call_sid, r.attempts) for r in connection.execute(query)
            ]

    def _retry_or_end(
        self, connection: Connection, row: Any, status: str, detail: str, now: float
    ) -> str | None:
        """Schedule the next try after its backoff (then its calling hours), or end."""
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
        outcome = RETRIED.get(status, "failed")
        self._end(connection, row, outcome, detail, now)
        return outcome

    def _end(
        self,
        connection: Connection,
        row: Any,
        outcome: str,
        detail: str | None,
        now: float,
        **values: Any,
    ) -> None:
        """The number's one outcome; its campaign finishes with its last number."""
        self._set(
            connection,
            row.id,
            state="done",
            outcome=outcome,
            detail=detail[:200] if detail else None,
            updated_at=now,
            **values,
        )
        self._settle(connection, row.campaign_id, now)
