#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What the runner's instances share: used stream tokens, calls, the account's lines, the registry.

With ``REDIS_URL`` it lives in Redis (``redis.asyncio``), under ``REDIS_PREFIX``:

- ``token:{signature}``: a stream token's use (``SET NX EXAT`` its expiry), so a
  token is good once across every instance.
- ``call:{CallSid}``: a call that had its call (a day), for refusing replays.
- ``lines`` and ``lines:owner``: the account's lines as leases (:mod:`.instances`),
  capped by ``MAX_CALLS_TOTAL``. A webhook's reservation holds a short lease; a
  streaming call's lease (:data:`LEASE_SECS`) is renewed by the heartbeat, so the
  lines of an instance that crashed free themselves.
- the channel ``streams``: a stream that started on an instance without a
  pre-warmed call for it is announced there, and the instance that pre-warmed it
  closes that session at once (``on_stream_elsewhere``); so is a stream that never
  came, failed by another instance than the webhook's (``on_stream_failed``);
  and late news of a call parked for the instance holding its record (``on_amendment``,
  :mod:`.amendments`).
- ``action:{CallSid}`` and ``awaiting:{CallSid}``: what a call's ``<Connect action>``
  answers, and the calls whose streams have not started (:mod:`.stream_handoff`).
- ``instances`` and ``instances:seen``: the registry (:class:`~.instances.InstanceInfo`),
  refreshed by the heartbeat every :data:`HEARTBEAT_SECS`.

Without ``REDIS_URL`` the same interface keeps it all in this process (one
instance, as before; ``MAX_CALLS_TOTAL`` then caps this process).

Every Redis operation has :data:`OPERATION_TIMEOUT_SECS`; one that fails is
counted (``prt_shared_state_errors_total{operation}``), logged at most every few
seconds, and the instance goes on with what it knows itself, so calls are still
answered. What that gives up while Redis is unreachable: a token is refused only
if it was used on this instance (a replay to another one would pass); a replayed
webhook is recognised only here (and by the record store); ``MAX_CALLS_TOTAL``
caps each instance's own lines, so the account may go over it; a stream that
lands elsewhere leaves this instance's pre-warmed session open until
``PREWARM_TIMEOUT_SECS``; the registry shows this instance alone, so a draining
instance answers the busy message instead of sending callers to another. For
:data:`BACKOFF_SECS` after a failure Redis is not asked (each operation falls
back at once, and is counted), so a caller never waits on a dead Redis.
"""

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pipecat_realtime_twilio.logs import Throttled, field
from pipecat_realtime_twilio.runner.instances import (
    COUNT_LINES,
    DEREGISTER,
    FREE_LINE,
    INSTANCE_TTL_SECS,
    READ_REGISTRY,
    REGISTER,
    RENEW_LINES,
    TAKE_LINE,
    InstanceInfo,
    default_instance_id,
    instance_info,
    parse_registry,
)
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.settings import Settings

OPERATION_TIMEOUT_SECS = 0.5
"""Most seconds one Redis operation may take before the instance falls back."""

BACKOFF_SECS = 2.0
"""After a failed Redis operation, how long operations fall back without asking."""

LEASE_SECS = 30.0
"""A streaming call's line lease; the heartbeat renews it."""

HEARTBEAT_SECS = 5.0
"""How often the registry entry and the streaming calls' leases are renewed."""

CALL_TTL_SECS = 86_400
"""How long a call that had its call is remembered in Redis."""

CALLS_REMEMBERED = 100_000
"""Most CallSids this process remembers itself as having had their call."""

_T = TypeVar("_T")
FAILED: Any = object()
"""What :meth:`SharedState.ask` returns when Redis could not answer."""


class SharedState:
    """The state instances share: in Redis with ``REDIS_URL``, else in this process."""

    def __init__(self, settings: Settings, metrics: RunnerMetrics):
        """Initialize it; nothing is connected until :meth:`start` or the first operation.

        Args:
            settings: ``REDIS_URL``, ``REDIS_PREFIX``, ``MAX_CALLS_TOTAL``, ``INSTANCE_ID``.
            metrics: Where failures, the account's lines and the instances are counted.
        """
        self.instance_id = settings.instance_id or default_instance_id()
        self.on_stream_elsewhere: Callable[[str], None] | None = None
        self.on_stream_failed: Callable[[str], None] | None = None
        self.on_amendment: Callable[[str], None] | None = None
        self._settings = settings
        self._metrics = metrics
        self._prefix = settings.redis_prefix
        self._cap = settings.max_calls_total
        self._redis: Redis | None = None
        if settings.redis_url is not None:
            self._redis = Redis.from_url(
                settings.redis_url,
                socket_timeout=OPERATION_TIMEOUT_SECS,
                socket_connect_timeout=OPERATION_TIMEOUT_SECS,
                retry=Retry(NoBackoff(), 1),
            )
        self._warnings = Throttled()
        self._down_until = 0.0  # monotonic: until then, Redis is not asked
        self._ok = False  # the last Redis operation succeeded
        self._used: dict[str, int] = {}  # token key -> its expiry (Unix)
        self._calls: OrderedDict[str, None] = OrderedDict()
        # This instance's lines: CallSid -> lease expiry, or None for a streaming call
        # (renewed by the heartbeat). Without Redis, the account's lines.
        self._lines: dict[str, float | None] = {}
        self._describe: Callable[[], dict[str, Any]] = lambda: {}
        self._started_at = time.time()
        self._tasks: list[asyncio.Task] = []
        self._pending: set[asyncio.Task] = set()

    @property
    def enabled(self) -> bool:
        """Whether the state is shared through Redis (``REDIS_URL``)."""
        return self._redis is not None

    @property
    def status(self) -> str:
        """``off`` (no ``REDIS_URL``), ``ok``, or ``unreachable`` (the last operation failed)."""
        if self._redis is None:
            return "off"
        return "ok" if self._ok else "unreachable"

    #
    # lifecycle
    #

    async def start(self, describe: Callable[[], dict[str, Any]]) -> None:
        """Register this instance and start the heartbeat and the handover listener.

        Args:
            describe: This instance's ``active``, ``reserved``, ``max_calls`` and
                ``draining``, for its registry entry.
        """
        self._describe = describe
        if self._redis is None:
            self._metrics.instances.set(1)
            return
        if self._tasks:
            return
        await self.heartbeat()
        self._tasks = [
            asyncio.create_task(self._beat(), name="shared-state-heartbeat"),
            asyncio.create_task(self._listen(), name="shared-state-listener"),
        ]

    async def close(self) -> None:
        """Leave the registry, stop the background work, close the connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=OPERATION_TIMEOUT_SECS * 2)
        if self._redis is not None:
            keys = self._registry_keys()
            await self.ask("deregister", lambda r: r.eval(DEREGISTER, 2, *keys, self.instance_id))
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    #
    # stream tokens and calls
    #

    async def use_token(self, key: str, expiry: int) -> bool:
        """Use a stream token up: True the first time across every instance, else False.

        Args:
            key: The token's signature (what makes it unique).
            expiry: Its expiry (Unix time); the use is forgotten after it.
        """
        now = time.time()
        for used, until in list(self._used.items()):
            if until < now:
                del self._used[used]
        if key in self._used:
            return False
        self._used[key] = expiry
        if self._redis is None:
            return True
        result = await self.ask(
            "token", lambda r: r.set(self.key("token", key), 1, nx=True, exat=max(expiry, 1))
        )
        return result is FAILED or bool(result)  # Redis down: only this instance's uses count

    def remember_call(self, call_sid: str) -> None:
        """Remember that ``call_sid`` had its call (here, and in Redis in the background).

        Args:
            call_sid: The call.
        """
        self._calls[call_sid] = None
        self._calls.move_to_end(call_sid)
        while len(self._calls) > CALLS_REMEMBERED:
            self._calls.popitem(last=False)
        if self._redis is not None:
            key = self.key("call", call_sid)
            self.background(self.ask("call", lambda r: r.set(key, 1, ex=CALL_TTL_SECS)))

    async def call_seen(self, call_sid: str) -> bool:
        """Whether ``call_sid`` had its call, on this instance or (with Redis) any other.

        Args:
            call_sid: The call.
        """
        if call_sid in self._calls:
            return True
        if self._redis is None:
            return False
        result = await self.ask("call", lambda r: r.exists(self.key("call", call_sid)))
        return result is not FAILED and bool(result)

    #
    # the account's lines (MAX_CALLS_TOTAL)
    #

    async def take_line(self, call_sid: str, lease_secs: float | None = None) -> bool:
        """Take a line of the account for ``call_sid``, or renew or take over its line.

        Args:
            call_sid: The call.
            lease_secs: Hold it this long (a webhook's reservation); None for a
                streaming call, whose lease the heartbeat renews until :meth:`free_line`.

        Returns:
            False if ``MAX_CALLS_TOTAL`` lines are in use (the call's own excepted).
        """
        now = time.time()
        expiry = now + (LEASE_SECS if lease_secs is None else lease_secs)
        if self._redis is not None:
            count = await self._script(
                TAKE_LINE, now, call_sid, expiry, self._cap or 0, self.instance_id
            )
            if count is not None:
                if count < 0:
                    return False
                self._lines[call_sid] = None if lease_secs is None else expiry
                return True
        self._prune(now)  # without Redis (or with it down): this instance's own lines
        if call_sid not in self._lines and self._cap is not None and len(self._lines) >= self._cap:
            return False
        self._lines[call_sid] = None if lease_secs is None else expiry
        if self._redis is None:
            self._metrics.account_calls.set(len(self._lines))
        return True

    def free_line(self, call_sid: str) -> None:
        """Free ``call_sid``'s line (in Redis in the background, if this instance holds it).

        Args:
            call_sid: The call.
        """
        if self._lines.pop(call_sid, FAILED) is FAILED:
            return
        if self._redis is None:
            self._metrics.account_calls.set(len(self._lines))
            return
        self.background(self._script(FREE_LINE, time.time(), call_sid, self.instance_id))

    def forget_line(self, call_sid: str) -> None:
        """Forget ``call_sid``'s line here only: another instance took it over.

        Args:
            call_sid: The call.
        """
        self._lines.pop(call_sid, None)

    async def account_full(self) -> bool:
        """Whether ``MAX_CALLS_TOTAL`` lines are in use now (False without a cap)."""
        if self._cap is None:
            return False
        if self._redis is not None:
            count = await self._script(COUNT_LINES, time.time())
            if count is not None:
                return count >= self._cap
        self._prune(time.time())
        return len(self._lines) >= self._cap

    #
    # pre-warmed calls handed over
    #

    async def stream_started(self, call_sid: str) -> None:
        """Say that ``call_sid``'s stream started here without a pre-warmed call for it.

        The instance that pre-warmed it (if another) closes its session at once.

        Args:
            call_sid: The call.
        """
        await self._publish(call_sid, "started")

    async def stream_failed(self, call_sid: str) -> None:
        """Say that ``call_sid``'s stream never came: its webhook's instance frees it at once.

        Args:
            call_sid: The call.
        """
        await self._publish(call_sid, "failed")

    async def amendment_parked(self, call_sid: str) -> None:
        """Say that late news of ``call_sid`` waits in Redis for the instance holding its record.

        Args:
            call_sid: The call.
        """
        await self._publish(call_sid, "amend")

    async def _publish(self, call_sid: str, event: str) -> None:
        if self._redis is None:
            return  # one instance: nobody else pre-warmed it
        message = json.dumps({"call_sid": call_sid, "instance": self.instance_id, "event": event})
        await self.ask("publish", lambda r: r.publish(self.key("streams"), message))

    async def _listen(self) -> None:
        assert self._redis is not None
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.key("streams"))
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._handover(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis went away: listen again in a moment
                self._failed("subscribe", e)
                await asyncio.sleep(BACKOFF_SECS)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), OPERATION_TIMEOUT_SECS)

    def _handover(self, data: Any) -> None:
        try:
            message = json.loads(data)
            call_sid, instance = str(message["call_sid"]), str(message["instance"])
            told = {
                "started": self.on_stream_elsewhere,
                "failed": self.on_stream_failed,
                "amend": self.on_amendment,
            }
            handler = told[str(message.get("event", "started"))]
        except (ValueError, KeyError, TypeError, AttributeError):
            self._warnings.warning("message", f"Ignored a malformed handover message {field(data)}")
            return
        if instance != self.instance_id and handler is not None:
            try:
                handler(call_sid)
            except Exception:  # one handler's bug must not stop the listening
                logger.exception(f"Handling a handover message for call {field(call_sid, 40)}")

    #
    # the registry
    #

    def info(self) -> InstanceInfo:
        """This instance's registry entry, as of now."""
        return instance_info(self.instance_id, self._settings, self._started_at, self._describe())

    async def instances(self) -> list[InstanceInfo]:
        """The instances alive in the registry (this one alone without Redis, or with it down)."""
        if self._redis is not None:
            keys = self._registry_keys()
            read = READ_REGISTRY
            values = await self.ask("registry", lambda r: r.eval(read, 2, *keys, INSTANCE_TTL_SECS))
            if values is not FAILED:
                found = parse_registry(values)
                self._metrics.instances.set(len(found))
                return found
        return [self.info()]

    async def alive(self, instance_id: str) -> bool:
        """Whether ``instance_id`` is in the registry now (False if Redis cannot say).

        Args:
            instance_id: The instance.
        """
        return any(i.id == instance_id for i in await self.instances())

    async def another_ready(self) -> bool:
        """Whether another instance in the registry takes new calls now."""
        return any(i.ready for i in await self.instances() if i.id != self.instance_id)

    async def heartbeat(self) -> None:
        """Renew this instance's registry entry and its streaming calls' leases now."""
        if self._redis is None:
            return
        entry = self.info().to_json()
        keys = self._registry_keys()
        await self.ask("registry", lambda r: r.eval(REGISTER, 2, *keys, self.instance_id, entry))
        now = time.time()
        self._prune(now)
        streaming = [sid for sid, expiry in self._lines.items() if expiry is None]
        await self._script(RENEW_LINES, now, now + LEASE_SECS, self.instance_id, *streaming)
        await self.instances()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECS)
            await self.heartbeat()

    #
    # Redis, with a deadline and a fallback
    #

    def key(self, *parts: str) -> str:
        """The Redis key of ``parts``, under ``REDIS_PREFIX``."""
        return self._prefix + ":".join(parts)

    def _registry_keys(self) -> tuple[str, str]:
        return self.key("instances"), self.key("instances", "seen")

    def _line_keys(self) -> tuple[str, str]:
        return self.key("lines"), self.key("lines", "owner")

    def _prune(self, now: float) -> None:
        for call_sid, expiry in list(self._lines.items()):
            if expiry is not None and expiry < now:
                del self._lines[call_sid]

    async def ask(self, operation: str, request: Callable[[Redis], Awaitable[_T]]) -> _T | Any:
        """Run one Redis operation within its deadline; :data:`FAILED` (counted) if it could not."""
        if self._redis is None:
            return FAILED
        if time.monotonic() < self._down_until:
            self._metrics.shared_state_errors.labels(operation).inc()
            return FAILED
        try:
            result = await asyncio.wait_for(request(self._redis), OPERATION_TIMEOUT_SECS)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._failed(operation, e)
            self._down_until = time.monotonic() + BACKOFF_SECS
            return FAILED
        self._ok = True
        return result

    def _failed(self, operation: str, error: BaseException) -> None:
        self._ok = False
        self._metrics.shared_state_errors.labels(operation).inc()
        self._warnings.warning(
            "redis",
            f"Shared state: Redis {operation} failed ({type(error).__name__}: {field(error)}); "
            "going on with what this instance knows",
        )

    async def _script(self, script: str, now: float, *args: Any) -> int | None:
        """Run a script on the lines; the lines in use (or -1: refused), None if Redis failed."""
        keys = self._line_keys()
        count = await self.ask("lines", lambda r: r.eval(script, 2, *keys, now, *args))
        if count is FAILED:
            return None
        if int(count) >= 0:
            self._metrics.account_calls.set(int(count))
        return int(count)

    def background(self, operation: Awaitable[Any]) -> None:
        """Run a Redis write in the background (nobody waits for it)."""
        task = asyncio.ensure_future(operation)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
