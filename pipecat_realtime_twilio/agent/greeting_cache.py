#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The greeting cache: a bot's greeting as the model spoke it, kept to play at once next time.

A bot's greeting is the same sentence on every call, yet the model takes its time
to first byte to say it. :class:`GreetingCache` keeps the 8 kHz μ-law the model
spoke it in, under a :class:`GreetingKey` (bot, engine, voice, model, text, and a
``variant`` for anything else that shapes the audio), so the next call plays it
the moment its stream starts. A different text, voice or model is a different key.

- In memory, bounded (``max_entries``, ``max_bytes``; the least recently used go first).
- On disk too when given a directory (``GREETING_CACHE_DIR``), so restarts and other
  instances reuse it: one file per key, written atomically (a temporary file renamed
  over it) and checked when read (a header naming its key, length and SHA-256); a file
  that is short, corrupt or another key's is ignored (and made again by the next put).
  The directory keeps at most ``max_entries`` files, the oldest removed first.

It is engine-neutral and does no network I/O: an agent (of either engine: a
:class:`UsesGreetingCache`) asks :meth:`GreetingCache.get` before the call and gives
:meth:`GreetingCache.put` the greeting it captured::

    cache = GreetingCache("/var/cache/greetings")
    key = GreetingKey(bot="receptionist", engine="realtime", voice="marin",
                      model="gpt-realtime", text="Hello, Acme here.")
    ulaw = cache.get(key)          # None: not made yet
    cache.put(key, captured_ulaw)  # the model's audio, whole, as it came
"""

import contextlib
import hashlib
import json
import os
import secrets
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from loguru import logger

from pipecat_realtime_twilio.audio import BYTES_PER_MS

MAX_ENTRIES = 256
"""Greetings kept (in memory, and as files on disk) by default."""

MAX_BYTES = 32 * 2**20
"""Bytes of audio kept in memory by default (32 MiB: over an hour of μ-law)."""

MAX_GREETING_MS = 30_000
"""The longest greeting kept: a longer one is spoken by the model every time."""

_MAGIC = b"prt-greeting 1\n"
_SUFFIX = ".greeting"


@dataclass(frozen=True)
class GreetingKey:
    """What a cached greeting's audio depends on.

    Parameters:
        bot: The bot's name.
        engine: The speech-to-speech engine, e.g. ``"realtime"`` or ``"live"``.
        voice: The voice it is spoken in.
        model: The model that speaks it.
        text: The greeting's words.
        variant: Anything else that shapes the audio (speed, the instructions), as
            a short digest; empty when nothing does.
    """

    bot: str
    engine: str
    voice: str
    model: str
    text: str
    variant: str = ""

    def digest(self) -> str:
        """A file-name-safe digest of the whole key (32 hex digits)."""
        data = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(data).hexdigest()[:32]


def variant_of(*parts: object) -> str:
    """A short digest of the things besides the key's fields that shape a greeting's audio.

    Args:
        *parts: E.g. the speaking speed and the instructions.

    Returns:
        16 hex digits.
    """
    data = json.dumps([str(part) for part in parts], ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()[:16]


@runtime_checkable
class UsesGreetingCache(Protocol):
    """An agent that greets from a :class:`GreetingCache` (``RealtimeAgent``, ``LiveAgent``)."""

    def greeting_key(self, bot: str) -> "GreetingKey | None":
        """The key of the agent's greeting, for ``bot`` (None: it has no greeting)."""
        ...

    def use_greeting_cache(self, cache: "GreetingCache", bot: str) -> bool:
        """Greet from ``cache`` if the greeting is in it, else fill it; whether it is in it."""
        ...


class GreetingCache:
    """Greetings' audio by :class:`GreetingKey`, in memory and optionally on disk."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        max_greeting_ms: int = MAX_GREETING_MS,
    ):
        """Initialize the cache.

        Args:
            directory: Where greetings are kept on disk too (created if missing);
                None: in memory only.
            max_entries: Most greetings kept in memory, and as files on disk.
            max_bytes: Most bytes of audio kept in memory.
            max_greeting_ms: The longest greeting kept, in milliseconds.

        Raises:
            ValueError: If a bound is not positive.
            OSError: If ``directory`` cannot be created or written to.
        """
        if max_entries <= 0 or max_bytes <= 0 or max_greeting_ms <= 0:
            raise ValueError("the greeting cache's bounds must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_greeting_bytes = max_greeting_ms * BYTES_PER_MS
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot write to {self.directory}")
        self._memory: OrderedDict[GreetingKey, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.ignored_files = 0

    def __len__(self) -> int:
        """Greetings held in memory."""
        return len(self._memory)

    @property
    def size_bytes(self) -> int:
        """Bytes of audio held in memory."""
        return self._bytes

    def get(self, key: GreetingKey) -> bytes | None:
        """The greeting's audio (8 kHz μ-law), from memory or disk; None if not made yet.

        Args:
            key: The greeting.

        Returns:
            The audio, or None (not cached, or its file is unreadable).
        """
        audio = self._memory.get(key)
        if audio is None and self.directory is not None:
            audio = self._read(key)
            if audio is not None:
                self._remember(key, audio)
        if audio is None:
            self.misses += 1
            return None
        self._memory.move_to_end(key)
        self.hits += 1
        return audio

    def put(self, key: GreetingKey, ulaw: bytes) -> bool:
        """Keep the greeting's audio: in memory, and on disk when the cache has a directory.

        A disk that cannot be written is logged; the greeting stays in memory.

        Args:
            key: The greeting.
            ulaw: Its audio, 8 kHz μ-law, whole.

        Returns:
            Whether it was kept (False: empty, or longer than the longest kept).
        """
        if not ulaw or len(ulaw) > self.max_greeting_bytes:
            return False
        ulaw = bytes(ulaw)
        self._remember(key, ulaw)
        if self.directory is not None:
            self._write(key, ulaw)
        return True

    def forget(self, key: GreetingKey) -> None:
        """Drop a greeting from memory and disk (its next use makes it again).

        Args:
            key: The greeting.
        """
        audio = self._memory.pop(key, None)
        if audio is not None:
            self._bytes -= len(audio)
        if self.directory is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()

    #
    # memory
    #

    def _remember(self, key: GreetingKey, ulaw: bytes) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._memory[key] = ulaw
        self._bytes += len(ulaw)
        while len(self._memory) > self.max_entries or (
            self._bytes > self.max_bytes and len(self._memory) > 1
        ):
            _, dropped = self._memory.popitem(last=False)
            self._bytes -= len(dropped)

    #
    # disk
    #

    def _path(self, key: GreetingKey) -> Path:
        assert self.directory is not None
        return self.directory / f"{key.digest()}{_SUFFIX}"

    def _read(self, key: GreetingKey) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            logger.warning(f"Greeting cache: cannot read {path}: {e}")
            return None
        audio = _parse(data, key, self.max_greeting_bytes)
        if audio is None:
            self.ignored_files += 1
            logger.warning(f"Greeting cache: ignored {path} (short, corrupt or another key's)")
        return audio

    def _write(self, key: GreetingKey, ulaw: bytes) -> None:
        path = self._path(key)
        header = {
            "key": asdict(key),
            "bytes": len(ulaw),
            "sha256": hashlib.sha256(ulaw).hexdigest(),
        }
        data = _MAGIC + json.dumps(header, ensure_ascii=False).encode() + b"\n" + ulaw
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)  # atomic: a reader sees the old file or the new one
        except OSError as e:
            logger.warning(f"Greeting cache: cannot write {path}: {e}")
            with contextlib.suppress(OSError):
                temporary.unlink()
            return
        self._prune_files()

    def _prune_files(self) -> None:
        """Keep at most ``max_entries`` files: remove the oldest."""
        assert self.directory is not None
        try:
            files = [(p.stat().st_mtime, p) for p in self.directory.glob(f"*{_SUFFIX}")]
        except OSError:
            return  # another instance removed one meanwhile: next time
        if len(files) <= self.max_entries:
            return
        files.sort()
        for _, path in files[: len(files) - self.max_entries]:
            with contextlib.suppress(OSError):
                path.unlink()


def _parse(data: bytes, key: GreetingKey, max_bytes: int) -> bytes | None:
    """The audio of a cache file, if it is whole and ``key``'s; else None."""
    if not data.startswith(_MAGIC):
        return None
    end = data.find(b"\n", len(_MAGIC))
    if end < 0:
        return None
    try:
        header = json.loads(data[len(_MAGIC) : end])
        size = int(header["bytes"])
        digest = str(header["sha256"])
        named = header["key"]
    except (ValueError, KeyError, TypeError):
        return None
    audio = data[end + 1 :]
    if named != asdict(key) or size != len(audio) or not 0 < size <= max_bytes:
        return None
    if hashlib.sha256(audio).hexdigest() != digest:
        return None
    return audio
