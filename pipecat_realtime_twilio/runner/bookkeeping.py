#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The runner's record keeping: a record per finished call, stored and sent to the webhook."""

import asyncio
from collections import deque

from loguru import logger

from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.runner.pricing import cost_usd
from pipecat_realtime_twilio.runner.records import CallRecord, latency_summary
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.runner.webhook import WebhookSender
from pipecat_realtime_twilio.settings import Settings

FINISHED_CALLS_KEPT = 100
"""Records of the newest finished calls kept in memory (:attr:`RecordKeeper.finished`)."""

WEBHOOK_RETRY_SECS = 30.0
"""How often records the webhook has not received yet are sent again."""


class RecordKeeper:
    """Makes each finished call's record, stores it (``DATABASE_URL``) and sends it on.

    With ``CALL_WEBHOOK_URL`` every record is POSTed there; what does not arrive
    stays marked undelivered in the store and is sent again every
    ``webhook_retry_secs`` until it does.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: CallStore | None = None,
        webhook_retry_secs: float = WEBHOOK_RETRY_SECS,
    ):
        """Initialize the keeper.

        Args:
            settings: The runner's settings (``DATABASE_URL``, ``CALL_WEBHOOK_*``).
            store: Where records go; ``DATABASE_URL`` by default.
            webhook_retry_secs: How often undelivered records are sent again.
        """
        self.store = store or CallStore(settings.database_url)
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
        self._tasks: set[asyncio.Task] = set()
        self._retry_task: asyncio.Task | None = None

    def start(self) -> None:
        """Start sending, on a timer, the records the webhook has not received yet."""
        if self.webhook is not None and self._retry_task is None:
            self._retry_task = asyncio.create_task(self._retry_webhooks())

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for records still being stored or sent.

        Args:
            timeout: Most seconds to wait.
        """
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Stop the retries, let records in flight settle, close the database."""
        if self._retry_task is not None:
            self._retry_task.cancel()
            self._retry_task = None
        await self.settle(timeout=5)
        self.store.close()

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
            record.add_turn(entry.role, entry.text, entry.at, entry.interrupted)
        record.cost_usd = cost_usd(record.model, record.usage) if agent else None
        record.finish(call.end_reason or "unknown")
        self.finished.append(record)
        return record

    def keep(self, record: CallRecord) -> None:
        """Store ``record`` and send it to the webhook, in the background.

        Args:
            record: The finished call's record.
        """
        task = asyncio.create_task(self._keep(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep(self, record: CallRecord) -> None:
        """Store the record, then send it to the webhook (a failure leaves it for a retry)."""
        try:
            await self.store.asave(record)
        except Exception as e:
            logger.error(f"Call {record.call_sid}: could not store the call record: {e}")
            return
        if self.webhook is not None and await self.webhook.deliver(record):
            record.webhook_delivered = True
            await self.store.amark_delivered(record.call_sid)

    async def _retry_webhooks(self) -> None:
        while self.webhook is not None:
            await asyncio.sleep(self._webhook_retry_secs)
            try:
                await self.webhook.deliver_pending(self.store)
            except Exception as e:
                logger.error(f"Sending pending call records failed: {e}")
