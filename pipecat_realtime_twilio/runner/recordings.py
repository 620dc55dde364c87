#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Recordings of calls as heard: the runner's part in them.

With ``RECORD_CALLS=true`` every call gets a
:class:`~pipecat_realtime_twilio.phone.recording.CallRecorder`; when it ends, its
two-channel WAV goes to the runner's
:class:`~pipecat_realtime_twilio.runner.recording_stores.RecordingStore`
(``CallRunner.recordings``) and its place on the call's record (``recording``:
location, bytes, duration, rate, channels), all in the record's first revision:
the location is known before the WAV is written (in the background, off the
event loop), and reading it meanwhile waits for the write.

``RECORDING_RETENTION_DAYS`` deletes older recordings when the runner starts and
every hour, and logs how many.
"""

import asyncio
import time

from loguru import logger

from pipecat_realtime_twilio.audio import SAMPLE_RATE
from pipecat_realtime_twilio.logs import field
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.phone.recording import CHANNELS, CallRecorder
from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
from pipecat_realtime_twilio.runner.recording_stores import (
    LocalRecordingStore,
    RecordingStore,
    S3RecordingStore,
)
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.settings import Settings, SettingsError

__all__ = [
    "LocalRecordingStore",
    "RecordingKeeper",
    "RecordingStore",
    "S3RecordingStore",
    "recording_store",
]

PRUNE_EVERY_SECS = 3600.0
"""How often recordings past ``RECORDING_RETENTION_DAYS`` are looked for."""


def recording_store(settings: Settings) -> RecordingStore:
    """The store ``RECORDINGS_S3_BUCKET`` or ``RECORDINGS_DIR`` says.

    Args:
        settings: The runner's settings.

    Returns:
        The store.

    Raises:
        SettingsError: If a bucket is set and boto3 is not installed.
    """
    local = LocalRecordingStore(settings.recordings_dir)
    bucket = settings.recordings_s3_bucket
    if not bucket:
        return local
    try:
        import boto3  # noqa: F401 (used by the store, in its threads)
    except ImportError:
        raise SettingsError(
            "RECORDINGS_S3_BUCKET is set but boto3 is not installed: "
            "pip install 'pipecat-realtime-twilio[s3]'"
        ) from None
    endpoint = settings.recordings_s3_endpoint_url
    return S3RecordingStore(
        bucket,
        prefix=settings.recordings_s3_prefix,
        endpoint_url=str(endpoint).rstrip("/") if endpoint is not None else None,
        region=settings.recordings_s3_region,
        local=local,
    )


class RecordingKeeper:
    """The runner's recordings: a recorder per call (``RECORD_CALLS``), saved, pruned.

    A recording never gets in a call's way: the recorder only appends bytes while
    the call goes on, and whatever fails in saving it is logged (and the record
    amended to have no recording) without touching the call or the rest of its record.
    """

    def __init__(self, settings: Settings, store: RecordingStore, records: RecordKeeper):
        """Initialize the keeper.

        Args:
            settings: ``RECORD_CALLS`` and ``RECORDING_RETENTION_DAYS``.
            store: Where recordings go.
            records: The call records, amended when a recording could not be saved.
        """
        self.settings = settings
        self.store = store
        self._records = records
        self._pruner: asyncio.Task | None = None

    def attach(self, call: CallSession) -> CallRecorder | None:
        """Give ``call`` a recorder, before it runs, if calls are recorded.

        Args:
            call: The call.

        Returns:
            Its recorder, or None when ``RECORD_CALLS`` is off.
        """
        if not self.settings.record_calls:
            return None
        recorder = CallRecorder()
        call.serializer.recorder = call.output().recorder = recorder
        return recorder

    def finish(self, call: CallSession, record: CallRecord) -> None:
        """Put the call's recording on its record and save it in the background.

        Args:
            call: The call, over.
            record: Its record, not kept yet.
        """
        recorder = call.serializer.recorder
        if recorder is None or not recorder.frames:
            return  # not recorded, or the stream brought no audio
        call.serializer.recorder = call.output().recorder = None
        try:
            location, task = self.store.save_soon(call.call_sid, record.started_at, recorder.wav)
        except Exception as e:
            logger.error(f"Call {call.call_sid}: its recording could not be saved: {field(e)}")
            return
        record.recording = {
            "location": location,
            "bytes": recorder.wav_bytes,
            "duration_s": round(recorder.duration_s, 3),
            "sample_rate": SAMPLE_RATE,
            "channels": CHANNELS,
        }
        task.add_done_callback(lambda done: self._saved(call.call_sid, location, done))

    def _saved(self, call_sid: str, location: str, task: asyncio.Task[str]) -> None:
        error = "cancelled" if task.cancelled() else task.exception()
        if error is None:
            logger.debug(f"Call {call_sid}: recording saved at {location}")
            return
        logger.error(
            f"Call {call_sid}: its recording could not be saved at {location}: {field(error, 200)}"
        )
        self._records.amend_with(call_sid, lambda record: setattr(record, "recording", None))

    async def start(self) -> None:
        """Start the store's background work, and pruning when a retention is set."""
        await self.store.start()
        if self.settings.recording_retention_days and self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_forever())

    async def close(self) -> None:
        """Stop pruning; let recordings being saved finish."""
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
        await self.store.close()

    async def prune(self) -> int:
        """Delete the recordings past ``RECORDING_RETENTION_DAYS`` now, and log how many.

        Returns:
            How many were deleted (0 without a retention).
        """
        days = self.settings.recording_retention_days
        if not days:
            return 0
        removed = await self.store.prune(time.time() - days * 86400)
        logger.info(f"Recordings: {removed} older than {days:g} days removed")
        return removed

    async def _prune_forever(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception as e:
                logger.warning(f"Recordings: removing old ones failed: {field(e, 200)}")
            await asyncio.sleep(PRUNE_EVERY_SECS)
