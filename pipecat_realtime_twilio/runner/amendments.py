#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Late news of a call put on its record, whichever instance Twilio sends it to.

Twilio's callbacks that come after a call (a ``stream-stopped`` at
``/stream-status``, a recording at ``/recording-status``) change its record. Such a
change is an :data:`Amendment`: data (a stream event to add, a recording URL to
set) with ``apply(record)``, so it can travel between instances.
:class:`RecordAmender` puts it on the record:

1. The record is among this process's finished ones: amended there at once
   (:meth:`~.bookkeeping.RecordKeeper.amend_with`: one revision higher, stored
   again and sent to the webhook again).
2. Without ``REDIS_URL`` (or with Redis unreachable) it waits in this process
   (a bounded number of calls) until the call's record is made here.
3. With ``REDIS_URL``: when the instance that made the record is alive (Redis
   ``{REDIS_PREFIX}recorded:{CallSid}`` names it, and the registry has it), or the
   call's line is held (``lines:owner``: it runs or ends somewhere) or no record is
   stored yet, the amendment is parked in Redis (``{REDIS_PREFIX}amend:{CallSid}``,
   a list, :data:`PARKED_TTL_SECS`) and the instances are told (the ``streams``
   channel). The instance holding the record takes the parked amendments (``LPOP``:
   each is taken once) and amends it as in 1; the one that makes a call's record
   takes them right after making it and again :data:`RETAKE_SECS` later, so the
   record's maker is its one writer while it lives. What is parked for a record
   not made yet also waits in this process as in 2 (the call may run here);
   amendments are idempotent (a stream has one event of each kind, a recording
   one URL) and a change that changes nothing makes no new revision.
4. Else (its maker is gone or forgot it) the stored record is amended in the
   database: loaded, changed, one revision higher, saved only if the stored one is
   still the one loaded (retried on a conflict, so concurrent amendments are all
   kept), then sent to the webhook like any record. A database that fails is
   tried again, every little longer, for up to :data:`PARKED_TTL_SECS`.

Redis failures are counted as ``prt_shared_state_errors_total{operation="amend"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipecat_realtime_twilio.logs import field
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.shared_state import FAILED, SharedState
from pipecat_realtime_twilio.runner.store import describe_error
from pipecat_realtime_twilio.runner.stream_handoff import keep_bounded

if TYPE_CHECKING:
    from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper

PARKED_TTL_SECS = 3600
"""How long parked amendments, and which instance made a call's record, stay in Redis."""

RETAKE_SECS = 2.0
"""After making a record, when its maker looks again for amendments parked meanwhile."""

CONFLICT_TRIES = 5
"""Most tries to amend a stored record that others amend at the same time."""

STORE_RETRY_SECS = (1.0, 30.0)
"""The first and the longest wait before amending a stored record again (the database failed)."""

_PARKED_AT_ONCE = 1000
_RECORDED_KEPT = 10_000


class StreamEventAmendment(BaseModel):
    """A stream status event that came after the call's record was made."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["stream_event"] = "stream_event"
    event: dict[str, Any]

    def apply(self, record: CallRecord) -> None:
        """Add the event to ``record.stream_events``, in Twilio's time order, unless it is there.

        Args:
            record: The record, changed in place.
        """
        events, at = record.stream_events, _at(self.event)
        if any(_same_event(self.event, e) for e in events):
            return  # a stream has one of each event: Twilio's callback came again
        position = len(events)  # after the last event not later than this one
        while at is not None and position and (_at(events[position - 1]) or 0.0) > at:
            position -= 1
        events.insert(position, dict(self.event))


class RecordingUrlAmendment(BaseModel):
    """Twilio's recording of the call is ready at ``url``."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["twilio_recording_url"] = "twilio_recording_url"
    url: str

    def apply(self, record: CallRecord) -> None:
        """Set ``record.twilio_recording_url``.

        Args:
            record: The record, changed in place.
        """
        record.twilio_recording_url = self.url


Amendment = Annotated[StreamEventAmendment | RecordingUrlAmendment, Field(discriminator="kind")]
"""A change of a call's record that came after it was made, as data."""

_AMENDMENT: TypeAdapter[StreamEventAmendment | RecordingUrlAmendment] = TypeAdapter(Amendment)


def apply_all(record: CallRecord, amendments: Iterable[Amendment]) -> None:
    """Apply ``amendments`` to ``record``, in order.

    Args:
        record: The record, changed in place.
        amendments: The amendments.
    """
    for amendment in amendments:
        amendment.apply(record)


class RecordAmender:
    """Puts late news of a call on its record, here, through Redis, or in the store.

    Example::

        amender = RecordAmender(records, shared)
        await amender.amend(call_sid, RecordingUrlAmendment(url=url))
        amender.fill(record)  # when a record is made: what waited for it
    """

    def __init__(self, records: RecordKeeper, shared: SharedState):
        """Initialize it; it listens for amendments parked by other instances.

        Args:
            records: The runner's record keeping (its finished records and store).
            shared: What instances share (Redis with ``REDIS_URL``).
        """
        self._records = records
        self._shared = shared
        shared.on_amendment = self._parked_elsewhere
        self._early: OrderedDict[str, list[Amendment]] = OrderedDict()
        self._recorded: OrderedDict[str, None] = OrderedDict()  # records made here
        self._tasks: set[asyncio.Task] = set()

    async def amend(self, call_sid: str, amendment: Amendment) -> str:
        """Put ``amendment`` on the call's record, wherever that is.

        Args:
            call_sid: The call.
            amendment: What changes.

        Returns:
            ``amended`` (the record here), ``stored`` (the stored record),
            ``parked`` (in Redis, for the instance that makes or holds the record),
            or ``waiting`` (here, until the record is made here). What is parked
            for a record not made yet waits here too.
        """
        if self._records.amend_with(call_sid, amendment.apply):
            return "amended"
        # Kept here first, before Redis is asked: a call about to run or be recorded here
        # takes it at once (what is parked as well then changes nothing: amendments are
        # idempotent).
        keep_bounded(self._early, call_sid, [*self._early.get(call_sid, []), amendment])
        where = "waiting"
        if self._shared.enabled:
            recorder = await self._ask(lambda r: r.get(self._shared.key("recorded", call_sid)))
            if recorder is not FAILED:
                maker = _text(recorder) if recorder is not None else None
                mine = maker == self._shared.instance_id or call_sid in self._recorded
                if maker is not None and not mine and await self._alive(maker):
                    if await self._park(call_sid, [amendment]):
                        return "parked"  # for the instance that made the record
                else:
                    live = maker is None and await self._line_held(call_sid)
                    if not live and await self._amend_stored(call_sid, [amendment]):
                        return "stored"
                    if await self._park(call_sid, [amendment]):
                        where = "parked"  # for whoever makes the record: perhaps this instance
        return where

    def take_stream_events(self, call_sid: str) -> list[dict[str, Any]]:
        """The stream events that came here before the call ran, taken from what waits.

        Args:
            call_sid: The call, about to run or be recorded.

        Returns:
            The events, oldest first.
        """
        waiting = self._early.pop(call_sid, [])
        events = [a.event for a in waiting if isinstance(a, StreamEventAmendment)]
        rest = [a for a in waiting if not isinstance(a, StreamEventAmendment)]
        if rest:
            keep_bounded(self._early, call_sid, rest)
        return [dict(event) for event in events]

    def fill(self, record: CallRecord) -> None:
        """A record was just made here: put on it what waited here, then what waits in Redis.

        What waited in this process goes on the record as made; what was parked in
        Redis amends it (one revision higher) right after, and again a moment later.

        Args:
            record: The call's record, just made (and about to be kept).
        """
        apply_all(record, self._early.pop(record.call_sid, []))
        if not self._shared.enabled:
            return
        keep_bounded(self._recorded, record.call_sid, None, _RECORDED_KEPT)
        key, me = self._shared.key("recorded", record.call_sid), self._shared.instance_id
        self._spawn(self._ask(lambda r: r.set(key, me, ex=PARKED_TTL_SECS)))
        self._spawn(self._take_parked(record.call_sid, again_after=RETAKE_SECS))

    async def close(self) -> None:
        """Stop the background work (amendments still parked stay in Redis)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    #
    # parked in Redis
    #

    async def _park(self, call_sid: str, amendments: list[Amendment]) -> bool:
        """Park ``amendments`` in Redis and tell the instances; whether it worked."""
        key = self._shared.key("amend", call_sid)
        values = [_AMENDMENT.dump_json(a).decode() for a in amendments]

        async def push(redis: Any) -> Any:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *values)
                pipe.expire(key, PARKED_TTL_SECS)
                return await pipe.execute()

        if await self._ask(push) is FAILED:
            return False
        await self._shared.amendment_parked(call_sid)
        logger.info(f"Call {field(call_sid, 40)}: late news of it parked for its record's instance")
        return True

    def _parked_elsewhere(self, call_sid: str) -> None:
        """Another instance parked amendments: take them if the record is (or was) made here."""
        if call_sid in self._recorded:
            self._spawn(self._take_parked(call_sid))

    async def _take_parked(self, call_sid: str, again_after: float | None = None) -> None:
        """Take the amendments parked for the call and put them on its record (once more later)."""
        key = self._shared.key("amend", call_sid)
        while True:
            parked = await self._ask(lambda r: r.lpop(key, _PARKED_AT_ONCE))
            amendments = _read(call_sid, parked if parked is not FAILED else None)
            change = _applying(amendments)
            if amendments and not self._records.amend_with(call_sid, change):
                if not await self._amend_stored(call_sid, amendments):
                    logger.warning(
                        f"Call {field(call_sid, 40)}: its record is neither in memory nor stored "
                        "yet; its late news waits in Redis again"
                    )
                    await self._park(call_sid, amendments)
                    return
            if again_after is None:
                return
            await asyncio.sleep(again_after)
            again_after = None

    #
    # the stored record
    #

    async def _amend_stored(self, call_sid: str, amendments: list[Amendment]) -> bool:
        """Amend the stored record; False if none is stored (the database failing: retried)."""
        try:
            return await self._compare_and_save(call_sid, amendments)
        except Exception as error:  # the driver's errors, not only SQLAlchemy's
            logger.warning(
                f"Call {field(call_sid, 40)}: could not amend its stored record "
                f"({describe_error(error)}); trying again"
            )
            self._spawn(self._retry_stored(call_sid, amendments))
            return True

    async def _compare_and_save(self, call_sid: str, amendments: list[Amendment]) -> bool:
        store = self._records.store
        for _ in range(CONFLICT_TRIES):
            stored = await store.aget(call_sid)
            if stored is None:
                return False
            before = stored.to_dict()
            record = CallRecord.from_dict(stored.to_dict())
            apply_all(record, amendments)
            if record.to_dict() == before:
                return True  # nothing new
            record.revision = stored.revision + 1
            record.webhook_delivered = False
            if await store.asave_if(record, revision=stored.revision):
                logger.info(f"Call {field(call_sid, 40)}: its stored record amended")
                self._records.stored(record)  # to the webhook
                return True
        raise RuntimeError(f"the stored record changed {CONFLICT_TRIES} times while amending it")

    async def _retry_stored(self, call_sid: str, amendments: list[Amendment]) -> None:
        delay, longest = STORE_RETRY_SECS
        deadline = time.monotonic() + PARKED_TTL_SECS
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
            with contextlib.suppress(Exception):
                if await self._compare_and_save(call_sid, amendments):
                    return
        logger.error(
            f"Call {field(call_sid, 40)}: its stored record could not be amended; lost: "
            f"{field([a.model_dump() for a in amendments], 2000)}"
        )

    #
    # helpers
    #

    async def _alive(self, instance: str) -> bool:
        """Whether ``instance`` is in the registry (so it takes what is parked for it)."""
        return await self._shared.alive(instance)

    async def _line_held(self, call_sid: str) -> bool:
        """Whether an instance holds the call's line: it runs, or is about to, or ends there."""
        held = await self._ask(lambda r: r.hexists(self._shared.key("lines", "owner"), call_sid))
        return held is not FAILED and bool(held)

    async def _ask(self, request: Any) -> Any:
        return await self._shared.ask("amend", request)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _applying(amendments: list[Amendment]) -> Callable[[CallRecord], None]:
    return lambda record: apply_all(record, amendments)


def _at(event: dict[str, Any]) -> float | None:
    at = event.get("at")
    return float(at) if isinstance(at, int | float) else None


def _same_event(event: dict[str, Any], other: dict[str, Any]) -> bool:
    return all(event.get(k) == other.get(k) for k in ("event", "stream_sid", "error"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read(call_sid: str, parked: list[Any] | None) -> list[Amendment]:
    """The parked amendments Redis gave back; unreadable ones logged and dropped."""
    amendments: list[Amendment] = []
    for value in parked or []:
        try:
            amendments.append(_AMENDMENT.validate_json(value))
        except ValidationError:
            logger.warning(
                f"Call {field(call_sid, 40)}: dropped an unreadable amendment {field(value)}"
            )
    return amendments
