"""Tests for call records: JSON round trip, the SQL store, webhook delivery to a local server."""

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, free_port
from fastapi import FastAPI, Request, Response
from loguru import logger

from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.runner.pricing import cost_usd
from pipecat_realtime_twilio.runner.records import CallRecord, latency_summary
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.runner.webhook import (
    SIGNATURE_HEADER,
    WebhookSender,
    sign_body,
    verify_signature,
)
from pipecat_realtime_twilio.testing.server import LocalServer

SECRET = "webhook-secret"
T0 = 1_760_000_000.0


def make_record(call_sid: str = "CA" + "1" * 32, started_at: float = T0, **overrides):
    record = CallRecord(
        call_sid=call_sid,
        bot="default",
        from_number="+15550001111",
        to_number="+15550002222",
        direction="inbound",
        model="gpt-realtime-2.1",
        started_at=started_at,
    )
    record.add_turn("bot", "Hello! Thanks for calling Rosa's Bakery.", at=started_at + 0.4)
    record.add_turn("caller", "Avez-vous du pain au levain ? 🍞", at=started_at + 3.2)
    record.add_turn("bot", "Yes, we bake it every", at=started_at + 4.0, interrupted=True)
    record.usage.add_response_usage(
        {
            "input_tokens": 789,
            "output_tokens": 32,
            "input_token_details": {
                "text_tokens": 313,
                "audio_tokens": 476,
                "cached_tokens": 640,
                "cached_tokens_details": {"text_tokens": 256, "audio_tokens": 384},
            },
            "output_token_details": {"text_tokens": 9, "audio_tokens": 23},
        }
    )
    record.cost_usd = cost_usd(record.model, record.usage)
    record.latency = latency_summary([420.0, 610.5, 380.0])
    record.finish("caller_hung_up", ended_at=started_at + 42.5)
    for name, value in overrides.items():
        setattr(record, name, value)
    return record


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.call)])
def db_url(request, tmp_path):
    """Each store test runs on a SQLite file, and on a real PostgreSQL server (a `call` test)."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'calls.db'}"


@pytest.fixture
def store(db_url):
    store = CallStore(db_url)
    yield store
    store.close()


# --- CallRecord ---------------------------------------------------------------------------------


def test_record_round_trips_through_json():
    record = make_record()
    text = record.to_json()
    data = json.loads(text)
    assert data["call_sid"] == record.call_sid and data["direction"] == "inbound"
    assert data["usage"] == record.usage.as_dict() and data["usage"]["cached_audio_tokens"] == 384
    assert data["transcript"][1] == {
        "role": "caller",
        "text": "Avez-vous du pain au levain ? 🍞",
        "at": T0 + 3.2,
        "interrupted": False,
    }
    assert data["transcript"][2]["interrupted"] is True
    assert data["duration_s"] == 42.5 and data["end_reason"] == "caller_hung_up"
    assert data["webhook_delivered"] is False

    again = CallRecord.from_json(text)
    assert again == record
    assert isinstance(again.usage, Usage) and again.usage == record.usage
    assert again.to_json() == text


def test_record_json_is_strict_json():
    record = make_record(cost_usd=float("nan"))
    record.latency = {"response_ms": [float("inf"), 12.0], "p50_ms": None, "p90_ms": None}

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    data = json.loads(record.to_json(), parse_constant=no_constants)
    assert data["cost_usd"] is None and data["latency"]["response_ms"] == [None, 12.0]


def test_from_dict_tolerates_missing_and_unknown_keys():
    record = CallRecord.from_dict({"call_sid": "CA42", "added_later": {"x": 1}})
    assert record.call_sid == "CA42" and record.usage == Usage() and record.transcript == []
    assert record.latency == {"response_ms": [], "p50_ms": None, "p90_ms": None}
    assert record.cost_usd is None and record.webhook_delivered is False


def test_latency_summary():
    assert latency_summary([420.0, 610.5, 380.0]) == {
        "response_ms": [420.0, 610.5, 380.0],
        "p50_ms": 420.0,
        "p90_ms": pytest.approx(420 + (610.5 - 420) * 0.8),
    }
    assert latency_summary([]) == {"response_ms": [], "p50_ms": None, "p90_ms": None}
    summary = latency_summary(range(1, 101))
    assert summary["p50_ms"] == pytest.approx(50.5) and summary["p90_ms"] == pytest.approx(90.1)


# --- CallStore ----------------------------------------------------------------------------------


def test_store_round_trip(store):
    record = make_record()
    store.save(record)
    loaded = store.get(record.call_sid)
    assert loaded == record and loaded is not record
    assert store.get("CA-missing") is None


def test_store_upserts_by_call_sid(store):
    record = make_record(end_reason=None, ended_at=None, duration_s=None)
    store.save(record)
    record.finish("end_call", ended_at=T0 + 60)
    record.add_turn("bot", "Goodbye!", at=T0 + 59)
    store.save(record)

    assert store.list() == [record]
    loaded = store.get(record.call_sid)
    assert loaded.end_reason == "end_call" and loaded.duration_s == 60
    assert loaded.transcript[-1]["text"] == "Goodbye!"
    assert [r.call_sid for r in store.undelivered(10)] == [record.call_sid]


def test_list_is_newest_first_with_limit_and_offset(store):
    for i, started in enumerate([T0 + 10, T0 + 30, T0, T0 + 20]):
        store.save(make_record(f"CA{i}", started_at=started))
    assert [r.started_at for r in store.list()] == [T0 + 30, T0 + 20, T0 + 10, T0]
    assert [r.call_sid for r in store.list(limit=2)] == ["CA1", "CA3"]
    assert [r.call_sid for r in store.list(limit=2, offset=2)] == ["CA0", "CA2"]
    assert store.list(offset=4) == []


def test_mark_delivered_and_undelivered(store):
    for i in range(3):
        store.save(make_record(f"CA{i}", started_at=T0 + i))
    before = store.get("CA1").to_dict()

    assert store.mark_delivered("CA1") is True
    assert store.mark_delivered("CA-missing") is False
    assert [r.call_sid for r in store.undelivered(10)] == ["CA0", "CA2"]  # oldest first
    assert [r.call_sid for r in store.undelivered(1)] == ["CA0"]
    after = store.get("CA1")
    assert after.webhook_delivered is True
    assert {**after.to_dict(), "webhook_delivered": False} == before  # only the flag changed


def test_two_stores_share_one_file(db_url):
    first, second = CallStore(db_url), CallStore(db_url)  # as two runner processes would
    try:
        first.save(make_record("CA-a", started_at=T0))
        second.save(make_record("CA-b", started_at=T0 + 1))
        assert [r.call_sid for r in first.list()] == ["CA-b", "CA-a"]
        assert second.get("CA-a") == first.get("CA-a")

        second.mark_delivered("CA-a")
        assert first.get("CA-a").webhook_delivered is True
        assert [r.call_sid for r in first.undelivered(10)] == ["CA-b"]

        # Writers at once from both, in threads: nothing lost, no "database is locked".
        def write(store, prefix):
            for i in range(25):
                store.save(make_record(f"{prefix}{i}", started_at=T0 + 100 + i))
                store.save(make_record("CA-shared", bot=prefix))

        threads = [
            threading.Thread(target=write, args=(first, "CA-x")),
            threading.Thread(target=write, args=(second, "CA-y")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        records = first.list(limit=1000)
        assert len(records) == 2 + 50 + 1
        assert second.get("CA-shared").bot in ("CA-x", "CA-y")
    finally:
        first.close()
        second.close()


WRITER = """
import sys
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.store import CallStore

url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = CallStore(url)
for i in range(count):
    store.save(CallRecord(call_sid=f"{prefix}-{i}", bot=prefix, started_at=float(i)))
    store.save(CallRecord(call_sid="shared", bot=prefix, started_at=0.0))
    store.mark_delivered(f"{prefix}-{i // 2}")
store.close()
"""


@pytest.mark.call
def test_two_processes_write_one_database(db_url):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_url, prefix, "40"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("one", "two")
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    with CallStore(db_url) as store:
        records = store.list(limit=1000)
        assert len(records) == 81
        assert {r.call_sid for r in records} >= {f"one-{i}" for i in range(40)}
        assert {r.call_sid for r in records} >= {f"two-{i}" for i in range(40)}
        delivered = {r.call_sid for r in records if r.webhook_delivered}
        assert delivered == {f"{p}-{i}" for p in ("one", "two") for i in range(20)}


async def test_async_wrappers(store):
    record = make_record()
    await store.asave(record)
    assert await store.aget(record.call_sid) == record
    assert await store.alist(limit=5) == [record]
    assert [r.call_sid for r in await store.aundelivered(5)] == [record.call_sid]
    assert await store.amark_delivered(record.call_sid) is True
    assert await store.aundelivered(5) == []
    assert (await store.aget(record.call_sid)).webhook_delivered is True


async def test_in_memory_database_is_shared_across_threads():
    store = CallStore("sqlite://")
    try:
        await store.asave(make_record("CA-mem"))
        assert store.get("CA-mem") is not None
        assert [r.call_sid for r in await store.alist()] == ["CA-mem"]
    finally:
        store.close()


# --- WebhookSender ------------------------------------------------------------------------------


def receiver(*, secret: str | None = None, fail_first: int = 0, refuse: set[str] = frozenset()):
    """A webhook receiver: checks the signature, fails the first requests, stores bodies."""
    app = FastAPI()
    app.state.attempts = 0
    app.state.received = []  # records received and accepted

    @app.post("/calls")
    async def calls(request: Request):
        raw = await request.body()
        app.state.attempts += 1
        if app.state.attempts <= fail_first:
            return Response(status_code=503)
        if secret is not None:
            expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(request.headers.get(SIGNATURE_HEADER, ""), expected):
                return Response(status_code=401)
        data = json.loads(raw)
        if data["call_sid"] in refuse:
            return Response(status_code=422)
        assert request.headers["content-type"] == "application/json"
        app.state.received.append(data)
        return {"ok": True}

    return app


def sender(url: str, **options) -> WebhookSender:
    options = {
        "timeout_s": 5.0,
        "attempts": 3,
        "first_delay_s": 0.01,
        "max_delay_s": 0.02,
        **options,
    }
    return WebhookSender(f"{url}/calls", **options)


@pytest.fixture
def warnings():
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    yield messages
    logger.remove(sink)


@pytest.mark.call
async def test_deliver_signed_record():
    app = receiver(secret=SECRET)
    record = make_record()
    async with LocalServer(app) as server:
        assert await sender(server.url, secret=SECRET).deliver(record) is True
    assert app.state.attempts == 1
    assert app.state.received == [json.loads(record.to_json())]
    assert CallRecord.from_dict(app.state.received[0]) == record


@pytest.mark.call
async def test_receiver_rejects_a_bad_signature(warnings):
    app = receiver(secret=SECRET)
    async with LocalServer(app) as server:
        assert await sender(server.url, secret="wrong-secret").deliver(make_record()) is False
        assert await sender(server.url).deliver(make_record()) is False  # unsigned
    assert app.state.attempts == 2  # a 401 is final: not retried
    assert app.state.received == []
    assert any("HTTP 401" in m for m in warnings)


def test_signature_helpers():
    body = make_record().to_json().encode()
    signature = sign_body(body, SECRET)
    assert signature == hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert verify_signature(body, SECRET, signature)
    assert verify_signature(body, SECRET.encode(), signature.upper())
    assert not verify_signature(body + b" ", SECRET, signature)
    assert not verify_signature(body, "other", signature)
    assert not verify_signature(body, SECRET, None)


@pytest.mark.call
async def test_retries_until_the_receiver_recovers():
    app = receiver(secret=SECRET, fail_first=2)
    async with LocalServer(app) as server:
        assert await sender(server.url, secret=SECRET).deliver(make_record()) is True
    assert app.state.attempts == 3 and len(app.state.received) == 1


@pytest.mark.call
async def test_gives_up_after_the_last_attempt(warnings):
    app = receiver(fail_first=10)
    async with LocalServer(app) as server:
        assert await sender(server.url, attempts=2).deliver(make_record()) is False
    assert app.state.attempts == 2 and app.state.received == []
    assert any("after 2 attempt(s): HTTP 503" in m for m in warnings)


@pytest.mark.call
async def test_timeout_per_request():
    app = FastAPI()
    release = asyncio.Event()
    calls = []

    @app.post("/calls")
    async def slow():
        calls.append(1)
        await release.wait()
        return {"ok": True}

    async with LocalServer(app) as server:
        loop = asyncio.get_running_loop()
        start = loop.time()
        delivered = await sender(server.url, timeout_s=0.2, attempts=2).deliver(make_record())
        elapsed = loop.time() - start
        release.set()
    assert delivered is False and len(calls) == 2
    assert 0.4 <= elapsed < 3


@pytest.mark.call
async def test_redirect_is_not_followed():
    from fastapi.responses import RedirectResponse

    app = FastAPI()
    hits = []

    @app.post("/calls")
    async def moved():
        return RedirectResponse("/elsewhere", status_code=302)

    @app.api_route("/elsewhere", methods=["GET", "POST"])
    async def elsewhere(request: Request):
        hits.append(request.method)
        return {"ok": True}

    async with LocalServer(app) as server:
        assert await sender(server.url).deliver(make_record()) is False
    assert hits == []  # a POST turned into a GET would have looked delivered


def test_retry_delays_grow_up_to_the_maximum():
    webhook = WebhookSender("http://127.0.0.1:1/", first_delay_s=0.5, max_delay_s=3)
    assert [webhook.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]
    with pytest.raises(ValueError):
        WebhookSender("http://127.0.0.1:1/", attempts=0)


@pytest.mark.call
async def test_receiver_down_then_up_delivers_pending(store, warnings):
    port = free_port()  # nothing listens here yet
    url = f"http://127.0.0.1:{port}"
    record = make_record()
    await store.asave(record)
    stored_before = store.get(record.call_sid).to_json()

    webhook = sender(url, secret=SECRET)
    assert await webhook.deliver(record) is False
    assert await webhook.deliver_pending(store) == 0
    assert any("failed after 3 attempt(s)" in m for m in warnings)

    # Nothing lost or changed, still waiting.
    assert store.get(record.call_sid).to_json() == stored_before
    assert [r.call_sid for r in store.undelivered(10)] == [record.call_sid]

    app = receiver(secret=SECRET)
    async with LocalServer(app, port=port):
        assert await webhook.deliver_pending(store) == 1
        assert await webhook.deliver_pending(store) == 0  # nothing left to send
    assert [CallRecord.from_dict(d) for d in app.state.received] == [record]
    assert store.undelivered(10) == []
    delivered = store.get(record.call_sid)
    assert delivered.webhook_delivered is True
    assert {**delivered.to_dict(), "webhook_delivered": False} == json.loads(stored_before)


@pytest.mark.call
async def test_deliver_pending_stops_when_unreachable(store, warnings):
    for i in range(3):
        await store.asave(make_record(f"CA{i}", started_at=T0 + i))
    webhook = sender(f"http://127.0.0.1:{free_port()}", attempts=2)
    assert await webhook.deliver_pending(store) == 0
    # One record tried; the others wait for the receiver rather than each run their retries.
    assert sum("failed after" in m for m in warnings) == 1
    assert len(store.undelivered(10)) == 3


@pytest.mark.call
async def test_deliver_pending_goes_on_past_a_refused_record(store):
    for i, sid in enumerate(["CA-ok1", "CA-bad", "CA-ok2"]):
        await store.asave(make_record(sid, started_at=T0 + i))
    app = receiver(refuse={"CA-bad"})
    async with LocalServer(app) as server:
        assert await sender(server.url).deliver_pending(store) == 2
    assert [d["call_sid"] for d in app.state.received] == ["CA-ok1", "CA-ok2"]
    assert [r.call_sid for r in store.undelivered(10)] == ["CA-bad"]


@pytest.mark.call
async def test_deliver_pending_with_a_shared_session(store):
    import aiohttp

    await store.asave(make_record("CA-a", started_at=T0))
    await store.asave(make_record("CA-b", started_at=T0 + 1))
    app = receiver(secret=SECRET)
    async with LocalServer(app) as server, aiohttp.ClientSession() as session:
        webhook = sender(server.url, secret=SECRET, session=session)
        assert await webhook.deliver_pending(store, limit=1) == 1
        assert await webhook.deliver_pending(store) == 1
        assert not session.closed  # a session given is left open
    assert [d["call_sid"] for d in app.state.received] == ["CA-a", "CA-b"]
    assert store.undelivered(10) == []
