"""Where recordings are kept: a folder or an S3 bucket (moto's server), read back, pruned."""

import asyncio
import os
import secrets
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from loguru import logger

from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.phone.recording import CallRecorder
from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
from pipecat_realtime_twilio.runner.recording_stores import (
    LocalRecordingStore,
    S3RecordingStore,
)
from pipecat_realtime_twilio.runner.recordings import RecordingKeeper, recording_store
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.settings import Settings

STARTED = 1767225600.0 + 3600  # 2026-01-01 01:00 UTC
DAY = 86400


def sid() -> str:
    return "CA" + secrets.token_hex(16)


def settings(tmp_path: Path, **values) -> Settings:
    values.setdefault("recordings_dir", str(tmp_path / "recordings"))
    return Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/calls.db", **values)


def age(location: str, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(location, (then, then))


# --- a folder ---------------------------------------------------------------------------------


async def test_a_folder_keeps_recordings_by_day_and_reads_them_back(tmp_path):
    store = LocalRecordingStore(tmp_path / "recordings")
    call = sid()
    wav = os.urandom(1000)
    location = await store.save(call, wav, STARTED)
    assert location == str(tmp_path / "recordings" / "2026" / "01" / "01" / f"{call}.wav")
    assert location == store.location(call, STARTED)
    assert await store.read(location) == wav
    assert stat.S_IMODE(os.stat(location).st_mode) & 0o077 == 0  # the runner's user only
    assert [p.name for p in Path(location).parent.iterdir()] == [f"{call}.wav"]  # no leftovers
    # Saved again (the same call): replaced whole.
    await store.save(call, b"other", STARTED)
    assert await store.read(location) == b"other"
    assert await store.read(store.location(sid(), STARTED)) is None  # not there


async def test_a_folder_reads_nothing_but_its_own_recordings(tmp_path):
    store = LocalRecordingStore(tmp_path / "recordings")
    location = await store.save(sid(), b"RIFF", STARTED)
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"not yours")
    root = store.root
    for other in [
        str(secret),
        f"{root}/../secret.wav",
        f"{root}/2026/01/01/../../../../secret.wav",
        f"{root}/2026/01/01/{Path(location).stem}.txt",
        location.replace("/2026/", "/20260/"),
        "s3://bucket/recordings/2026/01/01/x.wav",
        "",
    ]:
        assert await store.read(other) is None, other
    with pytest.raises(ValueError):
        store.location("../../etc/passwd", STARTED)


async def test_a_folder_prunes_old_recordings_and_their_empty_days(tmp_path):
    store = LocalRecordingStore(tmp_path / "recordings")
    old = await store.save(sid(), b"old", STARTED - 40 * DAY)
    new = await store.save(sid(), b"new", STARTED)
    age(old, 40)
    other = store.root / "notes.txt"
    other.write_text("kept")
    assert await store.prune(time.time() - 30 * DAY) == 1
    assert not Path(old).exists() and not Path(old).parent.exists()
    assert Path(new).exists() and other.exists()
    assert await store.prune(time.time() - 30 * DAY) == 0
    assert await LocalRecordingStore(tmp_path / "none").prune(time.time()) == 0


async def test_reading_a_recording_being_written_waits_for_it(tmp_path):
    store = LocalRecordingStore(tmp_path / "recordings")
    wav = os.urandom(100)
    location, task = store.save_soon(sid(), STARTED, lambda: wav)
    assert not task.done()
    assert await store.read(location) == wav
    assert await task == location
    await store.close()


# --- the runner's part ------------------------------------------------------------------------


def recorded_call(call_sid: str) -> SimpleNamespace:
    """A call that streamed 100 ms of caller audio into its recorder."""
    recorder = CallRecorder()
    recorder.caller_audio(bytes(range(256)) * 3 + bytes(32), 0, 0.0)
    output = SimpleNamespace(recorder=recorder)
    return SimpleNamespace(
        call_sid=call_sid, serializer=SimpleNamespace(recorder=recorder), output=lambda: output
    )


async def test_the_keeper_puts_the_recording_on_the_record_and_saves_it(tmp_path):
    config = settings(tmp_path, record_calls=True)
    store = recording_store(config)
    records = RecordKeeper(config)
    keeper = RecordingKeeper(config, store, records)
    try:
        call = recorded_call(sid())
        record = CallRecord(call.call_sid, started_at=STARTED)
        keeper.finish(call, record)
        assert record.recording == {
            "location": store.location(call.call_sid, STARTED),
            "bytes": 44 + 800 * 4,
            "duration_s": 0.1,
            "sample_rate": 8000,
            "channels": 2,
        }
        assert call.serializer.recorder is None  # nothing more reaches it once it renders
        wav = await store.read(record.recording["location"])
        assert wav is not None and len(wav) == record.recording["bytes"]
    finally:
        await keeper.close()
        await records.close()


async def test_a_recording_that_cannot_be_saved_leaves_the_record_without_one(tmp_path):
    config = settings(tmp_path, record_calls=True)
    (tmp_path / "recordings").write_text("a file where the folder should be")
    records = RecordKeeper(config)
    keeper = RecordingKeeper(config, recording_store(config), records)
    errors: list[str] = []
    sink = logger.add(errors.append, level="ERROR", format="{message}")
    try:
        call = recorded_call(sid())
        record = CallRecord(call.call_sid, started_at=STARTED)
        records.finished.append(record)
        keeper.finish(call, record)
        assert record.recording is not None
        await keeper.store.close()
        assert records.finished[-1].recording is None and records.finished[-1].revision == 1
        assert any("could not be saved" in line for line in errors)
    finally:
        logger.remove(sink)
        await keeper.close()
        await records.close()


async def test_retention_removes_old_recordings_at_start(tmp_path):
    config = settings(tmp_path, recording_retention_days=30)
    store = recording_store(config)
    old = await store.save(sid(), b"old", STARTED)
    new = await store.save(sid(), b"new", time.time())
    age(old, 31)
    records = RecordKeeper(config)
    keeper = RecordingKeeper(config, store, records)
    try:
        await keeper.start()
        for _ in range(500):
            if not Path(old).exists():
                break
            await asyncio.sleep(0.01)
        assert not Path(old).exists() and Path(new).exists()
    finally:
        await keeper.close()
        await records.close()
    off = RecordingKeeper(settings(tmp_path), store, records)
    assert await off.prune() == 0  # no retention: kept forever


async def test_a_bucket_without_boto3_stops_the_start_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 fails
    with pytest.raises(SettingsError) as caught:
        recording_store(settings(tmp_path, recordings_s3_bucket="calls"))
    message = str(caught.value)
    assert (
        "RECORDINGS_S3_BUCKET" in message and "pip install 'pipecat-realtime-twilio[s3]'" in message
    )
    assert "\n" not in message


def test_a_bucket_names_its_recordings_by_prefix_and_day(tmp_path):
    store = recording_store(settings(tmp_path, recordings_s3_bucket="calls"))
    assert isinstance(store, S3RecordingStore)
    call = sid()
    assert store.location(call, STARTED) == f"s3://calls/recordings/2026/01/01/{call}.wav"


# --- a bucket (moto's S3 server) --------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on a free port of 127.0.0.1, with fake credentials; its endpoint."""
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def bucket(endpoint: str, name: str):
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client


@pytest.mark.call
async def test_a_bucket_keeps_serves_and_prunes_recordings(tmp_path, s3):
    client = await asyncio.to_thread(bucket, s3, "calls")
    config = settings(tmp_path, recordings_s3_bucket="calls", recordings_s3_endpoint_url=s3)
    store = recording_store(config)
    assert isinstance(store, S3RecordingStore)
    call, wav = sid(), os.urandom(5000)
    location = await store.save(call, wav, STARTED)
    assert location == f"s3://calls/recordings/2026/01/01/{call}.wav"
    assert not any(store.pending.rglob("*.wav"))  # uploaded, not kept here
    stored = await asyncio.to_thread(
        client.get_object, Bucket="calls", Key=f"recordings/2026/01/01/{call}.wav"
    )
    assert stored["Body"].read() == wav and stored["ContentType"] == "audio/wav"
    assert await store.read(location) == wav

    for other in [
        location.replace("s3://calls/", "s3://other/"),
        location.replace("/2026/01/01/", "/2026/01/01/../"),
        "s3://calls/elsewhere.wav",
    ]:
        assert await store.read(other) is None, other
    assert await store.read(store.location(sid(), STARTED)) is None  # never saved

    # Local recordings from before the bucket stay readable (and are pruned with the rest).
    local = await store.local.save(sid(), b"local", STARTED)
    assert await store.read(local) == b"local"

    assert await store.prune(time.time() - 3600) == 0  # all recent
    assert await store.prune(time.time() + 60) == 2  # the object and the local file
    assert await store.read(location) is None and await store.read(local) is None
    await store.close()


@pytest.mark.call
async def test_a_recording_waits_on_disk_while_the_bucket_fails_then_goes_up(tmp_path, s3):
    local = LocalRecordingStore(tmp_path / "recordings")
    store = S3RecordingStore(
        "later", endpoint_url=s3, region="us-east-1", local=local, retry_secs=(0.05, 0.2)
    )
    call, wav = sid(), os.urandom(3000)
    warnings: list[str] = []
    sink = logger.add(warnings.append, level="WARNING", format="{message}")
    try:
        location = await store.save(call, wav, STARTED)  # no such bucket yet
    finally:
        logger.remove(sink)
    pending = store.pending / "2026" / "01" / "01" / f"{call}.wav"
    assert pending.read_bytes() == wav
    assert any(str(pending) in line for line in warnings)  # it says where the WAV is
    assert await store.read(location) == wav  # served from the disk meanwhile

    client = await asyncio.to_thread(bucket, s3, "later")
    await store.start()
    for _ in range(500):
        if not pending.exists():
            break
        await asyncio.sleep(0.02)
    assert not pending.exists()
    stored = await asyncio.to_thread(
        client.get_object, Bucket="later", Key=f"recordings/2026/01/01/{call}.wav"
    )
    assert stored["Body"].read() == wav
    assert await store.read(location) == wav
    await store.close()


@pytest.mark.call
async def test_a_recorded_call_goes_to_the_bucket_is_served_and_expires(tmp_path, s3):
    """The runner with RECORD_CALLS and a bucket: the WAV in S3, served by the read API,
    and RECORDING_RETENTION_DAYS removing what is older than it (and only that)."""
    import aiohttp
    from conftest import phone_call

    client = await asyncio.to_thread(bucket, s3, "calls")
    key = "recordings-api-key"
    values = {
        "record_calls": True,
        "recordings_dir": str(tmp_path / "recordings"),
        "recordings_s3_bucket": "calls",
        "recordings_s3_endpoint_url": s3,
        "recording_retention_days": 3 / 86400,  # three seconds
        "runner_api_key": key,
    }
    async with phone_call(settings=values) as (_, runner, caller):
        await caller.call()
        await caller.say(b"\xff" * 8000)
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        record = runner.finished[0]
        assert record.recording is not None
        location = record.recording["location"]
        assert location.startswith("s3://calls/recordings/")
        wav = await runner.recordings.read(location)  # waits for the upload
        assert wav is not None and len(wav) == record.recording["bytes"]
        objects = await asyncio.to_thread(client.list_objects_v2, Bucket="calls")
        [stored] = objects["Contents"]
        assert f"s3://calls/{stored['Key']}" == location
        url = f"{caller.server_url}/api/calls/{caller.call_sid}/recording"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as response:
                assert response.status == 200 and response.content_type == "audio/wav"
                assert await response.read() == wav
            async with http.get(url) as response:
                assert response.status == 401

        # Retention: a recording saved later is kept while the call's expires.
        await asyncio.sleep(2.0)
        newer = await runner.recordings.save(sid(), b"newer", time.time())
        await asyncio.sleep(1.5)  # the call's recording is now older than three seconds
        assert await runner.recorders.prune() == 1
        assert await runner.recordings.read(location) is None
        assert await runner.recordings.read(newer) == b"newer"
