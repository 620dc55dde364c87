"""Campaigns over HTTP against the fake carrier: canceling one, and the campaign command."""

import asyncio
import contextlib
import re

import httpx
import pytest
from conftest import AUTH_TOKEN, ROOT, clean_env, runner_settings, spawn

from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.fake_carrier import FakeCarrier
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.server import LocalServer

pytestmark = pytest.mark.call

KEY = "campaign-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@contextlib.asynccontextmanager
async def campaign_runner(behaviours: dict[str, list[str]], time_scale: float = 0.05):
    """A runner on a local port that dials through the fake carrier."""
    async with RealtimeEmulator() as emulator, FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        server = LocalServer()
        settings = runner_settings(
            emulator,
            server.url,
            twilio_account_sid=rest.account_sid,
            twilio_api_url=rest.url,
            twilio_phone_number="+12125550000",
            runner_api_key=KEY,
        )
        server.app = create_app(settings)
        async with (
            server,
            FakeCarrier(rest, behaviours=behaviours, time_scale=time_scale) as carrier,
            httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=30) as client,
        ):
            yield server, carrier, client


async def until(client: httpx.AsyncClient, campaign_id: str, done) -> dict:
    """The campaign once ``done(campaign)`` holds (polled; the test's timeout bounds it)."""
    while True:
        shown = (await client.get(f"/api/campaigns/{campaign_id}")).json()
        if done(shown):
            return shown
        await asyncio.sleep(0.1)


async def test_canceling_a_campaign_over_http():
    numbers = ["+12125550100", "+12125550101", "+12125550102"]
    async with campaign_runner({numbers[0]: ["no_answer"]}, time_scale=0.2) as (_, carrier, api):
        created = await api.post(
            "/campaigns",
            json={
                "numbers": numbers,
                "bot": "survey",
                "rate_per_minute": 6,  # the next call 10 s after the first
                "calling_hours": "00:00-24:00",
                "ring_secs": 20,
            },
        )
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        cancel = f"/api/campaigns/{campaign_id}/cancel"

        # The key is checked before anything else is looked at.
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
            refused = await api.post(cancel, headers=headers, content=b"x" * 1000)
            assert refused.status_code == 401
            unknown = await api.post("/api/campaigns/cmp_0000000000000000/cancel", headers=headers)
            assert unknown.status_code == 401

        # The first number rings: it is being dialed when the campaign is canceled.
        ringing = await until(api, campaign_id, lambda c: c["numbers"][0]["call_sid"] is not None)
        assert ringing["states"] == {"dialing": 1, "pending": 2}
        answer = await api.post(cancel)
        assert answer.status_code == 200 and answer.json() == {"id": campaign_id, "canceled": 2}
        again = await api.post(cancel)
        assert again.status_code == 200 and again.json()["canceled"] == 0
        for unknown_id in ("cmp_0000000000000000", "nope"):
            assert (await api.post(f"/api/campaigns/{unknown_id}/cancel")).status_code == 404

        # The call under way ends as it does, and is not tried again.
        shown = await until(api, campaign_id, lambda c: c["finished_at"] is not None)
        await carrier.wait_idle(timeout=30)
        assert carrier.problems == []
        assert shown["status"] == "canceled"
        assert {n["number"]: (n["outcome"], n["attempts"]) for n in shown["numbers"]} == {
            numbers[0]: ("no_answer", 1),
            numbers[1]: ("canceled", 0),
            numbers[2]: ("canceled", 0),
        }
        assert len(carrier.placed) == 1
        assert (await api.post(cancel)).json()["canceled"] == 0


async def run_command(*args: str) -> tuple[int, str, str]:
    process = await spawn(
        "-m", "pipecat_realtime_twilio", "campaign", *args, cwd=ROOT, env=clean_env(), capture=True
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, out.decode(), err.decode()


async def test_the_campaign_command_follows_a_campaign_to_its_end(tmp_path):
    behaviours = {
        "+12125550100": ["busy"],
        "+12125550101": ["machine"],
        "+12125550102": ["invalid"],
    }
    csv = tmp_path / "numbers.csv"
    csv.write_text("number\n+12125550100\n+12125550101\n+12125550102\nnope\n")
    async with campaign_runner(behaviours) as (server, carrier, api):
        common = ["--bot", "survey", "--url", server.url, "--api-key", KEY]
        options = ["--rate", "600", "--hours", "00:00-24:00", "--attempts", "1"]
        status, out, err = await run_command(str(csv), *common, *options, "--name", "four")
        assert status == 0, err
        lines = out.splitlines()
        assert "\r" not in out and "\x1b" not in out  # not a terminal: a line per change
        header = re.fullmatch(
            r"Campaign (cmp_[0-9a-f]{16}) \(four\): 4 numbers, bot 'survey'; "
            r"1 invalid or repeated",
            lines[0],
        )
        assert header is not None, lines
        assert lines[1].startswith("  line 5: nope: ")
        progress = lines[2:]
        assert progress and all(line.startswith("[") for line in progress)
        assert all(a != b for a, b in zip(progress, progress[1:], strict=False))
        last = progress[-1]
        assert last.startswith("[####################] 4/4  ")
        for part in ("invalid 2", "busy 1", "voicemail 1"):
            assert part in last
        shown = (await api.get(f"/api/campaigns/{header[1]}")).json()
        assert shown["status"] == "done" and shown["done"] == 4

        # --detach: the campaign starts, the command returns with its id.
        status, out, err = await run_command(str(csv), *common, *options, "--detach")
        assert status == 0, err
        [line, _] = out.splitlines()
        detached = re.match(r"Campaign (cmp_[0-9a-f]{16}) ", line)
        assert detached is not None and detached[1] != header[1]
        assert (await api.get(f"/api/campaigns/{detached[1]}")).status_code == 200
        await until(api, detached[1], lambda c: c["status"] == "done")
        await carrier.wait_idle(timeout=30)
        assert carrier.problems == []

        # A refused campaign: one line, exit 1.
        status, out, err = await run_command(str(csv), *common, "--bot", "nobody")
        assert status == 1 and "unknown bot 'nobody'" in err and out == ""
