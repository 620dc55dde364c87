"""`pipecat-realtime-twilio calls`: filters, UTC times, the webhook; operator times; JSON logs."""

import json
import sys
from datetime import UTC, datetime

import pytest
from loguru import logger

from pipecat_realtime_twilio.cli import configure_logging, main
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.runner.timespec import parse_time, utc_text
from pipecat_realtime_twilio.settings import Settings

DAY = 86400.0
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


def record(sid: str, *, bot: str, started: float, reason: str, said: str, **extra) -> CallRecord:
    r = CallRecord(call_sid=sid, bot=bot, started_at=started, **extra)
    r.add_turn("caller", said, at=started + 1)
    r.add_turn("bot", "Certainly.", at=started + 2)
    r.finish(reason, ended_at=started + 30)
    return r


@pytest.fixture
def calls(monkeypatch, tmp_path, capsys):
    """Run ``calls`` in this process on a database of four calls; (code, stdout lines)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/calls.db"
    monkeypatch.setenv("DATABASE_URL", url)
    with CallStore(url) as store:
        store.save(
            record(
                "CA" + "1" * 32,
                bot="receptionist",
                started=NOW - 3 * DAY,
                reason="caller_hung_up",
                said="Do you open on Sunday?",
                from_number="+15550001111",
            )
        )
        store.save(
            record(
                "CA" + "2" * 32,
                bot="survey",
                started=NOW - 2 * DAY,
                reason="failed: connect: quota",
                said="Hello?",
            )
        )
        store.save(
            record(
                "CA" + "3" * 32,
                bot="receptionist",
                started=NOW - DAY,
                reason="transferred",
                said="A human, please.",
                direction="outbound",
            )
        )
        store.save(
            record(
                "CA" + "4" * 32,
                bot="receptionist",
                started=NOW - 60,
                reason="caller_hung_up",
                said="What time do you OPEN tomorrow?",
            )
        )

    def run(*args: str, **env: str) -> tuple[int, list[str]]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(["calls", *args])
        captured = capsys.readouterr()
        return code, (captured.out + captured.err).strip().splitlines()

    yield run
    logger.remove()
    logger.add(sys.__stderr__)


def sids(lines: list[str]) -> list[str]:
    return [line.split()[0][-1] for line in lines if line.startswith("CA")]


def test_lists_newest_first_in_utc(calls):
    code, lines = calls()
    assert code == 0
    assert sids(lines) == ["4", "3", "2", "1"]
    assert utc_text(NOW - 60) in lines[0] and lines[0].count("UTC") == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--bot", "receptionist"], ["4", "3", "1"]),
        (["--reason", "failed"], ["2"]),
        (["--reason", "caller_hung_up"], ["4", "1"]),
        (["--search", "open"], ["4", "1"]),
        (["--search", "human"], ["3"]),
        (["--direction", "outbound"], ["3"]),
        (["--number", "+15550001111"], ["1"]),
        (["--since", "2026-11-28T00:00"], ["4", "3", "2"]),
        (["--since", "2026-11-28", "--until", "2026-11-30"], ["3", "2"]),
        (["--bot", "receptionist", "--search", "open", "--since", "2026-11-28"], ["4"]),
    ],
)
def test_filters(calls, args, expected):
    code, lines = calls(*args)
    assert code == 0
    assert sids(lines) == expected


def test_no_match_and_paging_say_so(calls):
    code, lines = calls("--bot", "nobody")
    assert (code, lines) == (0, ["no calls match"])
    code, lines = calls("--limit", "2")
    assert sids(lines) == ["4", "3"] and lines[-1] == "(2 of 4 calls; --limit shows more)"


def test_a_bad_time_is_named(calls):
    code, lines = calls("--since", "last tuesday")
    assert code == 2
    assert lines == [
        "pipecat-realtime-twilio: 'last tuesday' is not a time: give an ISO 8601 date or time "
        "(UTC unless it says), Unix seconds, or 30m, 12h, 7d ago"
    ]


def test_one_call_says_whether_a_webhook_is_configured(calls):
    code, lines = calls("CA" + "1" * 32)
    assert code == 0
    assert f"  started {utc_text(NOW - 3 * DAY)}, 30.0 s, ended: caller_hung_up" in lines
    assert "  webhook: no webhook configured" in lines
    assert not any("delivered" in line for line in lines)
    code, lines = calls("CA" + "1" * 32, CALL_WEBHOOK_URL="https://hooks.example.com/calls")
    assert "  webhook delivered: not yet" in lines


def test_json_lists_the_filtered_records(calls):
    code, lines = calls("--json", "--bot", "survey")
    assert code == 0
    [only] = json.loads(lines[0])
    assert only["call_sid"] == "CA" + "2" * 32 and only["end_reason"] == "failed: connect: quota"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30", datetime(2026, 11, 30, tzinfo=UTC).timestamp()),
        ("2026-11-30T14:05:00+01:00", datetime(2026, 11, 30, 13, 5, tzinfo=UTC).timestamp()),
        ("2026-11-30T14:05Z", datetime(2026, 11, 30, 14, 5, tzinfo=UTC).timestamp()),
        ("1764511200", 1764511200.0),
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("12h", NOW - 12 * 3600),
        ("7d", NOW - 7 * DAY),
        ("2w", NOW - 14 * DAY),
    ],
)
def test_operator_times(text, expected):
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "7 days", "-5m", "2026-13-01"])
def test_operator_times_refuse_what_they_do_not_read(text):
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text, now=NOW)


def test_json_logs_are_one_object_per_line(capsys):
    configure_logging("INFO", "json")
    try:
        logger.bind(call_sid="CA" + "5" * 32).info("caller +15551234567 said\nhi")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("the bot failed")
        logger.debug("not at INFO")
    finally:
        logger.remove()
        logger.add(sys.__stderr__)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["call_sid"] == "CA" + "5" * 32
    assert first["message"] == "caller +1********67 said\\nhi"  # masked, one line
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exception"]


def test_a_limit_over_a_page_lists_them_all(calls, tmp_path):
    with CallStore(f"sqlite:///{tmp_path}/calls.db") as store:
        for n in range(600):
            store.save(
                record(
                    f"CA{n:032x}",
                    bot="bulk",
                    started=NOW - 7 * DAY + n,
                    reason="end_call",
                    said="Hello.",
                )
            )
    code, lines = calls("--bot", "bulk", "--limit", "1000")
    assert code == 0
    assert len(sids(lines)) == 600 and lines[-1].startswith("CA")  # all, no "of N" line
    code, lines = calls("--bot", "bulk", "--limit", "550")
    assert len([line for line in lines if line.startswith("CA")]) == 550
    assert lines[-1] == "(550 of 600 calls; --limit shows more)"
    code, lines = calls("--limit", "0")
    assert code == 2 and "limit" in lines[0]
