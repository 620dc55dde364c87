"""Campaigns: reading numbers (CSV, lists), the queue's claims, pace, retries and outcomes."""

import asyncio
import threading
import time

import pytest

from pipecat_realtime_twilio.runner.campaign_csv import CampaignInputError, read_csv, read_list
from pipecat_realtime_twilio.runner.campaign_model import CampaignSpec
from pipecat_realtime_twilio.runner.campaign_store import CampaignStore
from pipecat_realtime_twilio.runner.store import CallStore

SID = "CA" + "1" * 32


def spec(**changes) -> CampaignSpec:
    values = dict(
        name="test",
        bot="default",
        from_number="+12125550000",
        rate_per_minute=60.0,
        calling_hours="00:00-24:00",
        max_attempts=3,
        retry_secs=10.0,
        ring_secs=25,
    )
    values.update(changes)
    return CampaignSpec(**values)


def test_csv_with_a_header_zones_invalid_and_duplicates():
    text = (
        "name,Phone,timezone\n"
        "Ann,+1 212 555 0100,\n"
        "Bob,+442079460000,Europe/Paris\n"
        "\n"
        "Cy,12345,\n"
        "Di,+12125550100,\n"
        "Ed,+17025550100,Mars/Base\n"
    )
    numbers = read_csv(text)
    assert [(e.number, e.timezones, e.line) for e in numbers.valid] == [
        ("+12125550100", ("America/New_York",), 2),
        ("+442079460000", ("Europe/Paris",), 3),  # the column wins
    ]
    assert [(e.line, e.number) for e in numbers.invalid] == [(5, "12345"), (7, "+17025550100")]
    assert "international" in numbers.invalid[0].problem
    assert "Mars/Base" in numbers.invalid[1].problem
    assert [(e.line, e.number) for e in numbers.duplicates] == [(6, "+12125550100")]
    report = numbers.report()
    assert (report["numbers"], report["valid"]) == (4, 2)


def test_csv_without_a_header_and_bad_csv():
    numbers = read_csv("+12125550100\n+12125550101,extra\n+15551234567\n")
    assert [e.number for e in numbers.valid] == ["+12125550100", "+12125550101"]
    assert [e.problem for e in numbers.invalid] == ["not a valid phone number"]
    for bad, said in (("", "no numbers"), ("name,city\nAnn,Paris\n", "no number column")):
        with pytest.raises(CampaignInputError, match=said):
            read_csv(bad)


def test_numbers_as_a_list():
    numbers = read_list(["+12125550100", {"number": "+442079460000", "timezone": "UTC"}, "x"])
    assert [(e.number, e.timezones) for e in numbers.valid] == [
        ("+12125550100", ("America/New_York",)),
        ("+442079460000", ("UTC",)),
    ]
    assert len(numbers.invalid) == 1
    with pytest.raises(CampaignInputError, match=r"numbers\[0\]"):
        read_list([42])


@pytest.fixture
def sqlite_store(tmp_path):
    with CallStore(f"sqlite:///{tmp_path}/calls.db") as calls:
        yield CampaignStore(calls.engine)


def test_claims_keep_the_pace_and_hours(sqlite_store):
    store = sqlite_store
    now = 1_800_000_000.0
    numbers = read_csv("+12125550100\n+12125550101\n+12125550102\nnope\n")
    campaign = store.create(spec(rate_per_minute=6), numbers, now)  # one call every 10 s
    first = store.claim("a", now)
    assert first.claim is not None and first.claim.number == "+12125550100"
    assert first.claim.attempt == 1
    held = store.claim("b", now + 5)
    assert held.claim is None and 0 < held.wait <= 5
    second = store.claim("b", now + 10)
    assert second.claim is not None and second.claim.number == "+12125550101"
    summary = store.campaign(campaign)
    assert summary["states"] == {"dialing": 2, "pending": 1, "done": 1}
    assert summary["outcomes"] == {"invalid": 1}

    # Outside its hours a number waits for its next opening (New York: 09:00 local).
    late = store.create(spec(calling_hours="09:00-10:00"), read_csv("+12125550109\n"), now)
    store.claim("a", now + 20)
    [row] = store.numbers(late)
    assert row["state"] == "pending" and row["next_attempt_at"] > now


def test_retries_back_off_then_the_last_status_is_the_outcome(sqlite_store):
    store = sqlite_store
    now = 1_800_000_000.0
    campaign = store.create(spec(rate_per_minute=6000), read_csv("+12125550100\n"), now)
    outcomes = []
    for attempt, status in enumerate(("busy", "no-answer", "failed"), start=1):
        claim = store.claim("a", now).claim
        assert claim is not None and claim.attempt == attempt
        store.placed(campaign, claim.number_id, attempt, SID[:-1] + str(attempt), now)
        sid = SID[:-1] + str(attempt)
        call = (campaign, claim.number_id, attempt, sid)
        assert store.progress(*call, "ringing", 1, None, None, now) is None
        outcomes.append(store.progress(*call, status, 2, None, 0, now))
        # A repeat and a late callback change nothing.
        assert store.progress(*call, status, 2, None, 0, now) is None
        if attempt < 3:
            [row] = store.numbers(campaign)
            assert row["next_attempt_at"] == pytest.approx(now + 10 * 2 ** (attempt - 1))
            assert store.claim("a", now + 1).claim is None  # not before its backoff
            now = row["next_attempt_at"]
    assert outcomes == [None, None, "failed"]
    assert store.campaign(campaign)["status"] == "done"


def test_amd_decides_the_outcome_of_an_answered_call(sqlite_store):
    store = sqlite_store
    now = 1_800_000_000.0
    numbers = read_csv("+12125550100\n+12125550101\n+12125550102\n+12125550103\n")
    campaign = store.create(spec(rate_per_minute=6000), numbers, now)
    cases = [
        ("human", False, "answered"),
        ("machine_end_beep", True, "voicemail"),
        ("fax", False, "machine"),
        (None, False, "hung_up"),
    ]
    for n, (answered_by, voicemail, expected) in enumerate(cases):
        now += 1
        claim = store.claim("a", now).claim
        sid = SID[:-1] + str(n)
        call = (campaign, claim.number_id, claim.attempt, sid)
        store.progress(*call, "in-progress", 2, None, None, now)
        if answered_by:
            assert store.amd(*call, answered_by, now)
            assert not store.amd(*call, "human", now)
        if voicemail:
            assert store.voicemail_said(*call, now)
        assert store.progress(*call, "completed", 3, None, 4, now) == expected
    assert store.campaign(campaign)["outcomes"] == {
        "answered": 1,
        "voicemail": 1,
        "machine": 1,
        "hung_up": 1,
    }


def test_cancel_ends_pending_numbers(sqlite_store):
    store = sqlite_store
    now = 1_800_000_000.0
    campaign = store.create(spec(), read_csv("+12125550100\n+12125550101\n"), now)
    claim = store.claim("a", now).claim
    assert store.cancel(campaign, now) == 1
    assert store.claim("a", now + 100).claim is None
    assert store.progress(campaign, claim.number_id, 1, SID, "busy", 5, None, 0, now) == "busy"
    summary = store.campaign(campaign)
    assert summary["status"] == "canceled" and summary["outcomes"] == {"canceled": 1, "busy": 1}
    assert summary["finished_at"] == now
    assert store.cancel("cmp_" + "0" * 16, now) is None


@pytest.mark.call
async def test_two_claimers_on_postgres_never_share_a_number_and_keep_the_pace(postgres_url):
    rate = 600.0  # one every 0.1 s
    calls = CallStore(postgres_url)
    try:
        store = CampaignStore(calls.engine)
        numbers = read_list([f"+121255501{n:02d}" for n in range(30)])
        campaign = store.create(spec(rate_per_minute=rate), numbers, time.time())
        claimed: list[tuple[int, float]] = []
        lock = threading.Lock()

        def claimer(name: str) -> None:
            deadline = time.time() + 10
            while time.time() < deadline:
                now = time.time()
                result = store.claim(name, now)
                if result.claim is not None:
                    with lock:
                        claimed.append((result.claim.number_id, result.claim.at))
                elif store.campaign(campaign)["states"].get("pending", 0) == 0:
                    return
                else:
                    time.sleep(0.005)

        await asyncio.gather(*(asyncio.to_thread(claimer, name) for name in ("a", "b")))
        ids = [number_id for number_id, _ in claimed]
        assert len(ids) == 30 and len(set(ids)) == 30
        slots = sorted(at for _, at in claimed)  # when each call is to be placed
        gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
        assert min(gaps) >= 60 / rate - 1e-6
    finally:
        calls.close()


def test_the_campaign_command_refuses_a_bad_csv_in_one_line(tmp_path, capsys):
    from pipecat_realtime_twilio.cli import main

    bad = tmp_path / "numbers.csv"
    bad.write_text("name,city\nAnn,Paris\n")
    assert main(["campaign", str(bad), "--url", "http://127.0.0.1:9", "--api-key", "k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no number column" in err[0]
    assert main(["campaign", str(tmp_path / "missing.csv")]) == 2


def test_the_progress_line():
    from pipecat_realtime_twilio.runner.campaign_cli import progress_line

    line = progress_line(
        {"total": 50, "done": 23, "outcomes": {"answered": 10, "voicemail": 3, "busy": 10}}
    )
    assert line == "[#########-----------] 23/50  answered 10 · busy 10 · voicemail 3"


def test_bots_declare_their_voicemail_and_bad_ones_are_refused(tmp_path):
    from conftest import ROOT

    from pipecat_realtime_twilio.runner.bots import BotError, load_bot_file, load_bots

    bots = load_bots(ROOT / "bots")
    assert bots["survey"].voicemail and "survey" in bots["survey"].voicemail
    assert bots["receptionist"].voicemail is None
    good = tmp_path / "caller.py"
    good.write_text('VOICEMAIL = " Call us back. "\n\ndef pipeline(call):\n    return []\n')
    assert load_bot_file(good).voicemail == "Call us back."
    bad = tmp_path / "bad.py"
    bad.write_text("def pipeline(call):\n    return []\n\nVOICEMAIL = 42\n")
    with pytest.raises(BotError, match=r"bad.py:4: VOICEMAIL must be text"):
        load_bot_file(bad)
    (tmp_path / "md").mkdir()
    (tmp_path / "md" / "md.md").write_text("---\nvoicemail: ''\n---\nHello.\n")
    with pytest.raises(BotError, match="voicemail"):
        load_bots(tmp_path / "md")


def _progress(done: int, status: str = "running") -> dict:
    return {"status": status, "done": done, "total": 2, "outcomes": {"answered": done}}


def test_the_campaign_command_rides_out_a_runner_that_fails_for_a_while(monkeypatch):
    import io

    import httpx

    from pipecat_realtime_twilio.runner import campaign_cli

    monkeypatch.setattr(campaign_cli, "POLL_SECS", 0.0)
    answers = [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(200, json=_progress(1)),
        httpx.Response(503, text="restarting"),
        httpx.Response(200, json=_progress(2, "done")),
    ]
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return answers.pop(0)

    client = httpx.Client(base_url="http://runner", transport=httpx.MockTransport(handler))
    out = io.StringIO()
    assert campaign_cli._follow(client, "7", out) == 0
    assert asked == ["/api/campaigns/7"] * 4
    assert out.getvalue().splitlines() == [
        "[##########----------] 1/2  answered 1",
        "[####################] 2/2  answered 2",
    ]


def test_the_campaign_command_stops_at_once_when_the_runner_refuses(monkeypatch, capsys):
    import io

    import httpx

    from pipecat_realtime_twilio.runner import campaign_cli

    monkeypatch.setattr(campaign_cli, "POLL_SECS", 0.0)
    client = httpx.Client(
        base_url="http://runner",
        transport=httpx.MockTransport(lambda request: httpx.Response(404, text="no such campaign")),
    )
    assert campaign_cli._follow(client, "7", io.StringIO()) == 1
    assert "404" in capsys.readouterr().err


def test_the_campaign_command_gives_up_on_a_runner_gone_for_good(monkeypatch, capsys):
    import io

    import httpx

    from pipecat_realtime_twilio.runner import campaign_cli

    monkeypatch.setattr(campaign_cli, "POLL_SECS", 0.0)
    monkeypatch.setattr(campaign_cli, "UNREACHABLE_SECS", 0.05)
    client = httpx.Client(
        base_url="http://runner",
        transport=httpx.MockTransport(lambda request: httpx.Response(502, text="bad gateway")),
    )
    assert campaign_cli._follow(client, "7", io.StringIO()) == 1
    assert "/api/campaigns/7" in capsys.readouterr().err
