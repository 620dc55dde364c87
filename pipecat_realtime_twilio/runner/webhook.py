#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Call records to a webhook: POSTed as JSON, signed, retried.

`WebhookSender` POSTs a record as JSON, signed with HMAC-SHA256 when given a
secret, with a timeout and bounded retries; `WebhookSender.deliver_pending` sends
every stored record not yet delivered and marks those that arrived. Delivery is at
least once: a receiver should deduplicate by ``call_sid`` (in the body, and as the
``Idempotency-Key`` header).

Example::

    sender = WebhookSender("https://example.com/calls", secret="s3cret")
    if await sender.deliver(record):
        await store.amark_delivered(record.call_sid)
    # later, e.g. at startup or on a timer:
    await sender.deliver_pending(store)

A receiver checks the signature over the raw body::

    hmac.compare_digest(
        request.headers["X-Call-Record-Signature"],
        hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest(),
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
from collections.abc import AsyncIterator

import aiohttp
from loguru import logger

from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.store import CallStore

SIGNATURE_HEADER = "X-Call-Record-Signature"
"""Header with the hex HMAC-SHA256 of the webhook body, keyed with the shared secret."""

IDEMPOTENCY_HEADER = "Idempotency-Key"
"""Header with the record's ``call_sid``: the same for every delivery of one record."""


def sign_body(body: bytes, secret: str | bytes) -> str:
    """Return the webhook signature of a body: hex HMAC-SHA256 keyed with ``secret``.

    Args:
        body: The raw request body.
        secret: The shared secret (a str is UTF-8 encoded).

    Returns:
        The lowercase hex digest sent in ``X-Call-Record-Signature``.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str | bytes, signature: str | None) -> bool:
    """Return whether ``signature`` is the signature of ``body`` (in constant time).

    Args:
        body: The raw request body as received.
        secret: The shared secret.
        signature: The ``X-Call-Record-Signature`` header, or None if absent.

    Returns:
        True if it matches.
    """
    if not signature:
        return False
    return hmac.compare_digest(sign_body(body, secret), signature.strip().lower())


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # the receiver refused this record (4xx, 3xx): others may pass
    UNREACHABLE = "unreachable"  # no answer, timeouts or 5xx after every attempt


class WebhookSender:
    """POSTs call records as JSON to a webhook URL.

    Each request has a timeout. A connection error, a timeout, 408, 429 or 5xx is
    retried, up to ``attempts`` tries in all, after ``first_delay_s``, then twice as
    long each time up to ``max_delay_s``. Other answers are final: 2xx delivered,
    anything else (redirects included, which are not followed) failed. Failures are
    logged and never raise.

    Headers: ``Content-Type: application/json``, ``Idempotency-Key``: the record's
    ``call_sid``, followed by ``.<revision>`` for an amended record (a record may
    arrive more than once), and, with a secret,
    ``X-Call-Record-Signature``: hex HMAC-SHA256 of the raw body (`sign_body`).
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None = None,
        timeout_s: float = 10.0,
        attempts: int = 3,
        first_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ):
        """Initialize the sender.

        Args:
            url: The webhook URL.
            secret: Shared secret to sign bodies with; None sends no signature.
            timeout_s: Timeout of each request, connecting included.
            attempts: Tries per record, at least 1.
            first_delay_s: Wait before the first retry.
            max_delay_s: Longest wait between tries.
            session: An aiohttp session to use (and leave open); by default each
                `deliver` or `deliver_pending` opens and closes its own.
        """
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if timeout_s <= 0 or first_delay_s < 0 or max_delay_s < 0:
            raise ValueError("timeout_s must be positive and the delays not negative")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._session = session

    def retry_delay(self, retry: int) -> float:
        """Return the wait before a retry.

        Args:
            retry: 1 for the first retry, 2 for the second, ...

        Returns:
            ``min(max_delay_s, first_delay_s * 2 ** (retry - 1))`` seconds.
        """
        return min(self.max_delay_s, self.first_delay_s * 2 ** (retry - 1))

    @contextlib.asynccontextmanager
    async def _session_scope(self) -> AsyncIterator[aiohttp.ClientSession]:
        if self._session is not None:
            yield self._session
            return
        async with aiohttp.ClientSession() as session:
            yield session

    async def deliver(self, record: CallRecord) -> bool:
        """Send one record, retrying as configured.

        The store is not touched: mark the record delivered if this returns True.

        Args:
            record: The record.

        Returns:
            True if the receiver answered 2xx.
        """
        async with self._session_scope() as session:
            return await self._deliver(session, record) is _Outcome.DELIVERED

    async def deliver_pending(self, store: CallStore, limit: int = 100) -> int:
        """Send the store's undelivered records, oldest first, and mark those that arrive.

        A record that fails stays undelivered in the store, unchanged, for a later
        call. When the receiver cannot be reached (after every attempt) the rest of
        the batch waits for a later call too; a record the receiver refuses (4xx)
        does not stop the others.

        Args:
            store: The store.
            limit: At most this many records per call.

        Returns:
            How many records were delivered and marked.
        """
        delivered = 0
        records = await store.aundelivered(limit)
        if not records:
            return 0
        async with self._session_scope() as session:
            for record in records:
                outcome = await self._deliver(session, record)
                if outcome is _Outcome.UNREACHABLE:
                    break
                if outcome is not _Outcome.DELIVERED:
                    continue
                try:
                    # Only the revision sent: one amended meanwhile goes again.
                    await store.amark_delivered(record.call_sid, revision=record.revision)
                    delivered += 1
                except Exception:
                    # It will be sent again: the receiver should deduplicate by call_sid.
                    logger.exception(f"Could not mark call record {record.call_sid} delivered")
        return delivered

    async def _deliver(self, session: aiohttp.ClientSession, record: CallRecord) -> _Outcome:
        body = record.to_json().encode()
        headers = {"Content-Type": "application/json"}
        if record.call_sid.isascii() and record.call_sid.isprintable():  # fits in a header
            # One key per revision: an amended record is news, a repeated one is not.
            revision = f".{record.revision}" if record.revision else ""
            headers[IDEMPOTENCY_HEADER] = record.call_sid + revision
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign_body(body, self.secret)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        for attempt in range(1, self.attempts + 1):
            try:
                async with session.post(
                    self.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    status = response.status
                if 200 <= status < 300:
                    return _Outcome.DELIVERED
                retry = status >= 500 or status in (408, 429)
                problem = f"HTTP {status}"
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                retry, problem = True, f"no answer within {self.timeout_s:g} s"
            except Exception as error:  # aiohttp.ClientError, a bad URL, ...
                retry, problem = True, f"{type(error).__name__}: {error}"
            if not retry:
                logger.warning(
                    f"Webhook refused call record {record.call_sid} ({problem}); not retried"
                )
                return _Outcome.REJECTED
            if attempt == self.attempts:
                logger.warning(
                    f"Webhook delivery of call record {record.call_sid} failed after "
                    f"{self.attempts} attempt(s): {problem}"
                )
                return _Outcome.UNREACHABLE
            delay = self.retry_delay(attempt)
            logger.info(
                f"Webhook delivery of call record {record.call_sid} failed ({problem}); "
                f"retrying in {delay:g} s"
            )
            await asyncio.sleep(delay)
        return _Outcome.UNREACHABLE  # not reached: attempts >= 1
