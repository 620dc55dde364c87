"""A campaign of 50 numbers against the fake carrier: every number ends with one outcome."""

import asyncio
import time

import httpx
import pytest
from conftest import AUTH_TOKEN, runner_settings

from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.fake_carrier import FakeCarrier
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.server import LocalServer

RATE = 150.0  # calls per minute: one every 0.4 s
JITTER_SECS = 0.15  # how late one create may reach Twilio on a loaded machine (seen: 0.11 s)
KEY = "campaign-key"


def number(n: int) -> str:
    return f"+1212555{n:04d}"


BEHAVIOURS: dict[str, list[str]] = {
    **{number(n): ["busy"] for n in range(0, 4)},
    **{number(n): ["no_answer"] for n in range(4, 7)},
    **{number(n): ["failed"] for n in range(7, 9)},
    **{number(n): ["machine"] for n in range(9, 14)},
    **{number(n): ["machine_hangup"] for n in range(14, 16)},
    number(16): ["fax"],
    number(17): ["invalid"],
    **{number(n): ["busy", "human"] for n in range(18, 21)},
}
EXPECTED = {
    **{number(n): "busy" for n in range(0, 4)},
    **{number(n): "no_answer" for n in range(4, 7)},
    **{number(n): "failed" for n in range(7, 9)},
    **{number(n): "voicemail" for n in range(9, 14)},
    # A machine that hangs up before its beep gives Twilio no AMD result: as for a person
    # who hangs up while AMD listens, the callbacks cannot tell them apart.
    **{number(n): "hung_up" for n in range(14, 16)},
    number(16): "machine",
    number(17): "invalid",
    **{number(n): "answered" for n in range(18, 50)},
}


@pytest.mark.call
async def test_a_campaign_of_fifty_numbers_reaches_every_outcome_at_its_pace():
    async with RealtimeEmulator() as emulator, FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        server = LocalServer()
        settings = runner_settings(
            emulator,
            server.url,
            bot="default",
            twilio_account_sid=rest.account_sid,
            twilio_api_url=rest.url,
            twilio_phone_number="+12125550000",
            runner_api_key=KEY,
            max_calls=50,
        )
        bots = load_bots(settings.bots_dir)
        voicemail = bots["survey"].voicemail
        assert voicemail
        server.app = create_app(settings, bots)
        runner = server.app.state.runner
        async with (
            server,
            FakeCarrier(rest, behaviours=BEHAVIOURS, time_scale=0.05) as carrier,
            httpx.AsyncClient(base_url=server.url, timeout=30) as client,
        ):
            headers = {"Authorization": f"Bearer {KEY}"}
            csv = "number\n" + "".join(f"{number(n)}\n" for n in range(50)) + f"{number(3)}\n"
            created = await client.post(
                "/campaigns",
                headers=headers,
                json={
                    "name": "fifty",
                    "bot": "survey",
                    "csv": csv,
                    "rate_per_minute": RATE,
                    "calling_hours": "00:00-24:00",
                    "max_attempts": 3,
                    "retry_secs": 0.5,
                    "ring_secs": 20,
                },
            )
            assert created.status_code == 201, created.text
            body = created.json()
            assert (body["numbers"], body["valid"]) == (50, 50)
            assert [d["line"] for d in body["duplicates"]] == [52]
            campaign_id = body["id"]
            started = time.monotonic()
            while True:
                progress = (
                    await client.get(f"/api/campaigns/{campaign_id}", headers=headers)
                ).json()
                if progress["status"] == "done":
                    break
                assert time.monotonic() - started < 120, progress["states"]
                await asyncio.sleep(0.5)
            await carrier.wait_idle(timeout=30)
            numbers = (
                await client.get(f"/api/campaigns/{campaign_id}?limit=100", headers=headers)
            ).json()["numbers"]

        assert carrier.problems == []
        assert {n["number"]: n["outcome"] for n in numbers} == EXPECTED
        assert all(n["state"] == "done" for n in numbers)
        # Busy, no-answer and failed numbers were tried three times; busy-then-human twice.
        tries = {n["number"]: n["attempts"] for n in numbers}
        assert all(tries[number(n)] == 3 for n in range(0, 9))
        assert all(tries[number(n)] == 2 for n in range(18, 21))
        # Retries waited for their backoff: 0.5 s, then 1 s.
        placed_at: dict[str, list[float]] = {}
        for call in carrier.placed:
            placed_at.setdefault(call.number, []).append(call.at)
        for n in range(0, 4):
            times = placed_at[number(n)]
            assert times[1] - times[0] >= 0.5 - 0.05 and times[2] - times[1] >= 1.0 - 0.05
        # The machines heard the survey bot's voicemail after their beep; nobody else did.
        assert {n: texts for n, texts in carrier.voicemails.items() if texts} == {
            number(n): [voicemail] for n in range(9, 14)
        }
        # Every human reached the bot on a real stream: its call has a record.
        for entry in numbers:
            if entry["outcome"] == "answered":
                for _ in range(50):
                    if await runner.store.aget(entry["call_sid"]) is not None:
                        break
                    await asyncio.sleep(0.1)
                record = await runner.store.aget(entry["call_sid"])
                assert record is not None and record.bot == "survey", entry
        # The pace, as Twilio saw it: no stretch of time holds more creates than the rate allows
        # (one at its start, then one per 60/rate s), give or take JITTER_SECS of one request's
        # delay on a busy machine (the whole run is one such stretch).
        creates = sorted(call.at for call in carrier.placed)
        worst = max(
            (j - i + 1) - ((creates[j] - creates[i] + JITTER_SECS) * RATE / 60 + 1)
            for i in range(len(creates))
            for j in range(i + 1, len(creates))
        )
        assert worst <= 0, f"{worst:.2f} creates over the pace"
        metrics = runner.metrics.render().decode()
        assert 'prt_campaign_outcomes_total{outcome="answered"} 32.0' in metrics
        assert 'prt_campaign_amd_total{answered_by="machine_end_beep"} 5.0' in metrics
