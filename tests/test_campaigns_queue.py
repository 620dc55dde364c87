"""Campaigns across instances and drains: the queue, not a process's memory, decides."""

import asyncio
import dataclasses
import time
from types import SimpleNamespace

import httpx
import pytest
from conftest import runner_settings
from test_campaigns import spec as campaign_spec

from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.campaign_csv import read_csv
from pipecat_realtime_twilio.runner.campaign_model import CampaignSpec
from pipecat_realtime_twilio.runner.campaign_store import CampaignStore
from pipecat_realtime_twilio.runner.dialer import CampaignDialer
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.store import CallStore

NOW = 1_800_000_000.0
KEY = "campaign-key"
EMULATOR = SimpleNamespace(url="ws://127.0.0.1:9/v1/realtime")  # never connected to


def sid(n: int) -> str:
    return f"CA{n:032x}"


def spec(**changes) -> CampaignSpec:
    return campaign_spec(**{"rate_per_minute": 6000.0, **changes})


@pytest.fixture
def stores(tmp_path):
    """Two instances' stores on one database."""
    url = f"sqlite:///{tmp_path}/calls.db"
    with CallStore(url) as a, CallStore(url) as b:
        yield CampaignStore(a.engine), CampaignStore(b.engine)


def test_a_late_callback_of_an_earlier_try_changes_nothing(stores):
    store, _ = stores
    campaign = store.create(spec(), read_csv("+12125550100\n"), NOW)
    first = store.claim("a", NOW).claim
    store.placed(campaign, first.number_id, 1, sid(1), NOW)
    assert store.progress(campaign, first.number_id, 1, sid(1), "busy", 2, None, 0, NOW) is None
    second = store.claim("a", NOW + 10).claim
    assert second is not None and second.attempt == 2  # claimed; its call not placed yet
    # Twilio repeats the first call's final callback, and its AMD result comes late.
    late = (campaign, first.number_id, 1, sid(1))
    assert store.progress(*late, "completed", 3, "human", 40, NOW + 11) is None
    assert not store.amd(*late, "human", NOW + 11)
    [row] = store.numbers(campaign)
    assert (row["state"], row["call_sid"], row["answered_by"]) == ("dialing", None, None)
    # The second try's own callbacks count, even before its create returned.
    call = (campaign, first.number_id, 2, sid(2))
    assert store.progress(*call, "no-answer", 3, None, 0, NOW + 12) is None
    [row] = store.numbers(campaign)
    assert (row["state"], row["attempts"], row["last_status"]) == ("pending", 2, "no-answer")


def test_callbacks_on_another_instance_free_the_placing_instances_lines(stores):
    a, b = stores
    campaign = a.create(spec(), read_csv("+12125550100\n+12125550101\n+12125550102\n"), NOW)
    first = a.claim("a", NOW, lines=1).claim
    assert first is not None
    assert a.claim("a", NOW + 1, lines=1).claim is None  # its one line rings
    assert b.claim("b", NOW + 1, lines=1).claim is not None  # another instance's lines
    # The call is answered; Twilio tells instance b. It holds its line while AMD listens
    # (the bot may take it), until AMD's result, which Twilio also tells instance b.
    call = (campaign, first.number_id, 1, sid(1))
    b.progress(*call, "in-progress", 2, None, None, NOW + 2)
    assert a.claim("a", NOW + 2, lines=1).claim is None
    assert b.amd(*call, "machine_end_beep", NOW + 2)
    assert a.claim("a", NOW + 2, lines=1).claim is not None
    # A call that never reports back stops counting after its ring and the wait for AMD.
    assert a.claim("a", NOW + 3, lines=1).claim is None
    later = a.create(spec(), read_csv("+12125550103\n+12125550104\n"), NOW)
    second = a.claim("a", NOW + 2 + 25 + 30 + 11, lines=1).claim
    assert second is not None
    # Answered, no AMD result ever: its line is free once the wait for AMD is over.
    a.progress(later, second.number_id, 1, sid(2), "in-progress", 2, None, None, NOW + 70)
    assert a.claim("a", NOW + 70 + 30 + 9, lines=1).claim is None
    assert a.claim("a", NOW + 70 + 30 + 11, lines=1).claim is not None
    # No free line at all: nothing is claimed.
    assert a.claim("a", NOW + 200, lines=0).claim is None


def test_the_pace_is_the_databases_claims_get_slots(stores):
    a, b = stores
    a.create(spec(rate_per_minute=60.0), read_csv("+12125550100\n+12125550101\n"), NOW)
    first = a.claim("a", NOW).claim
    assert first.at == NOW
    early = b.claim("b", NOW + 0.2)
    assert early.claim is None and early.wait == pytest.approx(0.3)
    second = b.claim("b", NOW + 0.6).claim  # up to half a second ahead of its slot
    assert second.at == NOW + 1.0


class Twilio:
    """What the dialer asks of Twilio's REST API, noted; ``gone`` calls refuse updates."""

    def __init__(self):
        self.created: list[str] = []
        self.said: list[str] = []
        self.gone: set[str] = set()

    async def create_campaign_call(self, to, from_, url, **options) -> str:
        self.created.append(url)
        return sid(len(self.created))

    async def redirect(self, call_sid, twiml) -> None:
        if call_sid in self.gone:  # as Twilio answers for a call that is over: 21220
            raise RuntimeError("Call is not in-progress. Cannot redirect.")
        self.said.append(twiml)


def dialer(store, busy, **options) -> tuple[CampaignDialer, Twilio]:
    settings = runner_settings(EMULATOR, "https://runner.example")
    twilio = Twilio()
    return CampaignDialer(
        settings, store, twilio, RunnerMetrics(), dict, busy, instance="a", **options
    ), twilio


async def test_the_dialer_claims_only_while_this_instance_has_a_free_line(stores):
    store, _ = stores
    campaign = store.create(spec(), read_csv("+12125550100\n"), time.time())
    free, asks = [0], []
    asked = asyncio.Event()

    def lines() -> int:  # Admission.capacity_left: its calls hold every line
        asks.append(free[0])
        if len(asks) >= 3:
            asked.set()
        return free[0]

    dialing, twilio = dialer(store, lambda: None, lines=lines)
    dialing.start()
    try:
        await asyncio.wait_for(asked.wait(), 30)
        assert twilio.created == []
        free[0] = 1  # a call ended
        async with asyncio.timeout(30):
            while not twilio.created:
                await asyncio.sleep(0.05)
    finally:
        await dialing.close()
    [row] = store.numbers(campaign)
    assert (row["state"], row["call_sid"]) == ("dialing", sid(1))


async def test_a_try_never_placed_fails_even_behind_fifty_long_calls(stores):
    store, _ = stores
    then = time.time() - 300
    csv = "".join(f"+121255501{n:02d}\n" for n in range(52))
    campaign = store.create(spec(), read_csv(csv), then)
    for n in range(52):
        claim = store.claim("a", then + n * 0.01).claim
        if n < 51:  # calls going on for five minutes; the last claim's instance died
            store.placed(campaign, claim.number_id, 1, sid(n + 1), then + n * 0.01)
    dialing, _ = dialer(store, lambda: None)
    await dialing.reconcile()
    rows = store.numbers(campaign, 100)
    assert [r["state"] for r in rows] == ["dialing"] * 51 + ["pending"]
    assert rows[-1]["detail"] == "the call was never placed"


def test_a_human_goes_to_the_bot_with_no_empty_pause(stores):
    dialing, _ = dialer(stores[0], lambda: None)
    human = dialing.answer_twiml("default", "human")
    assert "<Pause" not in human  # Twilio refuses <Pause length="0"> (13910)
    assert "https://runner.example/incoming?bot=default</Redirect>" in human
    waiting = dialing.answer_twiml("default", None)
    assert '<Pause length="30"' in waiting and "/incoming?bot=default</Redirect>" in waiting


async def test_a_draining_runner_claims_nothing(stores):
    store, _ = stores
    campaign = store.create(spec(), read_csv("+12125550100\n"), time.time())
    asked = asyncio.Event()
    reasons: list[str] = []

    async def draining():
        reasons.append("draining")
        if len(reasons) >= 3:
            asked.set()
        return "draining"

    dialing, twilio = dialer(store, draining)
    dialing.start()
    try:
        await asyncio.wait_for(asked.wait(), 30)
    finally:
        await dialing.close()
    assert twilio.created == []
    [row] = store.numbers(campaign)
    assert (row["state"], row["attempts"]) == ("pending", 0)


async def test_a_drain_before_the_slot_gives_the_number_back(stores):
    store, _ = stores
    campaign = store.create(spec(), read_csv("+12125550100\n"), time.time())
    claim = store.claim("a", time.time()).claim
    busy = "draining"
    dialing, twilio = dialer(store, lambda: busy)
    await dialing.place(claim)
    assert twilio.created == []
    [row] = store.numbers(campaign)
    assert (row["state"], row["attempts"], row["claimed_by"]) == ("pending", 0, None)

    # Stopped while it waits for its slot: given back too.
    busy = None
    claim = store.claim("a", time.time()).claim
    assert claim.attempt == 1
    waiting = asyncio.create_task(dialing.place(dataclasses.replace(claim, at=time.time() + 60)))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    [row] = store.numbers(campaign)
    assert (row["state"], row["attempts"]) == ("pending", 0)

    # Placed at its slot: the callbacks' URLs name the try.
    await dialing.place(store.claim("a", time.time()).claim)
    [url] = twilio.created
    where = f"campaign={campaign}&number={row['id']}&attempt=1"
    assert url.endswith(f"/campaign-answer?{where}&bot=default")  # the bot rides along
    [row] = store.numbers(campaign)
    assert (row["state"], row["call_sid"]) == ("dialing", sid(1))


@pytest.fixture
async def api():
    """The runner's app in the process (no socket), campaigns on, no dialer here."""
    settings = runner_settings(
        EMULATOR,
        "https://runner.example",
        runner_api_key=KEY,
        campaign_dialer=False,
        twilio_phone_number="+12125550000",
        twilio_validate_signatures=False,
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="https://runner.example", headers=headers
    ) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"numbers": ["+12125550100"], "rate": 10}, "unknown field 'rate'"),
        ({}, 'give either "numbers"'),
        ({"numbers": ["+12125550100"], "csv": "+12125550100\n"}, 'give either "numbers"'),
        ({"numbers": "+12125550100"}, '"numbers" must be a list'),
        ({"numbers": ["+12125550100"], "max_attempts": 2.5}, "max_attempts: a whole number"),
        ({"numbers": ["+12125550100"], "ring_secs": 601}, "ring_secs: a number from 5 to 600"),
        ({"numbers": ["+12125550100"], "rate_per_minute": "fast"}, "rate_per_minute"),
        ({"numbers": ["+12125550100"], "from": "ACME"}, "from: 'ACME' is not a phone number"),
        ({"numbers": ["+12125550100"], "calling_hours": 9}, "calling_hours: text"),
        ({"numbers": ["+12125550100"], "calling_hours": "9-5"}, "calling_hours: calling hours"),
        ({"numbers": ["+12125550100"], "bot": ["default"]}, "bot: unknown bot"),
        ({"numbers": [42]}, r"numbers[0]"),
    ],
)
async def test_bad_campaigns_get_a_clear_400(api, body, said):
    answer = await api.post("/campaigns", json=body)
    assert answer.status_code == 400, answer.text
    assert said in answer.json()["detail"]


async def test_a_good_campaign_keeps_its_caller_id_in_e164(api):
    answer = await api.post(
        "/campaigns", json={"numbers": ["+12125550100"], "from": "+1 (212) 555-0000"}
    )
    assert answer.status_code == 201, answer.text
    shown = await api.get(f"/api/campaigns/{answer.json()['id']}")
    assert shown.json()["from"] == "+12125550000"


async def test_twilios_callbacks_must_name_their_try(api):
    form = {"CallSid": sid(1), "CallStatus": "busy", "SequenceNumber": "2"}
    query = "campaign=cmp_0123456789abcdef&number=1"
    answer = await api.post(f"/campaign-status?{query}", data=form)
    assert answer.status_code == 400 and "attempt" in answer.json()["detail"]
    answer = await api.post(f"/campaign-status?{query}&attempt=1", data=form)
    assert answer.status_code == 204  # no such number: nothing changes


async def test_a_person_who_answers_reaches_the_bot_while_the_database_is_down(api, monkeypatch):
    async def down(*args, **kwargs):
        raise OSError("connection refused")

    runner = api._transport.app.state.runner  # the routes read the dialer's store
    monkeypatch.setattr(runner.campaigns.store, "acall", down)
    query = "campaign=cmp_0123456789abcdef&number=1&attempt=1&bot=survey"
    answer = await api.post(f"/campaign-answer?{query}", data={"CallSid": sid(1)})
    assert answer.status_code == 200, answer.text
    assert "/incoming?bot=survey" in answer.text and "<Pause" in answer.text
    unknown = query.replace("bot=survey", "bot=nobody")
    answer = await api.post(f"/campaign-answer?{unknown}", data={"CallSid": sid(1)})
    assert answer.status_code == 200 and "/incoming?bot=default" in answer.text


@pytest.mark.parametrize(("hung_up_first", "outcome"), [(False, "voicemail"), (True, "machine")])
async def test_the_voicemail_is_left_only_once_twilio_took_it(stores, hung_up_first, outcome):
    store, _ = stores
    campaign = store.create(spec(), read_csv("+12125550100\n"), time.time())
    claim = store.claim("a", time.time()).claim
    bots = {"default": SimpleNamespace(voicemail="Hi, this is Acme. Goodbye!")}
    twilio = Twilio()
    dialing = CampaignDialer(
        runner_settings(EMULATOR, "https://runner.example"),
        store,
        twilio,  # type: ignore[arg-type]
        RunnerMetrics(),
        lambda: bots,
        dict,
        instance="a",
    )
    call = (campaign, claim.number_id, claim.attempt, sid(1))
    store.placed(*call, time.time())
    store.progress(*call, "in-progress", 2, None, None, time.time())
    if hung_up_first:
        twilio.gone.add(sid(1))
    await dialing.amd_result(*call, "machine_end_beep", "default")
    await dialing.close()  # its background work done
    assert len(twilio.said) == (0 if hung_up_first else 1)
    final = store.progress(*call, "completed", 3, "machine_end_beep", 9, time.time())
    assert final == outcome
