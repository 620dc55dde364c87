#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A durable local outbox for call records on their way to the database.

Every finished call's record is written here first, one JSON file per call (the
record's own JSON, :meth:`~pipecat_realtime_twilio.runner.records.CallRecord.to_json`),
atomically: a temporary file, ``fsync``, ``os.replace``, ``fsync`` of the folder.
The file is removed only once the database has stored the record, so a record
outlives a locked, unreachable or failing database and a crash or restart of the
runner: the next runner on the same folder picks it up.
:class:`~pipecat_realtime_twilio.runner.bookkeeping.RecordKeeper` drives it.

Why a folder of files rather than a second SQLite database: the outbox has to work
exactly when the database does not, and a second SQLite file would share the
failures of a SQLite ``DATABASE_URL`` (locking, journals, a folder it cannot
write). Adding a file takes no lock, a file is readable with ``cat``, and several
processes may share the folder: a process takes a record with an advisory lock
(``flock``) while it stores it, so two never store the same file at once.

Where (``OUTBOX_DIR``, see `default_outbox_dir`): by default beside a SQLite
database file (``calls.db`` → ``calls.db-outbox/``, on the same volume),
``outbox/`` in the working directory for other databases, and a temporary folder
for an in-memory database (nothing outlives that anyway).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from loguru import logger
from sqlalchemy.engine import make_url

from pipecat_realtime_twilio.runner.records import CallRecord

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_STALE_TEMP_SECS = 3600.0
_CLAIM_WAIT_SECS = 60.0  # most a newer record waits for the earlier one's claim


def default_outbox_dir(database_url: str) -> Path | None:
    """Return where the outbox of ``database_url`` goes when ``OUTBOX_DIR`` is not set.

    Args:
        database_url: The SQLAlchemy URL of the call records' database.

    Returns:
        ``FILE-outbox`` beside a SQLite file, ``outbox`` in the working directory
        for other databases, or None for an in-memory SQLite database (use a
        temporary folder).
    """
    parsed = make_url(database_url)
    if parsed.get_backend_name() != "sqlite":
        return Path("outbox")
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):  # a SQLite URI: file:NAME?options
        database = database.removeprefix("file:").split("?", 1)[0]
    return Path(f"{Path(database).expanduser()}-outbox")


def _file_name(call_sid: str) -> str:
    """The outbox file of a call: its CallSid, or a digest of an unusual one."""
    if _SAFE_NAME.fullmatch(call_sid):
        return f"{call_sid}.json"
    return f"sid-{hashlib.sha256(call_sid.encode()).hexdigest()[:40]}.json"


@dataclass
class Claim:
    """A record taken from the outbox, locked against other processes until released.

    Parameters:
        path: Its file.
        record: The record read from it.
    """

    path: Path
    record: CallRecord
    _file: BinaryIO

    def release(self) -> None:
        """Let other processes take the record again (if its file is still there)."""
        self._file.close()


class Outbox:
    """A folder of call records not yet stored, one JSON file each.

    Every method blocks on the file system (run them in a worker thread from the
    event loop) and is safe to call from several threads and processes.

    Example::

        outbox = Outbox("calls.db-outbox")
        outbox.put(record)
        for path in outbox.paths():
            claim = outbox.claim(path)
            if claim is not None:
                try:
                    store.save(claim.record)
                    outbox.remove(claim)
                finally:
                    claim.release()
    """

    def __init__(self, directory: str | Path):
        """Open the outbox, creating its folder if missing.

        Args:
            directory: The folder.

        Raises:
            OSError: If the folder cannot be created or written to.
        """
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(self.directory))
        self._sweep_temporary_files()

    def put(self, record: CallRecord) -> Path:
        """Write ``record`` to the outbox, replacing an earlier one of the same call.

        The file is complete and on disk when this returns, or absent. A process
        storing the earlier one (holding its claim) is waited for, so that removing
        the stored file cannot remove this one.

        Args:
            record: The record.

        Returns:
            Its file.
        """
        path = self.directory / _file_name(record.call_sid)
        try:
            earlier = open(path, "rb")
        except FileNotFoundError:
            return self._write(record, path)
        try:
            deadline, delay = time.monotonic() + _CLAIM_WAIT_SECS, 0.005
            while True:
                try:
                    fcntl.flock(earlier.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:  # claimed: the earlier one is being stored
                    if time.monotonic() >= deadline:
                        logger.warning(f"{path} stayed claimed for {_CLAIM_WAIT_SECS:g} s")
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
            return self._write(record, path)
        finally:
            earlier.close()

    def _write(self, record: CallRecord, path: Path) -> Path:
        """Write ``record`` to ``path`` atomically (the caller holds any claim on it)."""
        temporary = self.directory / f".{path.stem}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temporary, "wb") as file:
                file.write(record.to_json().encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        self._sync_directory()
        return path

    def paths(self) -> list[Path]:
        """Return the files of the records in the outbox, oldest first."""
        found = []
        for path in self.directory.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):  # stored meanwhile
                found.append((path.stat().st_mtime_ns, path.name, path))
        return [path for *_, path in sorted(found)]

    def count(self) -> int:
        """Return how many records are in the outbox."""
        return sum(1 for _ in self.directory.glob("*.json"))

    def claim(self, path: Path) -> Claim | None:
        """Take the record in ``path``, unless another process holds it or it is gone.

        An unreadable file is renamed ``….json.unreadable`` (and logged) so that it
        does not block the others.

        Args:
            path: A file from :meth:`paths`.

        Returns:
            The claim (release it when done), or None.
        """
        try:
            file = open(path, "rb")
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()  # another process is storing it
                return None
            if os.fstat(file.fileno()).st_ino != path.stat().st_ino:
                file.close()  # stored and replaced (or removed) meanwhile
                return None
            text = file.read()
            record = CallRecord.from_json(text)
        except FileNotFoundError:
            file.close()
            return None
        except (ValueError, TypeError) as error:
            file.close()
            aside = path.with_name(path.name + ".unreadable")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            logger.error(f"Unreadable call record in the outbox, moved to {aside}: {error}")
            return None
        return Claim(path, record, file)

    def remove(self, claim: Claim) -> None:
        """Remove a claimed record from the outbox (it has been stored).

        Args:
            claim: The claim, not yet released.
        """
        with contextlib.suppress(FileNotFoundError):
            if os.stat(claim.path).st_ino == os.fstat(claim._file.fileno()).st_ino:
                claim.path.unlink()  # not a newer record of the call put meanwhile

    def update(self, claim: Claim) -> None:
        """Write a claimed record again, after changing it (e.g. ``webhook_delivered``).

        Args:
            claim: The claim, not yet released.
        """
        self._write(claim.record, claim.path)

    def _sync_directory(self) -> None:
        """Make the folder's entries (a rename) durable."""
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _sweep_temporary_files(self) -> None:
        """Remove temporary files a crashed writer left (old ones only: others may write)."""
        now = time.time()
        for path in self.directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _STALE_TEMP_SECS:
                    path.unlink()
