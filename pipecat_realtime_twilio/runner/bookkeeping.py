#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The runner's record keeping: a record per finished call, stored and sent to the webhook.

Nothing is lost on the way: a record goes to the durable outbox
(:mod:`~pipecat_realtime_twilio.runner.outbox`) first, then to the database, and
leaves the outbox only once stored. While the database fails (locked, down, full)
records wait there, the keeper tries again after 1 s, then twice as long each
time up to 30 s, and the webhook gets them from the outbox meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from loguru import logger

from pipecat_realtime_twilio.agent.live_usage import LiveUsage
from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.runner.live_pricing import live_cost_by_kind
from pipecat_realtime_twilio.runner.outbox import Outbox, default_outbox_dir
from pipecat_realtime_twilio.runner.pricing import PriceTable
from pipecat_realtime_twilio.runner.records import CallRecord, latency_summary
from pipecat_realtime_twilio.runner.store import CallStore, describe_error
from pipecat_realtime_twilio.runner.webhook import WebhookSender
from pipecat_realtime_twilio.settings import Settings, SettingsError

if TYPE_CHECKING:
    from pipecat_realtime_twilio.runner.metrics import RunnerMetrics

FINISHED_CALLS_KEPT = 100
"""Records of the newest finished calls kept in memory (:attr:`RecordKeeper.finished`)."""

WEBHOOK_RETRY_SECS = 30.0
"""How often records the webhook has not received yet are sent again."""

STORE_RETRY_SECS = (1.0, 30.0)
"""Wait after the database first fails to store a record, and the longest wait."""

_DELIVERIES_AT_ONCE = 8


class RecordKeeper:
    """Makes each finished call's record, stores it (``DATABASE_URL``) and sends it on.

    A record goes through the outbox (``OUTBOX_DIR``) to the database, and is
    stored once (the store replaces a record by its ``call_sid``). Records a
    previous process left in the outbox are stored when the keeper starts.

    With ``CALL_WEBHOOK_URL`` every record is POSTed there, at least once (the
    receiver deduplicates by ``call_sid``): after it is stored, or from the outbox
    while the database fails. What does not arrive stays marked undelivered and is
    sent again every ``webhook_retry_secs`` until it does.

    A record can be sent again when it changes: a stream status event that comes
    after the call's record was made (Twilio's ``stream-stopped`` usually does) is
    added to it (:meth:`amend_with`, :mod:`.amendments`), and the record, one
    ``revision`` higher, is stored again (replacing the stored one) and sent again.
    A receiver keeps the latest per ``call_sid`` (the highest ``revision``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: CallStore | None = None,
        webhook_retry_secs: float = WEBHOOK_RETRY_SECS,
        metrics: RunnerMetrics | None = None,
        store_retry_secs: tuple[float, float] = STORE_RETRY_SECS,
    ):
        """Initialize the keeper.

        Args:
            settings: The runner's settings (``DATABASE_URL``, ``OUTBOX_DIR``,
                ``CALL_WEBHOOK_*``).
            store: Where records go; ``DATABASE_URL`` by default.
            webhook_retry_secs: How often undelivered records are sent again.
            metrics: Where ``prt_records_pending`` is kept, if anywhere.
            store_retry_secs: The first and the longest wait between tries to store
                records in the outbox while the database fails.

        Raises:
            SettingsError: If the database or the outbox folder cannot be used.
        """
        self.prices = PriceTable.from_settings(settings)  # PRICES_FILE: checked at start
        self.store = store or CallStore(settings.database_url)
        directory = settings.outbox_dir or default_outbox_dir(settings.database_url)
        self._temporary_outbox = directory is None  # an in-memory database: nothing lasts
        directory = directory or tempfile.mkdtemp(prefix="prt-outbox-")
        try:
            self.outbox = Outbox(directory)
        except OSError as error:
            if store is None:
                self.store.close()
            raise SettingsError(
                f"OUTBOX_DIR: cannot use {directory} for call records: {error.strerror or error}"
            ) from None
        secret = settings.call_webhook_secret
        self.webhook = (
            WebhookSender(
                str(settings.call_webhook_url),
                secret=secret.get_secret_value() if secret is not None else None,
            )
            if settings.call_webhook_url
            else None
        )
        self.finished: deque[CallRecord] = deque(maxlen=FINISHED_CALLS_KEPT)
        self._webhook_retry_secs = webhook_retry_secs
        self._retry_first_s, self._retry_max_s = store_retry_secs
        self._pending_gauge = metrics.records_pending if metrics is not None else None
        self._tasks: set[asyncio.Task] = set()
        self._retry_task: asyncio.Task | None = None
        self._drainer: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # every record kept has had a try at the database
        self._idle.set()
        self._backing_off = False
        self._database_failing = False
        self._backlog_since: float | None = None  # since the database failed, or a restart
        self._backlog_stored = 0
        self._deliveries = asyncio.Semaphore(_DELIVERIES_AT_ONCE)
        self._putting: dict[str, asyncio.Task] = {}  # the latest put of each call's record

    def start(self) -> None:
        """Store what a previous process left in the outbox; retry the webhook on a timer."""
        left = self.outbox.count()
        self._set_pending(left)
        if left:
            logger.info(f"{left} call record(s) left in the outbox {self.outbox.directory}")
            self._backlog_since, self._backlog_stored = time.monotonic(), 0
        self._ensure_drainer()
        self._idle.clear()
        self._wake.set()
        if self.webhook is not None and self._retry_task is None:
            self._retry_task = asyncio.create_task(self._retry_webhooks())

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for records still being stored or sent.

        Records that wait in the outbox for the database are not waited for.

        Args:
            timeout: Most seconds to wait.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._tasks or not self._idle.is_set():
                    if self._tasks:
                        await asyncio.wait(list(self._tasks))
                    await self._idle.wait()

    async def close(self, settle_secs: float = 5.0) -> None:
        """Stop the retries, let records in flight settle, close the database.

        Records still in the outbox stay there for the next start.

        Args:
            settle_secs: Most seconds to wait for records in flight.
        """
        if self._retry_task is not None:
            self._retry_task.cancel()
            self._retry_task = None
        await self.settle(timeout=settle_secs)
        background = [*self._tasks, *([self._drainer] if self._drainer else [])]
        self._drainer = None
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        self.store.close()
        if self._temporary_outbox:
            shutil.rmtree(self.outbox.directory, ignore_errors=True)

    def record(self, call: CallSession, bot: str) -> CallRecord:
        """The record of a finished call, from the call and the agent that talked on it.

        Args:
            call: The call, ended.
            bot: The bot that answered it.

        Returns:
            The record, also kept in :attr:`finished`.
        """
        agent = call.agent
        record = CallRecord(
            call_sid=call.call_sid,
            bot=bot,
            from_number=call.parameters.get("from") or None,
            to_number=call.parameters.get("to") or None,
            direction=call.parameters.get("direction", "inbound"),
            model=agent.model if agent else "",
            started_at=call.start.started_at,
            usage=agent.usage if agent else Usage(),
            latency=latency_summary(agent.response_latencies_ms if agent else []),
        )
        for entry in sorted(agent.transcript if agent else [], key=lambda e: e.at):
            record.transcript.append(entry.as_dict())
        record.stream_events = [dict(event) for event in call.stream_events]
        record.caller_audio_dropped_ms = call.caller_audio_dropped_ms
        live = getattr(agent, "live_usage", None)
        if isinstance(live, LiveUsage):  # GPT-Live: billed by the minute, and backend tokens
            record.engine, record.live = "live", live.as_dict()
            cost = live_cost_by_kind(
                self.prices, record.model, live.billed_seconds, live.backend_model, record.usage
            )
            record.cost, record.cost_usd = cost, sum(cost.values()) if cost else None
        if agent is not None:  # what happened, with times, and the cost (by kind)
            if record.engine != "live":
                record.cost_usd = self.prices.cost_usd(record.model, record.usage)
                record.cost = self.prices.cost_by_kind(record.model, record.usage)
            events = agent.call_events.as_dict()
            record.tool_calls, record.keypad = events["tool_calls"], events["keypad"]
            record.barge_ins, record.turn_latencies = events["barge_ins"], events["turn_latencies"]
        transfer = call.ended.transfer() if call.ended is not None else None
        record.transfers = [transfer] if transfer is not None else []
        record.finish(call.end_reason or "unknown")
        self.finished.append(record)
        return record

    def keep(self, record: CallRecord) -> None:
        """Put ``record`` in the outbox, then store it and send it to the webhook.

        It all happens in the background; :meth:`settle` waits for it.

        Args:
            record: The finished call's record.
        """
        self._ensure_drainer()
        call_sid = record.call_sid
        task = self._spawn(self._put(record, after=self._putting.get(call_sid)))
        self._putting[call_sid] = task  # a newer record of the call goes in after this one

        def forget(done: asyncio.Task) -> None:
            if self._putting.get(call_sid) is done:
                del self._putting[call_sid]

        task.add_done_callback(forget)

    def amend_with(self, call_sid: str, change: Callable[[CallRecord], None]) -> bool:
        """Change a finished call's record and keep it again, one ``revision`` higher.

        What came after the record was made (a late stream event, Twilio's recording,
        the post-call analysis) goes on it this way. The amended record (undelivered)
        replaces the one in :attr:`finished` and goes the way of every record
        (:meth:`keep`): the store replaces the stored one and the webhook gets it again.
        A change that changes nothing (a callback repeated) makes no new revision.

        Args:
            call_sid: The call.
            change: Changes a copy of the record in place.

        Returns:
            Whether the call's record was among :attr:`finished` (else nothing changed).
        """
        for index, kept in enumerate(self.finished):
            if kept.call_sid == call_sid:
                before = kept.to_dict()
                record = CallRecord.from_dict(kept.to_dict())  # the kept one may be in flight
                change(record)
                if record.to_dict() == before:
                    return True  # nothing new (a repeated callback): no new revision
                record.revision = kept.revision + 1
                record.webhook_delivered = False
                self.finished[index] = record
                self.keep(record)
                return True
        return False

    #
    # into the outbox
    #

    async def _put(self, record: CallRecord, after: asyncio.Task | None = None) -> None:
        if after is not None:
            await asyncio.wait([after])  # an older record of the call must not replace this one

        def put() -> int:
            self.outbox.put(record)
            return self.outbox.count()

        try:
            pending = await asyncio.to_thread(put)
        except OSError as error:
            logger.error(
                f"Call {record.call_sid}: could not write its record to the outbox "
                f"{self.outbox.directory} ({error}); storing it directly"
            )
            await self._store_directly(record)
            return
        self._set_pending(pending)
        if self._database_failing:
            logger.warning(
                f"Call {record.call_sid}: the database is unavailable; its record waits in "
                f"the outbox ({pending} pending)"
            )
        if not self._backing_off:  # else it waits for the next try, as the others do
            self._idle.clear()
        self._wake.set()

    async def _store_directly(self, record: CallRecord) -> None:
        """The last resort when the outbox fails: the database, or the log."""
        try:
            await self.store.asave(record)
        except Exception as error:
            logger.error(
                f"Call {record.call_sid}: could not store its record either "
                f"({describe_error(error)}); the record: {record.to_json()}"
            )
            return
        self.stored(record)

    #
    # from the outbox to the database
    #

    def _ensure_drainer(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain_forever())

    async def _drain_forever(self) -> None:
        delay = self._retry_first_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                error = await self._drain_once()
            except Exception as e:  # the outbox's folder: gone, unreadable, no locks (NFS)
                error = f"the outbox failed: {e}"
                logger.opt(exception=True).error(f"Call records: {error}")
            if error is None:
                delay = self._retry_first_s
                if not self._wake.is_set():
                    self._idle.set()
                continue
            with contextlib.suppress(OSError):
                self._set_pending(await asyncio.to_thread(self.outbox.count))
            logger.info(
                f"Call records wait in the outbox {self.outbox.directory} ({error}); "
                f"next try in {delay:g} s"
            )
            self._backing_off = True
            self._idle.set()  # the records are safe: nobody need wait for the database
            await asyncio.sleep(delay)
            self._backing_off = False
            delay = min(delay * 2, self._retry_max_s)
            self._wake.set()

    async def _drain_once(self) -> str | None:
        """Store what is in the outbox, oldest first.

        After a failure the rest waits for the next pass, but records not yet
        delivered go to the webhook from the outbox.

        Returns:
            None, or why the database failed.
        """
        failure: str | None = None
        send = self.webhook is not None
        for path in await asyncio.to_thread(self.outbox.paths):
            claim = await asyncio.to_thread(self.outbox.claim, path)
            if claim is None:
                continue  # gone, or another process has it
            try:
                record = claim.record
                if failure is None:
                    try:
                        await self.store.asave(record)
                    except Exception as error:  # the driver's errors, not only SQLAlchemy's
                        failure = describe_error(error)
                        self._failed(record, failure)
                    else:
                        self._database_failing = False
                        await asyncio.to_thread(self.outbox.remove, claim)
                        self._backlog_stored += self._backlog_since is not None
                        self.stored(record)
                        continue
                if send and not record.webhook_delivered:
                    if await self._deliver(record):
                        await asyncio.to_thread(self.outbox.update, claim)
                    else:
                        send = False  # the receiver is down too: the rest wait for later
            finally:
                claim.release()
        if failure is None:
            pending = await asyncio.to_thread(self.outbox.count)
            self._set_pending(pending)
            if self._backlog_since is not None and pending == 0:
                logger.info(
                    f"Outbox drained: {self._backlog_stored} call record(s) stored after "
                    f"{time.monotonic() - self._backlog_since:.1f} s"
                )
                self._backlog_since, self._backlog_stored = None, 0
        return failure

    def _failed(self, record: CallRecord, error: str) -> None:
        """The database failed to store ``record``: say so when an outage starts."""
        if self._backlog_since is None:
            self._backlog_since, self._backlog_stored = time.monotonic(), 0
        if not self._database_failing:
            self._database_failing = True
            logger.warning(
                f"Call {record.call_sid}: could not store its record ({error}); it waits in "
                f"the outbox {self.outbox.directory}"
            )

    #
    # to the webhook
    #

    def stored(self, record: CallRecord) -> None:
        """A record is in the database: send it to the webhook if it has not been.

        Args:
            record: The record, as stored.
        """
        if self.webhook is not None and not record.webhook_delivered:
            self._spawn(self._deliver_stored(record))

    async def _deliver_stored(self, record: CallRecord) -> None:
        async with self._deliveries:
            if not await self._deliver(record):
                return  # still undelivered in the store: sent again by the timer
            try:
                # Not if a newer revision was stored meanwhile: that one is still to send.
                await self.store.amark_delivered(record.call_sid, revision=record.revision)
            except Exception as error:
                logger.warning(
                    f"Call {record.call_sid}: delivered, but not marked delivered "
                    f"({describe_error(error)}); it may be sent again"
                )

    async def _deliver(self, record: CallRecord) -> bool:
        """POST ``record`` to the webhook; whether it arrived (and mark it so)."""
        webhook = self.webhook
        if webhook is None or not await webhook.deliver(record):
            return False
        record.webhook_delivered = True
        for kept in self.finished:
            if kept.call_sid == record.call_sid and kept.revision == record.revision:
                kept.webhook_delivered = True
        return True

    async def _retry_webhooks(self) -> None:
        while self.webhook is not None:
            await asyncio.sleep(self._webhook_retry_secs)
            if self._database_failing:
                continue  # the database is down: the outbox sends what it holds
            try:
                await self.webhook.deliver_pending(self.store)
            except Exception as e:
                logger.error(f"Sending pending call records failed: {describe_error(e)}")

    #
    # helpers
    #

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _set_pending(self, count: int) -> None:
        if self._pending_gauge is not None:
            self._pending_gauge.set(count)
