#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The instance registry's entries, and the Lua scripts that keep the account's lines.

Each instance sharing ``REDIS_URL`` writes its :class:`InstanceInfo` in the hash
``{REDIS_PREFIX}instances`` (a field per instance) and the time of that write, on
Redis' own clock, in the sorted set ``{REDIS_PREFIX}instances:seen``, both renewed by
its heartbeat (:data:`REGISTER`). Reading the registry (:data:`READ_REGISTRY`) drops
the entries not renewed within :data:`INSTANCE_TTL_SECS`, so an instance that stops
renewing (crashed, cut off) leaves it by itself; one read is one script, whatever
else the database holds, and the instances' clocks need not agree.

The account's lines (``MAX_CALLS_TOTAL``) are leases in the sorted set
``{REDIS_PREFIX}lines``: member the CallSid, score the lease's expiry (Unix
time); the hash ``{REDIS_PREFIX}lines:owner`` says which instance holds each, so
an instance frees only the lines it holds (a stream that moved to another
instance took its line over). The scripts below run atomically in Redis: expired
leases are pruned first, then a line is taken, renewed or freed.
"""

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.settings import Settings

INSTANCE_TTL_SECS = 15
"""Seconds an instance stays in the registry after its last heartbeat."""

REGISTER = """
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(now[1]) + tonumber(now[2]) / 1000000, ARGV[1])
return 1
"""
"""Write an instance's entry (KEYS: the hash, the sorted set; ARGV: id, JSON entry)."""

READ_REGISTRY = """
local now = redis.call('TIME')
local oldest = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest)
for _, id in ipairs(stale) do
  redis.call('HDEL', KEYS[1], id)
end
if #stale > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest)
end
return redis.call('HVALS', KEYS[1])
"""
"""The entries renewed within ARGV[1] seconds; older ones are removed."""

DEREGISTER = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
"""Remove an instance's entry (it stops)."""


def default_instance_id() -> str:
    """This process's name when ``INSTANCE_ID`` is not set: ``hostname-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class InstanceInfo:
    """One instance as the registry shows it.

    Parameters:
        id: Its ``INSTANCE_ID``.
        stream_url: Where its media streams go (``STREAM_URL``, else ``PUBLIC_URL``,
            as a websocket origin; empty when neither is set).
        started_at: Unix time it started.
        active: Calls streaming on it.
        reserved: Lines its webhooks hold for streams not started yet.
        max_calls: Its ``MAX_CALLS``.
        draining: Whether it has stopped taking calls.
        last_seen: Unix time of its last heartbeat.
        version: The package version it runs.
    """

    id: str
    stream_url: str
    started_at: float
    active: int
    reserved: int
    max_calls: int
    draining: bool
    last_seen: float
    version: str

    @property
    def ready(self) -> bool:
        """Whether it takes new calls: not draining, and a line free."""
        return not self.draining and self.active + self.reserved < self.max_calls

    def to_json(self) -> str:
        """The entry as stored in Redis."""
        return json.dumps(asdict(self), separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        """The entry as the API shows it."""
        return asdict(self)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "InstanceInfo | None":
        """Read an entry; None if it is missing or not one (logged by no one: skipped).

        Args:
            text: The stored JSON.
        """
        if text is None:
            return None
        try:
            data = json.loads(text)
            return cls(
                id=str(data["id"]),
                stream_url=str(data["stream_url"]),
                started_at=float(data["started_at"]),
                active=int(data["active"]),
                reserved=int(data["reserved"]),
                max_calls=int(data["max_calls"]),
                draining=bool(data["draining"]),
                last_seen=float(data["last_seen"]),
                version=str(data["version"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def instance_info(
    instance_id: str, settings: Settings, started_at: float, state: dict[str, Any]
) -> InstanceInfo:
    """An instance's registry entry, as of now.

    Args:
        instance_id: Its name.
        settings: Its settings (``STREAM_URL`` or ``PUBLIC_URL``, ``MAX_CALLS``).
        started_at: Unix time it started.
        state: Its ``active``, ``reserved``, ``max_calls`` and ``draining``.
    """
    try:
        stream_url = settings.websocket_origin
    except SettingsError:  # neither STREAM_URL nor PUBLIC_URL
        stream_url = ""
    try:
        package_version = version("pipecat-realtime-twilio")
    except PackageNotFoundError:
        package_version = "unknown"
    return InstanceInfo(
        id=instance_id,
        stream_url=stream_url,
        started_at=started_at,
        active=int(state.get("active", 0)),
        reserved=int(state.get("reserved", 0)),
        max_calls=int(state.get("max_calls", settings.max_calls)),
        draining=bool(state.get("draining", False)),
        last_seen=time.time(),
        version=package_version,
    )


def parse_registry(values: list[Any]) -> list[InstanceInfo]:
    """The registry's entries as :data:`READ_REGISTRY` returns them, by id (unreadable skipped).

    Args:
        values: The stored JSON entries.
    """
    found = [InstanceInfo.from_json(value) for value in values]
    return sorted((i for i in found if i is not None), key=lambda i: i.id)


_PRUNE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, member in ipairs(expired) do
  redis.call('HDEL', KEYS[2], member)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
end
"""

TAKE_LINE = (
    _PRUNE
    + """
-- ARGV: now, call_sid, lease expiry, cap (0: none), instance
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  local cap = tonumber(ARGV[4])
  if cap > 0 and redis.call('ZCARD', KEYS[1]) >= cap then
    return -1
  end
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[5])
return redis.call('ZCARD', KEYS[1])
"""
)
"""Take (or renew, or take over) a line; -1 at the cap, else the lines in use."""

RENEW_LINES = (
    _PRUNE
    + """
-- ARGV: now, lease expiry, instance, call_sid...
for i = 4, #ARGV do
  local owner = redis.call('HGET', KEYS[2], ARGV[i])
  if (not owner) or owner == ARGV[3] then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[3])
  end
end
return redis.call('ZCARD', KEYS[1])
"""
)
"""Renew this instance's streaming calls' leases (a pruned one comes back); the lines in use."""

FREE_LINE = (
    _PRUNE
    + """
-- ARGV: now, call_sid, instance
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return redis.call('ZCARD', KEYS[1])
"""
)
"""Free a line if this instance holds it; the lines in use."""

COUNT_LINES = (
    _PRUNE
    + """
return redis.call('ZCARD', KEYS[1])
"""
)
"""The lines in use, expired ones pruned."""
