#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Where recordings are kept: a folder, or an S3 (or S3-compatible) bucket.

- :class:`LocalRecordingStore`: ``RECORDINGS_DIR/YYYY/MM/DD/CallSid.wav`` (the
  call's start, UTC), written atomically (temporary file, ``fsync``, rename),
  readable by the runner's user only.
- :class:`S3RecordingStore` (``RECORDINGS_S3_BUCKET``, the ``s3`` extra: boto3):
  ``s3://BUCKET/RECORDINGS_S3_PREFIX`` + ``YYYY/MM/DD/CallSid.wav``, boto3 in worker
  threads. A WAV is first written to ``RECORDINGS_DIR/s3-pending/`` and leaves it
  once uploaded: while S3 fails it waits there (and is served from there), and the
  upload is retried in the background, also by the next runner on that folder.

A location is the store's own string (a path, an ``s3://`` URL); reading one that
is not of the store's form gives nothing, so no request reaches a file outside it.
Old recordings are deleted by ``prune`` (local: by the file's time; S3: by
``LastModified``).
"""

import asyncio
import contextlib
import os
import re
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from pipecat_realtime_twilio.logs import field

UPLOAD_RETRY_SECS = (5.0, 300.0)
"""The first wait before a failed upload is tried again, and the longest."""

_NAME = re.compile(r"\d{4}/\d{2}/\d{2}/CA[0-9a-fA-F]{32}\.wav")  # relative to the store
_SID = re.compile(r"CA[0-9a-fA-F]{32}")


def relative_name(call_sid: str, started_at: float) -> str:
    """Where a call's recording goes inside a store: ``YYYY/MM/DD/CallSid.wav`` (UTC).

    Args:
        call_sid: The call.
        started_at: The call's start (Unix time).

    Returns:
        The name.

    Raises:
        ValueError: If ``call_sid`` is not a Call SID.
    """
    if not _SID.fullmatch(call_sid):
        raise ValueError(f"not a Call SID: '{field(call_sid, 40)}'")
    day = time.gmtime(started_at)
    return f"{day.tm_year:04d}/{day.tm_mon:02d}/{day.tm_mday:02d}/{call_sid}.wav"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: temporary file, ``fsync``, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _recordings_in(root: Path) -> list[Path]:
    """The recordings of a folder laid out as ``YYYY/MM/DD/CallSid.wav``."""
    return [
        path
        for path in root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/CA*.wav")
        if _NAME.fullmatch(path.relative_to(root).as_posix())
    ]


class RecordingStore(ABC):
    """Where recordings are kept: save, read, prune (``CallRunner.recordings``).

    A location is the store's own string (a path, an ``s3://`` URL); :meth:`read`
    returns None for one that is not of its form, so no request reaches a file
    outside the store.
    """

    def __init__(self) -> None:
        """Initialize the store, with no write in flight."""
        self._writing: dict[str, asyncio.Task[str]] = {}

    @abstractmethod
    def location(self, call_sid: str, started_at: float) -> str:
        """Where the recording of ``call_sid`` goes.

        Args:
            call_sid: The call.
            started_at: The call's start (Unix time).

        Raises:
            ValueError: If ``call_sid`` is not a Call SID.
        """

    @abstractmethod
    async def save(self, call_sid: str, wav: bytes, started_at: float) -> str:
        """Keep a call's recording.

        Args:
            call_sid: The call.
            wav: The WAV file.
            started_at: The call's start (Unix time), which dates the recording.

        Returns:
            Its location.

        Raises:
            OSError: If it could not be kept at all.
        """

    async def read(self, location: str) -> bytes | None:
        """A recording's WAV, once any write of it in flight is done.

        Args:
            location: As :meth:`save` returned it.

        Returns:
            The WAV, or None if there is none there or the location is not this store's.
        """
        writing = self._writing.get(location)
        if writing is not None:
            await asyncio.wait([writing])
        return await self._read(location)

    @abstractmethod
    async def _read(self, location: str) -> bytes | None: ...

    @abstractmethod
    async def prune(self, older_than: float) -> int:
        """Delete the recordings older than ``older_than``.

        Args:
            older_than: A Unix time.

        Returns:
            How many were deleted.
        """

    def save_soon(
        self, call_sid: str, started_at: float, render: Callable[[], bytes]
    ) -> tuple[str, asyncio.Task[str]]:
        """Render a recording in a worker thread and save it, in the background.

        Reading its location meanwhile waits for it.

        Args:
            call_sid: The call.
            started_at: The call's start (Unix time).
            render: Makes the WAV (CPU-bound: it runs off the event loop).

        Returns:
            The location, and the task saving it.

        Raises:
            ValueError: If ``call_sid`` is not a Call SID.
        """
        location = self.location(call_sid, started_at)

        async def write() -> str:
            return await self.save(call_sid, await asyncio.to_thread(render), started_at)

        task = asyncio.create_task(write())
        self._writing[location] = task

        def done(finished: asyncio.Task[str]) -> None:
            if self._writing.get(location) is finished:
                del self._writing[location]

        task.add_done_callback(done)
        return location, task

    async def start(self) -> None:
        """Start background work (a store that has none does nothing)."""
        return None

    async def close(self, timeout: float = 10.0) -> None:
        """Let writes in flight finish (up to ``timeout`` seconds).

        Args:
            timeout: Most seconds to wait.
        """
        if self._writing:
            await asyncio.wait(list(self._writing.values()), timeout=timeout)


class LocalRecordingStore(RecordingStore):
    """Recordings in a folder: ``ROOT/YYYY/MM/DD/CallSid.wav``; the location is the path."""

    def __init__(self, root: str | Path):
        """Initialize the store (the folder is made at the first save).

        Args:
            root: The folder (``RECORDINGS_DIR``).
        """
        super().__init__()
        self.root = Path(root).expanduser().resolve()

    def location(self, call_sid: str, started_at: float) -> str:
        """``ROOT/YYYY/MM/DD/CallSid.wav``, the call's start day (UTC)."""
        return str(self.root / relative_name(call_sid, started_at))

    async def save(self, call_sid: str, wav: bytes, started_at: float) -> str:
        """Write the WAV at its location atomically (in a worker thread); the location."""
        location = self.location(call_sid, started_at)
        await asyncio.to_thread(_write_atomically, Path(location), wav)
        return location

    def path_of(self, location: str) -> Path | None:
        """The file of a location of this store's form, or None (another form, ``..``).

        Args:
            location: A location.
        """
        try:
            name = Path(location).relative_to(self.root).as_posix()
        except ValueError:
            return None
        return self.root / name if _NAME.fullmatch(name) else None

    async def _read(self, location: str) -> bytes | None:
        path = self.path_of(location)
        return await asyncio.to_thread(_read_file, path) if path is not None else None

    async def prune(self, older_than: float) -> int:
        """Delete the recordings whose files are older than ``older_than``; how many."""
        return await asyncio.to_thread(self._prune, older_than)

    def _prune(self, older_than: float) -> int:
        removed = 0
        for path in _recordings_in(self.root) if self.root.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
                    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
                        with contextlib.suppress(OSError):
                            folder.rmdir()  # only when empty
        return removed


class S3RecordingStore(RecordingStore):
    """Recordings in an S3 (or S3-compatible) bucket, through boto3 in worker threads."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "recordings/",
        endpoint_url: str | None = None,
        region: str | None = None,
        local: LocalRecordingStore,
        retry_secs: tuple[float, float] = UPLOAD_RETRY_SECS,
    ):
        """Initialize the store (boto3's client is made on first use).

        Args:
            bucket: The bucket.
            prefix: The keys' prefix.
            endpoint_url: An S3-compatible service's endpoint; AWS when None.
            region: The bucket's region; boto3's default when None.
            local: The local store: recordings kept there before (still readable and
                pruned), and its ``s3-pending/`` folder for uploads not done yet.
            retry_secs: The first and the longest wait between tries of a failed upload.
        """
        super().__init__()
        self.bucket, self.prefix = bucket, prefix
        self._endpoint_url, self._region = endpoint_url, region
        self.local = local
        self.pending = local.root / "s3-pending"
        self._retry_first, self._retry_max = retry_secs
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._wake = asyncio.Event()
        self._retrier: asyncio.Task | None = None

    def _s3(self) -> Any:
        """boto3's S3 client (made once, in a worker thread: it takes a while)."""
        with self._client_lock:
            if self._client is None:
                import boto3

                self._client = boto3.client(
                    "s3", endpoint_url=self._endpoint_url, region_name=self._region
                )
            return self._client

    def location(self, call_sid: str, started_at: float) -> str:
        """``s3://BUCKET/PREFIXYYYY/MM/DD/CallSid.wav``, the call's start day (UTC)."""
        return f"s3://{self.bucket}/{self.prefix}{relative_name(call_sid, started_at)}"

    def _name_of(self, location: str) -> str | None:
        """The ``YYYY/MM/DD/CallSid.wav`` of an ``s3://`` location of this store's, or None."""
        head = f"s3://{self.bucket}/{self.prefix}"
        name = location[len(head) :] if location.startswith(head) else ""
        return name if _NAME.fullmatch(name) else None

    async def save(self, call_sid: str, wav: bytes, started_at: float) -> str:
        """Write the WAV to ``s3-pending/``, upload it, remove it there; the ``s3://`` location.

        A failed upload is logged and retried in the background (:meth:`start`); the
        WAV is served from ``s3-pending/`` meanwhile.
        """
        name = relative_name(call_sid, started_at)
        path = self.pending / name
        await asyncio.to_thread(_write_atomically, path, wav)
        if not await self._upload(path, name):
            logger.warning(
                f"Call {call_sid}: recording not uploaded to S3 yet; it is kept at {path} "
                "and the upload is retried in the background"
            )
            self._wake.set()
        return self.location(call_sid, started_at)

    async def _upload(self, path: Path, name: str) -> bool:
        """Upload a pending WAV and remove it here; whether that worked."""

        def upload() -> None:
            self._s3().upload_file(
                str(path), self.bucket, self.prefix + name, ExtraArgs={"ContentType": "audio/wav"}
            )
            path.unlink()

        try:
            await asyncio.to_thread(upload)
        except Exception as e:  # boto3's and botocore's many errors, or the file's
            logger.info(f"Uploading {name} to s3://{self.bucket} failed: {field(e, 200)}")
            return False
        return True

    async def _read(self, location: str) -> bytes | None:
        if not location.startswith("s3://"):
            return await self.local.read(location)  # kept before S3 was configured
        name = self._name_of(location)
        if name is None:
            return None

        def read() -> bytes | None:
            waiting = _read_file(self.pending / name)
            if waiting is not None:
                return waiting
            client = self._s3()
            try:
                answer = client.get_object(Bucket=self.bucket, Key=self.prefix + name)
            except client.exceptions.NoSuchKey:
                return None
            return answer["Body"].read()

        return await asyncio.to_thread(read)

    async def prune(self, older_than: float) -> int:
        """Delete the recordings last modified before ``older_than``; how many.

        Those in the bucket, and local ones kept before S3 was configured.
        """

        def prune() -> int:
            client = self._s3()
            old = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            ):
                for entry in page.get("Contents", []):
                    name = entry["Key"][len(self.prefix) :]
                    if _NAME.fullmatch(name) and entry["LastModified"].timestamp() < older_than:
                        old.append({"Key": entry["Key"]})
            for at in range(0, len(old), 1000):  # the most one request deletes
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": old[at : at + 1000]})
            return len(old)

        return await asyncio.to_thread(prune) + await self.local.prune(older_than)

    async def start(self) -> None:
        """Upload what waits in ``s3-pending/`` (from before), and retry failed uploads."""
        if self._retrier is None:
            self._wake.set()
            self._retrier = asyncio.create_task(self._retry_forever())

    async def close(self, timeout: float = 10.0) -> None:
        """Let writes in flight finish (up to ``timeout`` seconds); stop retrying uploads."""
        await super().close(timeout)
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
            self._retrier = None

    async def _retry_forever(self) -> None:
        delay = self._retry_first
        while True:
            await self._wake.wait()
            self._wake.clear()
            waiting = await asyncio.to_thread(_recordings_in, self.pending)
            for path in waiting:
                name = path.relative_to(self.pending).as_posix()
                if not await self._upload(path, name):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
                    self._wake.set()
                    break
                logger.info(f"Recording {name} uploaded to s3://{self.bucket}")
            else:
                delay = self._retry_first
