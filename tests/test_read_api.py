"""The read API: /api/calls with its filters, one record, its recording, the overview, the key.

The query parameters are read by pure functions (tested without a server); the routes are
tested on a runner with made-up records and one real call through the emulator, recorded.
"""

import io
import time
import wave

import aiohttp
import pytest
from conftest import phone_call
from fastapi import HTTPException
from sample_calls import BOTS, DAY, SHOWCASE, sample_records, showcase_record, showcase_wav

from pipecat_realtime_twilio.runner.console import byte_range, call_query, overview_range
from pipecat_realtime_twilio.runner.records import CallRecord

KEY = "read-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NOW = 1_764_500_000.0  # 2025-11-30 10:53:20 UTC


# --- reading the parameters ---------------------------------------------------------------------


def test_call_query_reads_every_filter():
    query = call_query(
        {
            "bot": "survey",
            "since": "2025-11-01",
            "until": "1764500000",
            "reason": "failed",
            "direction": "outbound",
            "number": "+1 555 0100",
            "search": "parking",
            "limit": "500",
            "offset": "20",
        },
        now=NOW,
    )
    assert (query.bot, query.end_reason, query.direction) == ("survey", "failed", "outbound")
    assert query.since == 1_761_955_200.0 and query.until == NOW
    assert (query.number, query.search, query.limit, query.offset) == (
        "+1 555 0100",
        "parking",
        500,
        20,
    )
    assert call_query({"since": "7d"}, now=NOW).since == NOW - 7 * DAY
    assert call_query({"since": "2025-11-30T10:00:00+01:00"}, now=NOW).since == NOW - 6800
    defaults = call_query({"bot": "  ", "search": ""})
    assert defaults.bot is None and defaults.search is None
    assert (defaults.limit, defaults.offset) == (50, 0)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"since": "yesterday-ish"}, "since"),
        ({"until": "2025-13-45"}, "until"),
        ({"since": "2025-11-02", "until": "2025-11-01"}, "since"),
        ({"limit": "501"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"direction": "sideways"}, "direction"),
        ({"search": "x" * 201}, "search"),
    ],
)
def test_call_query_refuses_bad_parameters_naming_them(params, named):
    with pytest.raises(HTTPException) as refused:
        call_query(params, now=NOW)
    assert refused.value.status_code == 400
    assert str(refused.value.detail).startswith(f"{named}:")


def test_overview_range_covers_whole_utc_days():
    since, until = overview_range({"days": "7"}, now=NOW)
    assert until == 1_764_547_200.0  # 2025-12-01 00:00 UTC: today is included
    assert until - since == 7 * DAY
    assert overview_range({}, now=NOW)[1] - overview_range({}, now=NOW)[0] == 30 * DAY
    assert overview_range({"since": "2025-11-01", "until": "2025-11-03"}, now=NOW) == (
        1_761_955_200.0,
        1_762_128_000.0,
    )
    for bad in ({"days": "0"}, {"days": "367"}, {"since": "2020-01-01"}, {"until": "nope"}):
        with pytest.raises(HTTPException) as refused:
            overview_range(bad, now=NOW)
        assert refused.value.status_code == 400


def test_byte_ranges():
    assert byte_range(None, 100) is None
    assert byte_range("bytes=0-9", 100) == (0, 9)
    assert byte_range("bytes=90-", 100) == (90, 99)
    assert byte_range("bytes=90-500", 100) == (90, 99)
    assert byte_range("bytes=-10", 100) == (90, 99)
    assert byte_range("bytes=-500", 100) == (0, 99)
    assert byte_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole body
    assert byte_range("items=0-1", 100) is None
    assert byte_range("bytes=9-3", 100) is None
    for past in ("bytes=100-", "bytes=100-200"):
        with pytest.raises(HTTPException) as refused:
            byte_range(past, 100)
        assert refused.value.status_code == 416
        assert refused.value.headers == {"Content-Range": "bytes */100"}


# --- the routes -----------------------------------------------------------------------------------


async def stored(runner, records: list[CallRecord]) -> None:
    for record in records:
        await runner.store.asave(record)


@pytest.mark.call
async def test_the_api_and_the_console_are_off_without_a_key(runner):
    async with aiohttp.ClientSession() as http:
        for path in (
            "/api/calls",
            f"/api/calls/{SHOWCASE}",
            "/api/overview",
            "/api/info",
            "/console",
        ):
            async with http.get(f"{runner.url}{path}", headers=AUTH) as response:
                assert response.status == 404, path
                assert "RUNNER_API_KEY" in (await response.json())["detail"]
        async with http.get(f"{runner.url}/console/assets/console.js") as response:
            assert response.status == 404


@pytest.mark.call
async def test_the_key_is_checked_before_the_store_is_read(monkeypatch):
    async with phone_call(settings={"runner_api_key": KEY}) as (_, runner, caller):
        touched = []

        async def spy(*args, **kwargs):
            touched.append(args)
            raise AssertionError("the store was read")

        for name in ("asearch", "aget", "aoverview"):
            monkeypatch.setattr(runner.store, name, spy)
        url = caller.server_url
        paths = [
            "/api/calls?since=garbage",
            f"/api/calls/{SHOWCASE}",
            f"/api/calls/{SHOWCASE}/recording",
            "/api/overview",
            "/api/info",
        ]
        async with aiohttp.ClientSession() as http:
            for path in paths:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                    async with http.get(f"{url}{path}", headers=headers) as response:
                        assert response.status == 401, (path, headers)
                        assert response.headers["WWW-Authenticate"] == "Bearer"
            # A CallSid of the wrong form is refused without asking the store.
            for bad in ("CA123", "../../etc/passwd", "CA" + "g" * 32):
                async with http.get(f"{url}/api/calls/{bad}", headers=AUTH) as response:
                    assert response.status in (400, 404), bad
        assert touched == []


@pytest.mark.call
async def test_calls_are_listed_filtered_and_paged():
    async with phone_call(settings={"runner_api_key": KEY}) as (_, runner, caller):
        now = time.time()
        records = sample_records(now)
        await stored(runner, records)
        url = f"{caller.server_url}/api/calls"

        async with aiohttp.ClientSession(headers=AUTH) as http:

            async def get(**params):
                async with http.get(url, params={k: str(v) for k, v in params.items()}) as r:
                    assert r.status == 200, await r.text()
                    assert r.headers["Cache-Control"] == "no-store"
                    return await r.json()

            def sids(page):
                return [c["call_sid"] for c in page["calls"]]

            everything = await get()
            newest_first = sorted(records, key=lambda r: -r.started_at)
            assert everything["total"] == len(records) and everything["limit"] == 50
            assert sids(everything) == [r.call_sid for r in newest_first]
            first = everything["calls"][0]
            assert "transcript" not in first and first["turns"] == 3
            assert first == {
                **{k: v for k, v in newest_first[0].to_dict().items() if k != "transcript"},
                "turns": 3,
            }

            survey = await get(bot="survey")
            assert sids(survey) == [r.call_sid for r in newest_first if r.bot == "survey"]
            assert survey["total"] == len(survey["calls"]) > 0

            since, until = now - 2.5 * DAY, now - 0.5 * DAY
            ranged = await get(since=since, until=until)
            expected = [r.call_sid for r in newest_first if since <= r.started_at < until]
            assert sids(ranged) == expected and expected
            iso = await get(since=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since)))
            assert set(sids(iso)) == {r.call_sid for r in records if r.started_at >= int(since)}

            failed = await get(reason="failed")
            assert {c["end_reason"] for c in failed["calls"]} == {"failed: connect: quota"}
            assert failed["total"] == sum(r.end_reason.startswith("failed") for r in records)

            outbound = await get(direction="outbound")
            assert {c["direction"] for c in outbound["calls"]} == {"outbound"}
            assert outbound["total"] == sum(r.direction == "outbound" for r in records)

            one = records[5]
            by_number = await get(number=one.from_number.replace("+1555", "+1 555 "))
            assert sids(by_number) == [one.call_sid]
            assert (await get(number="+15559990000"))["total"] == len(records)  # "to"

            parking = await get(search="PARKING")
            assert set(sids(parking)) == {
                r.call_sid for r in records if "parking" in r.transcript[1]["text"]
            }
            assert (await get(search="100%_sure"))["total"] == 0  # LIKE wildcards are text

            paged = [await get(limit=4, offset=offset) for offset in range(0, len(records), 4)]
            assert [sid for page in paged for sid in sids(page)] == sids(everything)
            assert {page["total"] for page in paged} == {len(records)}

            async with http.get(url, params={"since": "someday"}) as response:
                assert response.status == 400
                assert (await response.json())["detail"].startswith("since: 'someday' is not")
            async with http.get(url, params={"limit": "1000"}) as response:
                assert response.status == 400
                assert "limit" in (await response.json())["detail"]


@pytest.mark.call
async def test_one_record_and_the_overview():
    async with phone_call(settings={"runner_api_key": KEY}) as (_, runner, caller):
        now = time.time()
        records = sample_records(now)
        showcase = showcase_record(now - 600, location=None)
        await stored(runner, [*records, showcase])
        url = caller.server_url
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.get(f"{url}/api/calls/{SHOWCASE}") as response:
                assert response.status == 200
                assert await response.json() == showcase.to_dict()
            async with http.get(f"{url}/api/calls/{'CA' + 'a' * 32}") as response:
                assert response.status == 404
            async with http.get(f"{url}/api/calls/{SHOWCASE}/recording") as response:
                assert response.status == 404  # not recorded
                assert "no recording" in (await response.json())["detail"]

            async with http.get(f"{url}/api/overview", params={"days": "7"}) as response:
                assert response.status == 200
                overview = await response.json()
            everyone = [*records, showcase]
            assert len(overview["days"]) == 7
            assert overview["totals"]["calls"] == len(everyone)
            assert sum(day["calls"] for day in overview["days"]) == len(everyone)
            expected_cost = sum(r.cost_usd for r in everyone)
            assert overview["totals"]["cost_usd"] == pytest.approx(expected_cost)
            assert {b["bot"] for b in overview["by_bot"]} == set(BOTS)
            reasons = {r["reason"]: r["calls"] for r in overview["end_reasons"]}
            assert reasons["failed"] == sum(r.end_reason.startswith("failed") for r in everyone)
            assert overview["until"] - overview["since"] == 7 * DAY
            assert any(day["response_p95_ms"] for day in overview["days"])
            async with http.get(f"{url}/api/overview", params={"days": "9999"}) as response:
                assert response.status == 400


@pytest.mark.call
async def test_a_recorded_call_is_served_with_the_key_and_ranges(tmp_path):
    settings = {
        "runner_api_key": KEY,
        "record_calls": True,
        "recordings_dir": str(tmp_path / "recordings"),
    }
    async with phone_call(settings=settings) as (_, runner, caller):
        await caller.call()
        await caller.wait_heard(500, timeout=10)
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        await runner.records.settle(timeout=10)
        url = f"{caller.server_url}/api/calls/{caller.call_sid}/recording"
        loop_deadline = time.monotonic() + 10
        record = await runner.store.aget(caller.call_sid)
        while (record is None or record.recording is None) and time.monotonic() < loop_deadline:
            await runner.records.settle(timeout=1)
            record = await runner.store.aget(caller.call_sid)
        assert record is not None and record.recording is not None
        wav = await runner.recordings.read(record.recording["location"])
        assert wav

        async with aiohttp.ClientSession() as http:
            async with http.get(url) as refused:
                assert refused.status == 401
            async with http.get(url, headers={"Authorization": "Bearer nope"}) as refused:
                assert refused.status == 401
            async with http.get(url, headers=AUTH) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "audio/wav"
                assert response.headers["Accept-Ranges"] == "bytes"
                body = await response.read()
            assert body == wav
            with wave.open(io.BytesIO(body)) as w:
                assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
            ranged = {**AUTH, "Range": "bytes=44-1043"}
            async with http.get(url, headers=ranged) as response:
                assert response.status == 206
                assert response.headers["Content-Range"] == f"bytes 44-1043/{len(wav)}"
                assert await response.read() == wav[44:1044]
            async with http.get(url, headers={**AUTH, "Range": "bytes=-100"}) as response:
                assert response.status == 206 and await response.read() == wav[-100:]
            past = {**AUTH, "Range": f"bytes={len(wav)}-"}
            async with http.get(url, headers=past) as response:
                assert response.status == 416
                assert response.headers["Content-Range"] == f"bytes */{len(wav)}"

        # A made-up call's recording, saved through the same store, is served too.
        location = await runner.recordings.save(SHOWCASE, showcase_wav(), time.time())
        await runner.store.asave(showcase_record(time.time() - 60, location))
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.get(f"{caller.server_url}/api/calls/{SHOWCASE}/recording") as r:
                assert r.status == 200 and await r.read() == showcase_wav()


@pytest.mark.call
async def test_console_assets_have_their_types_and_are_cached():
    async with phone_call(settings={"runner_api_key": KEY}) as (_, _runner, caller):
        base = f"{caller.server_url}/console"
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as page:  # the page itself asks for the key
                assert page.status == 200
                assert page.headers["Content-Type"].startswith("text/html")
                assert "script-src 'self'" in page.headers["Content-Security-Policy"]
                html = await page.text()
            assert "{{version}}" not in html and "console/assets/console.js?v=" in html
            types = {
                "console.js": "text/javascript; charset=utf-8",
                "console.css": "text/css; charset=utf-8",
                "uplot.min.js": "text/javascript; charset=utf-8",
                "uplot.min.css": "text/css; charset=utf-8",
                "LICENSE.uplot": "text/plain; charset=utf-8",
            }
            for name, content_type in types.items():
                async with http.get(f"{base}/assets/{name}") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == content_type
                    assert response.headers["Cache-Control"] == "public, max-age=86400"
                    etag = response.headers["ETag"]
                    assert await response.read()
                async with http.get(f"{base}/assets/{name}", headers={"If-None-Match": etag}) as r:
                    assert r.status == 304
            for missing in ("playground.html", "..%2Fsettings.py", "caller.wav"):
                async with http.get(f"{base}/assets/{missing}") as response:
                    assert response.status == 404


@pytest.mark.call
async def test_info_says_what_the_runner_keeps(tmp_path):
    settings = {
        "runner_api_key": KEY,
        "call_webhook_url": "http://127.0.0.1:9/calls",
        "record_calls": True,
        "recordings_dir": str(tmp_path),
    }
    async with phone_call(settings=settings) as (_, runner, caller):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{caller.server_url}/api/info", headers=AUTH) as response:
                assert response.status == 200
                info = await response.json()
                instances = info.pop("instances")
                assert info == {
                    "webhook_configured": True,
                    "record_calls": True,
                    "twilio_record": False,
                }
                # Without REDIS_URL the registry is this instance alone.
                assert [i["id"] for i in instances] == [runner.admission.shared.instance_id]
                assert instances[0]["draining"] is False and instances[0]["max_calls"] > 0
