"""The console's Campaigns view in Chromium: progress bars, outcomes, a campaign's numbers."""

import time

import pytest
from conftest import phone_call
from devtools import chromium, needs_chromium, screenshot_dir

from pipecat_realtime_twilio.runner.campaign_csv import read_csv
from pipecat_realtime_twilio.runner.campaign_model import CampaignSpec

pytestmark = [pytest.mark.call, needs_chromium]

KEY = "console-campaigns-key"
NAME = "<img src=x onerror=alert(1)> spring"  # shown as text, never as HTML
SID = "CA" + "ab" * 16


def seed(store) -> str:
    """A campaign of four numbers: one answered, one busy, one pending, one invalid."""
    now = time.time()
    spec = CampaignSpec(NAME, "survey", "+12125550000", 30.0, "00:00-24:00", 3, 600.0, 25)
    numbers = read_csv("number\n+12125550100\n+12125550101\n+12125550102\nnot a number\n")
    campaign = store.create(spec, numbers, now)
    first = store.claim("test", now).claim
    store.progress(campaign, first.number_id, 1, SID, "in-progress", 2, None, None, now)
    store.amd(campaign, first.number_id, 1, SID, "human", now)
    store.progress(campaign, first.number_id, 1, SID, "completed", 3, None, 40, now)
    second = store.claim("test", now + 2).claim
    store.progress(campaign, second.number_id, 1, "CA" + "cd" * 16, "busy", 2, None, 0, now)
    return campaign


async def test_the_campaigns_view_in_a_browser(tmp_path):
    shots = screenshot_dir(tmp_path)
    async with phone_call(settings={"runner_api_key": KEY}) as (_, runner, caller):
        campaign = seed(runner.campaigns.store)
        async with chromium(tmp_path / "profile", state="window.consoleState || null") as page:
            await page.navigate(f"{caller.server_url}/console#/campaigns")
            await page.wait_for("!document.getElementById('login-view').hidden")
            await page.type_into("#key", KEY)
            await page.click("#login button[type=submit]")
            await page.wait_for(
                "consoleState.view === 'campaigns' && "
                "document.querySelectorAll('#campaigns-table tbody tr').length === 1"
            )
            cells = await page.evaluate(
                "[...document.querySelectorAll('#campaigns-table tbody td')]"
                ".map(td => td.textContent)"
            )
            assert cells[1] == NAME and cells[2] == "survey" and cells[3] == "running"
            assert cells[4] == "2/4"
            assert cells[5] == "answered 1 · invalid 1"
            width = await page.evaluate("document.querySelector('.progress-fill').style.width")
            assert width == "50%"
            assert await page.evaluate("document.querySelectorAll('img').length") == 0
            await page.screenshot(shots / "console-campaigns.png")

            await page.click(f"#campaigns-table tr[data-id={campaign}]")
            await page.wait_for(
                "consoleState.view === 'campaign' && "
                "document.querySelectorAll('#numbers-table tbody tr').length === 4"
            )
            assert (
                await page.evaluate("document.getElementById('campaign-title').textContent") == NAME
            )
            rows = await page.evaluate(
                "[...document.querySelectorAll('#numbers-table tbody tr')]"
                ".map(tr => [...tr.children].map(td => td.textContent))"
            )
            assert rows[0] == [
                "2",
                "+12125550100",
                "done",
                "1",
                "completed",
                "human",
                "answered",
                SID,
            ]
            assert rows[1][1:4] == ["+12125550101", "pending", "1"] and rows[1][4] == "busy"
            assert rows[2][2] == "pending" and rows[2][7] == "–"
            assert rows[3][1:3] == ["not a number", "done"] and rows[3][6] == "invalid"
            link = await page.evaluate(
                "document.querySelector('#numbers-table a').getAttribute('href')"
            )
            assert link == f"#/calls/{SID}"
            await page.screenshot(shots / "console-campaign.png")
