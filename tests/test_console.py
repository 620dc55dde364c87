"""The console in headless Chromium (Debian's): log in, list and filter calls, a call's page
that plays the recording from a clicked line, and the overview's charts.

With ``CONSOLE_SCREENSHOTS=docs`` the screenshots of docs/ are made anew.
"""

import json
import time

import pytest
from conftest import phone_call
from devtools import chromium, needs_chromium, screenshot_dir
from sample_calls import SHOWCASE, SHOWCASE_LINES, sample_records, showcase_record, showcase_wav

pytestmark = [pytest.mark.call, needs_chromium]

KEY = "console-test-key"

ROWS = "[...document.querySelectorAll('#calls-table tbody tr')]"
SHOWN_SIDS = f"{ROWS}.map(tr => tr.dataset.sid)"


def shown(sids: list[str]) -> str:
    """A JavaScript test that the list shows these calls, in this order."""
    listed = json.dumps(sids, separators=(",", ":"))
    return f"JSON.stringify({SHOWN_SIDS}) === {json.dumps(listed)}"


async def seed(runner, caller) -> dict:
    """A real call through the emulator, made-up calls over five days, and the showcase call."""
    await caller.call()
    await caller.wait_heard(500, timeout=10)
    await caller.hangup()
    await caller.wait_until(lambda: runner.finished, timeout=10)
    await runner.records.settle(timeout=10)
    now = time.time()
    records = sample_records(now)
    showcase_start = now - 1800
    location = await runner.recordings.save(SHOWCASE, showcase_wav(), showcase_start)
    records.append(showcase_record(showcase_start, location))
    for record in records:
        await runner.store.asave(record)
    page = await runner.store.asearch(_query())
    assert caller.call_sid in {r.call_sid for r in page.records}  # the real call is kept
    return {r.call_sid: r for r in page.records}


def _query(**filters):
    from pipecat_realtime_twilio.runner.queries import CallQuery

    return CallQuery(limit=500, **filters)


async def test_the_console_in_a_browser(tmp_path):
    shots = screenshot_dir(tmp_path)
    settings = {
        "runner_api_key": KEY,
        "record_calls": True,
        "recordings_dir": str(tmp_path / "recordings"),
    }
    async with phone_call(settings=settings) as (_, runner, caller):
        calls = await seed(runner, caller)
        async with chromium(tmp_path / "profile", state="window.consoleState || null") as page:
            # Without the key: the login form; a wrong key is refused.
            await page.navigate(f"{caller.server_url}/console")
            await page.wait_for("!document.getElementById('login-view').hidden")
            await page.type_into("#key", "not-the-key")
            await page.click("#login button[type=submit]")
            await page.wait_for("!document.getElementById('login-error').hidden")
            refused = await page.evaluate("document.getElementById('login-error').textContent")
            assert refused == "The key was refused."
            assert await page.evaluate("sessionStorage.getItem('prt-console-key')") is None

            # The key: every call, newest first.
            await page.type_into("#key", KEY)
            await page.click("#login button[type=submit]")
            await page.wait_for("window.consoleState.view === 'calls' && consoleState.loads > 0")
            newest_first = sorted(calls.values(), key=lambda r: -r.started_at)
            assert await page.evaluate(SHOWN_SIDS) == [r.call_sid for r in newest_first]
            total = await page.evaluate("document.getElementById('calls-range').textContent")
            assert total == f"1–{len(calls)} of {len(calls)}"
            await page.screenshot(shots / "console-calls.png")

            # A filter narrows the list: a bot, then words of the transcript too.
            await page.type_into("#filters input[name=bot]", "survey")
            await page.click("#filters button[type=submit]")
            survey = [r.call_sid for r in newest_first if r.bot == "survey"]
            await page.wait_for(shown(survey))
            assert 0 < len(survey) < len(calls)
            await page.type_into("#filters input[name=search]", "parking")
            await page.click("#filters button[type=submit]")
            both = [s for s in survey if "parking" in calls[s].transcript[1]["text"]]
            await page.wait_for(shown(both))
            assert 0 < len(both) < len(survey)
            assert "search=parking" in await page.evaluate("location.hash")
            await page.click("#clear-filters")
            await page.wait_for(f"{ROWS}.length === {len(calls)}")

            # The showcase call's page: facts, cost, analysis, timeline, transcript, tools.
            await page.click(f"#calls-table tr[data-sid={SHOWCASE}]")
            await page.wait_for(
                "consoleState.view === 'call' && consoleState.audio !== null"
                " && document.getElementById('player').readyState >= 1"
            )
            assert await page.evaluate("location.hash") == f"#/calls/{SHOWCASE}"
            facts = await page.evaluate(
                "Object.fromEntries([...document.querySelectorAll('#call-facts dt')].map(dt =>"
                " [dt.textContent, dt.nextElementSibling.textContent]))"
            )
            assert facts["Webhook"] == "no webhook configured"  # none is set in this runner
            showcase = calls[SHOWCASE]
            lines = await page.evaluate(
                "[...document.querySelectorAll('#transcript li')].map(li =>"
                " [li.querySelector('.at').textContent, li.querySelector('.text').textContent])"
            )
            assert lines == [[f"0:{int(at):02d}", text] for _, at, text in SHOWCASE_LINES]
            duration = await page.evaluate("document.getElementById('player').duration")
            assert duration == pytest.approx(showcase.duration_s, abs=0.05)
            marks = await page.evaluate("document.querySelectorAll('#timeline g.mark').length")
            assert marks == sum(
                len(getattr(showcase, name))
                for name in (
                    "transcript",
                    "turn_latencies",
                    "barge_ins",
                    "tool_calls",
                    "keypad",
                    "transfers",
                )
            )
            analysis = await page.evaluate(
                "Object.fromEntries([...document.querySelectorAll('#analysis dt')].map(dt =>"
                " [dt.textContent, dt.nextElementSibling.textContent]))"
            )
            assert analysis["outcome"] == "booked" and analysis["callback requested"] == "no"
            assert analysis["summary"] == showcase.analysis["fields"]["summary"]
            costs = await page.evaluate(
                "[...document.querySelectorAll('#cost-table tr')].map(tr => tr.textContent)"
            )
            assert costs[-1] == "total$0.042100" and "audio out$0.028100" in costs
            # Text from a record stays text: the tool's error is shown, not run.
            assert await page.evaluate("document.querySelectorAll('main script').length") == 0
            tools = await page.evaluate("document.getElementById('tools-table').textContent")
            assert "error: <script>alert(1)</script> timed out" in tools

            # A click on a line plays the recording from that line.
            _, at, text = SHOWCASE_LINES[3]
            await page.click("#transcript li:nth-child(4)")
            await page.wait_for("!document.getElementById('player').paused")
            position = await page.evaluate(
                "(() => { const a = document.getElementById('player'); a.pause();"
                " return a.currentTime; })()"
            )
            assert at <= position < at + 2.5, position  # it may have played a little since
            await page.wait_for(
                "document.querySelector('#transcript li.playing .text')?.textContent === "
                + json.dumps(text)
            )
            await page.screenshot(shots / "console-call.png")

            # The overview: totals, and a uPlot chart per figure with a point per datum.
            await page.click("#nav a[data-view=overview]")
            await page.wait_for("consoleState.view === 'overview' && consoleState.overview")
            overview = await page.evaluate("consoleState.overview")
            expected = await runner.store.aoverview(overview["since"], overview["until"])
            assert {k: overview[k] for k in expected} == expected
            assert len(overview["days"]) == 30
            assert overview["totals"]["calls"] == len(calls)
            charts = await page.evaluate(
                "Object.fromEntries(Object.entries(consoleCharts).map(([name, u]) => [name, {"
                " points: u.data[0].length, series: u.data.slice(1),"
                " canvas: [u.root.querySelector('canvas').width,"
                " u.root.querySelector('canvas').height]}]))"
            )
            assert set(charts) == {"volume", "cost", "latency", "bots", "reasons"}
            for name, chart in charts.items():
                width, height = chart["canvas"]
                assert width > 100 and height > 100, name
            days = overview["days"]
            assert charts["volume"]["series"] == [
                [d["calls"] for d in days],
                [d["minutes"] for d in days],
            ]
            assert charts["cost"]["series"] == [[d["cost_usd"] for d in days]]
            assert charts["latency"]["series"] == [
                [d["response_p50_ms"] for d in days],
                [d["response_p95_ms"] for d in days],
            ]
            assert charts["bots"]["points"] == len(overview["by_bot"]) == 3
            assert charts["bots"]["series"] == [[b["cost_usd"] for b in overview["by_bot"]]]
            assert charts["reasons"]["points"] == len(overview["end_reasons"])
            assert charts["reasons"]["series"] == [[r["calls"] for r in overview["end_reasons"]]]
            tiles = await page.evaluate("document.getElementById('totals').textContent")
            assert f"{len(calls)}calls" in tiles
            await page.screenshot(shots / "console-overview.png")

            # Log out: the key is forgotten.
            await page.click("#logout")
            await page.wait_for("!document.getElementById('login-view').hidden")
            assert await page.evaluate("sessionStorage.getItem('prt-console-key')") is None
