"""The call-record outbox: nothing lost while the database is locked, down, or the runner restarts.

The unit tests work on files and an in-process SQLite lock; the `call` tests lock the database
from another process or stop a real PostgreSQL server, with a real webhook receiver.
"""

import asyncio
import errno
import json
import sqlite3
import subprocess
import sys

import pytest
from conftest import ROOT
from fastapi import FastAPI, Request
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families
from test_records import make_record

from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.outbox import Outbox, default_outbox_dir
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.runner.webhook import IDEMPOTENCY_HEADER, WebhookSender
from pipecat_realtime_twilio.settings import Settings, SettingsError
from pipecat_realtime_twilio.testing.server import LocalServer

TIMEOUT = 30.0  # generous: a shared, noisy machine
RETRY = (0.2, 1.0)  # first and longest wait between tries to store (1 s and 30 s in the runner)


def settings(tmp_path, **values) -> Settings:
    return Settings(
        _env_file=None, **{"database_url": f"sqlite:///{tmp_path / 'calls.db'}", **values}
    )


def keeper_for(config: Settings, store: CallStore, webhook_url: str | None = None):
    """A keeper with fast retries, its metrics and, if asked, a quick webhook sender."""
    metrics = RunnerMetrics()
    keeper = RecordKeeper(config, store=store, metrics=metrics, store_retry_secs=RETRY)
    if webhook_url is not None:
        keeper.webhook = WebhookSender(webhook_url, attempts=2, first_delay_s=0.05, timeout_s=5)
    return keeper, metrics


def pending(metrics: RunnerMetrics) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "prt_records_pending":
                return sample.value
    raise AssertionError("no prt_records_pending in /metrics")


async def until(condition, message: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.02)


@pytest.fixture
def logs():
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    yield messages
    logger.remove(sink)


def receiver() -> FastAPI:
    """A webhook receiver that keeps every record it gets, with its idempotency key."""
    app = FastAPI()
    app.state.received = []

    @app.post("/calls")
    async def calls(request: Request):
        body = json.loads(await request.body())
        app.state.received.append((request.headers.get(IDEMPOTENCY_HEADER), body))
        return {"ok": True}

    return app


# --- the outbox's files -------------------------------------------------------------------------


def test_a_record_is_written_whole_and_read_back_by_another_outbox(tmp_path):
    record = make_record()
    path = Outbox(tmp_path / "outbox").put(record)
    assert json.loads(path.read_text()) == record.to_dict()
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [path.name]  # no temporary left

    again = Outbox(tmp_path / "outbox")  # as after a restart
    assert again.paths() == [path] and again.count() == 1
    claim = again.claim(path)
    assert claim is not None and claim.record == record
    again.remove(claim)
    claim.release()
    assert again.paths() == [] and again.count() == 0


def test_records_come_out_oldest_first_and_one_per_call(tmp_path):
    outbox = Outbox(tmp_path)
    for sid in ("CA-b", "CA-a", "CA-c"):
        outbox.put(make_record(sid))
    outbox.put(make_record("CA-b", bot="again"))  # the same call again replaces it
    assert [p.stem for p in outbox.paths()] == ["CA-a", "CA-c", "CA-b"]
    assert outbox.claim(outbox.paths()[-1]).record.bot == "again"


def test_a_claimed_record_cannot_be_taken_twice(tmp_path):
    outbox = Outbox(tmp_path)
    path = outbox.put(make_record())
    first = outbox.claim(path)
    assert first is not None
    assert outbox.claim(path) is None  # what another process storing it at the same time sees
    first.release()
    second = outbox.claim(path)
    assert second is not None
    second.release()


def test_an_unusual_call_sid_gets_a_safe_file_name(tmp_path):
    outbox = Outbox(tmp_path)
    path = outbox.put(make_record("../../etc/passwd\n"))
    assert path.parent == tmp_path and "/" not in path.name and "\n" not in path.name
    assert outbox.claim(path).record.call_sid == "../../etc/passwd\n"


def test_an_unreadable_file_is_moved_aside(tmp_path, logs):
    outbox = Outbox(tmp_path)
    (tmp_path / "CA-broken.json").write_text("{not json")
    good = outbox.put(make_record("CA-good"))
    assert [outbox.claim(p) is not None for p in outbox.paths()] == [False, True]
    assert (tmp_path / "CA-broken.json.unreadable").exists() and outbox.paths() == [good]
    assert any("Unreadable call record" in m for m in logs)


def test_default_outbox_folder(tmp_path):
    assert default_outbox_dir(f"sqlite:///{tmp_path}/calls.db") == tmp_path / "calls.db-outbox"
    assert str(default_outbox_dir("sqlite:///calls.db")) == "calls.db-outbox"
    assert str(default_outbox_dir("postgresql+psycopg://u@db/calls")) == "outbox"
    assert default_outbox_dir("sqlite://") is None  # in memory: a temporary folder


def test_an_unusable_outbox_folder_stops_startup(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    config = settings(tmp_path, outbox_dir=str(tmp_path / "file" / "outbox"))
    with pytest.raises(SettingsError, match="OUTBOX_DIR: cannot use .*file/outbox"):
        RecordKeeper(config)


# --- the keeper, with SQLite in this process ----------------------------------------------------


async def test_a_kept_record_is_stored_and_leaves_the_outbox(tmp_path):
    config = settings(tmp_path)
    keeper, metrics = keeper_for(config, CallStore(config.database_url))
    keeper.start()
    record = make_record()
    keeper.keep(record)
    await keeper.settle(timeout=TIMEOUT)
    assert keeper.store.get(record.call_sid) == record
    assert keeper.outbox.count() == 0 and pending(metrics) == 0
    assert keeper.outbox.directory == tmp_path / "calls.db-outbox"
    await keeper.close()


async def test_the_outbox_survives_a_restart(tmp_path, logs):
    """The database is locked; the runner stops; the next runner stores what waited."""
    config = settings(tmp_path)
    keeper, metrics = keeper_for(config, CallStore(config.database_url, busy_timeout_s=0.2))
    keeper.start()
    lock = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        record = make_record()
        keeper.keep(record)
        await until(lambda: any("could not store its record" in m for m in logs), "a failure")
        assert pending(metrics) == 1
        await keeper.close()  # the runner stops with the database still locked
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert [p.stem for p in Outbox(keeper.outbox.directory).paths()] == [record.call_sid]

    again, metrics = keeper_for(config, CallStore(config.database_url))
    again.start()
    assert pending(metrics) == 1  # counted at start
    await until(lambda: again.outbox.count() == 0, "the outbox to drain")
    await again.settle(timeout=TIMEOUT)
    assert again.store.get(record.call_sid) == record
    assert pending(metrics) == 0
    assert any("left in the outbox" in m for m in logs)
    assert any("Outbox drained: 1 call record(s) stored" in m for m in logs)
    await again.close()


async def test_a_record_the_outbox_cannot_take_goes_straight_to_the_database(
    tmp_path, monkeypatch, logs
):
    config = settings(tmp_path)
    keeper, _ = keeper_for(config, CallStore(config.database_url))

    def disk_full(record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keeper.outbox, "put", disk_full)
    record = make_record()
    keeper.keep(record)
    await keeper.settle(timeout=TIMEOUT)
    assert keeper.store.get(record.call_sid) == record
    assert any("could not write its record to the outbox" in m for m in logs)
    await keeper.close()


async def test_the_keeper_outlives_a_failing_outbox_folder(tmp_path, monkeypatch, logs):
    config = settings(tmp_path)
    keeper, metrics = keeper_for(config, CallStore(config.database_url))
    paths = keeper.outbox.paths
    failures = []

    def flaky_paths():
        if not failures:
            failures.append(1)
            raise OSError(errno.EIO, "Input/output error")
        return paths()

    monkeypatch.setattr(keeper.outbox, "paths", flaky_paths)
    record = make_record()
    keeper.keep(record)
    await until(lambda: keeper.store.get(record.call_sid) is not None, "the next try")
    assert failures and any("the outbox failed" in m for m in logs)
    # Stored first, then taken out of the outbox (and the gauge) a moment later.
    await until(lambda: pending(metrics) == 0, "the outbox to empty")
    assert keeper.outbox.count() == 0
    await keeper.close()


async def test_an_in_memory_database_gets_a_temporary_outbox(tmp_path):
    keeper = RecordKeeper(Settings(_env_file=None, database_url="sqlite://"))
    folder = keeper.outbox.directory
    assert folder.is_dir() and not folder.is_relative_to(ROOT)
    keeper.keep(make_record())
    await keeper.settle(timeout=TIMEOUT)
    assert len(keeper.store.list()) == 1
    await keeper.close()
    assert not folder.exists()


# --- outages, with a real webhook receiver ------------------------------------------------------

LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("COMMIT")
"""


@pytest.mark.call
async def test_sqlite_locked_by_another_process(tmp_path, logs):
    config = settings(tmp_path)
    store = CallStore(config.database_url, busy_timeout_s=0.3)
    app = receiver()
    async with LocalServer(app) as server:
        keeper, metrics = keeper_for(config, store, f"{server.url}/calls")
        keeper.start()
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(tmp_path / "calls.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout.readline().strip() == "locked"
            record = make_record()
            keeper.keep(record)

            # The record waits in the outbox, and the webhook gets it from there.
            await until(lambda: app.state.received, "the webhook to get the record")
            assert pending(metrics) == 1
            assert [p.stem for p in keeper.outbox.paths()] == [record.call_sid]
            assert store.get(record.call_sid) is None  # WAL: readers still read
            assert any("database is locked" in m for m in logs)
        finally:
            locker.communicate("\n", timeout=TIMEOUT)

        # The lock is gone: the next try stores it, once, already marked delivered.
        await until(lambda: pending(metrics) == 0, "the record to be stored")
        await keeper.settle(timeout=TIMEOUT)
        stored = store.get(record.call_sid)
        assert stored is not None and stored.webhook_delivered
        assert {**stored.to_dict(), "webhook_delivered": False} == record.to_dict()
        assert keeper.outbox.count() == 0
        assert app.state.received == [
            (record.call_sid, {**record.to_dict(), "webhook_delivered": False})
        ]
        assert await keeper.webhook.deliver_pending(store) == 0  # nothing left to send
        assert any("Outbox drained" in m for m in logs)
        await keeper.close()


@pytest.mark.call
async def test_postgres_down_then_up(tmp_path, postgres, postgres_url, logs):
    config = settings(tmp_path, database_url=postgres_url, outbox_dir=str(tmp_path / "outbox"))
    store = CallStore(postgres_url)
    app = receiver()
    async with LocalServer(app) as server:
        keeper, metrics = keeper_for(config, store, f"{server.url}/calls")
        keeper.start()
        first = make_record("CA-before")
        keeper.keep(first)
        await keeper.settle(timeout=TIMEOUT)
        stored = store.get(first.call_sid)  # as usual while the server is up
        assert {**stored.to_dict(), "webhook_delivered": False} == first.to_dict()

        postgres.stop()
        try:
            record = make_record("CA-during", started_at=first.started_at + 60)
            keeper.keep(record)
            await until(lambda: len(app.state.received) == 2, "the webhook to get the record")
            assert pending(metrics) == 1
            assert [p.stem for p in keeper.outbox.paths()] == ["CA-during"]
        finally:
            postgres.start()

        await until(lambda: pending(metrics) == 0, "the record to be stored")
        await keeper.settle(timeout=TIMEOUT)
        stored = store.get(record.call_sid)
        assert stored is not None and stored.webhook_delivered
        assert [sid for sid, _ in app.state.received] == ["CA-before", "CA-during"]
        assert [r.call_sid for r in store.list()] == ["CA-during", "CA-before"]
        assert keeper.outbox.count() == 0
        await keeper.close()


@pytest.mark.call
async def test_records_wait_for_both_database_and_webhook(tmp_path, postgres, postgres_url):
    """Neither the database nor the receiver answers: the record is stored, then delivered."""
    from conftest import free_port

    port = free_port()  # nothing listens here yet
    config = settings(tmp_path, database_url=postgres_url, outbox_dir=str(tmp_path / "outbox"))
    store = CallStore(postgres_url)
    keeper, metrics = keeper_for(config, store, f"http://127.0.0.1:{port}/calls")
    keeper.start()
    postgres.stop()
    try:
        record = make_record()
        keeper.keep(record)
        await until(lambda: pending(metrics) == 1, "the record in the outbox")
    finally:
        postgres.start()
    await until(lambda: pending(metrics) == 0, "the record to be stored")
    await keeper.settle(timeout=TIMEOUT)
    assert store.get(record.call_sid) is not None
    assert [r.call_sid for r in store.undelivered()] == [record.call_sid]

    app = receiver()
    async with LocalServer(app, port=port):
        assert await keeper.webhook.deliver_pending(store) == 1  # what the timer does
    assert [sid for sid, _ in app.state.received] == [record.call_sid]
    assert store.undelivered() == []
    await keeper.close()


def test_record_json_is_what_the_outbox_keeps(tmp_path):
    """A record read back from its file equals the record, delivered flag included."""
    outbox = Outbox(tmp_path)
    record = make_record(webhook_delivered=True)
    claim = outbox.claim(outbox.put(record))
    assert claim.record == record and CallRecord.from_json(claim.path.read_text()) == record
    claim.release()
