"""Tests for models with an announced shutdown: dates from the openai package, warnings."""

import inspect
from datetime import date
from types import SimpleNamespace

import pytest
from loguru import logger

from pipecat_realtime_twilio.agent import models
from pipecat_realtime_twilio.agent.configuration import DEFAULT_TRANSCRIPTION_MODEL
from pipecat_realtime_twilio.agent.models import (
    model_warnings,
    parse_deprecations,
    shutdown_dates,
    warn_once,
)
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.runner.model_check import (
    configured_model_warnings,
    configured_models,
    log_model_warnings,
)
from pipecat_realtime_twilio.runner.prompt_bot import PromptBotSpec
from pipecat_realtime_twilio.settings import DEFAULT_REALTIME_MODEL, Settings

TODAY = date(2026, 11, 30)
REALTIME_SHUTDOWN = date(2027, 1, 20)
TRANSCRIPTION_SHUTDOWN = date(2027, 2, 26)


@pytest.fixture
def warnings():
    """Loguru warnings logged during the test, and a fresh once-per-model memory."""
    models._warned.clear()
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    yield messages
    logger.remove(sink)
    models._warned.clear()


@pytest.fixture
def no_source(monkeypatch):
    """The openai package's source cannot be read: only the built-in table is left."""

    def fail(_obj):
        raise OSError("could not get source code")

    models._package_dates.cache_clear()
    monkeypatch.setattr(inspect, "getsource", fail)
    yield
    monkeypatch.undo()
    models._package_dates.cache_clear()


def test_dates_come_from_the_installed_openai_package():
    parsed = models._package_dates()
    assert parsed["gpt-4o-mini-transcribe"] == TRANSCRIPTION_SHUTDOWN
    assert parsed["whisper-1"] == TRANSCRIPTION_SHUTDOWN
    assert parsed["gpt-realtime"] == REALTIME_SHUTDOWN
    assert parsed["gpt-realtime-mini"] == REALTIME_SHUTDOWN
    assert parsed["gpt-realtime-2025-08-28"] == REALTIME_SHUTDOWN
    # The union with the built-in table holds them too.
    dates = shutdown_dates()
    assert dates["gpt-4o-mini-transcribe"] == TRANSCRIPTION_SHUTDOWN
    assert dates["gpt-realtime"] == REALTIME_SHUTDOWN
    assert dates["gpt-realtime-mini"] == REALTIME_SHUTDOWN


@pytest.mark.parametrize(
    "model",
    [
        "gpt-realtime-2.1",
        "gpt-realtime-2.1-mini",
        "gpt-realtime-2",
        "gpt-realtime-1.5",
        "gpt-realtime-whisper",
        "gpt-transcribe",
        "gpt-live-transcribe",
        # A dated snapshot has a date only if it is listed itself.
        "gpt-realtime-mini-2025-10-06",
        DEFAULT_TRANSCRIPTION_MODEL,
        DEFAULT_REALTIME_MODEL,
    ],
)
def test_current_models_have_no_shutdown(model):
    assert model not in shutdown_dates()
    assert model_warnings([model], [model], today=TODAY) == []


def test_shutdown_dates_is_a_copy():
    shutdown_dates()["gpt-realtime-2.1"] = TODAY
    assert "gpt-realtime-2.1" not in shutdown_dates()


def test_parsing_wrapped_blocks_and_several_entries():
    source = '''
    model: str
    """The model.

    Deprecated values:

    - "model-a", "model-a-2025-01-02",
      "Model-B": Announced shutdown date:
      2027-03-04. See https://example.com for details.
    - "model-c": Announced shutdown date: 2028-01-31.
    """

    other: str
    """Deprecated values: - "model-d": Announced shutdown date: 2027-02-30."""
    '''
    assert parse_deprecations(source) == {
        "model-a": date(2027, 3, 4),
        "model-a-2025-01-02": date(2027, 3, 4),
        "model-b": date(2027, 3, 4),
        "model-c": date(2028, 1, 31),
    }  # model-d's date does not exist: skipped
    assert parse_deprecations("no such block") == {}


def test_warnings_name_the_model_the_date_and_a_replacement():
    lines = model_warnings(
        ["gpt-realtime", "gpt-realtime-mini-2025-12-15", "gpt-realtime-2.1"],
        ["gpt-4o-mini-transcribe", DEFAULT_TRANSCRIPTION_MODEL],
        today=TODAY,
    )
    assert lines == [
        "Realtime model 'gpt-realtime' has an announced shutdown on 2027-01-20 (in 51 days); "
        "move to gpt-realtime-2.1",
        "Realtime model 'gpt-realtime-mini-2025-12-15' has an announced shutdown on "
        "2027-01-20 (in 51 days); move to gpt-realtime-2.1-mini",
        "Transcription model 'gpt-4o-mini-transcribe' has an announced shutdown on "
        "2027-02-26 (in 88 days); move to gpt-realtime-whisper",
    ]


def test_warnings_after_and_on_the_day():
    after = model_warnings(["gpt-realtime-mini"], ["whisper-1"], today=date(2027, 3, 1))
    assert after == [
        "Realtime model 'gpt-realtime-mini' was shut down on 2027-01-20; "
        "move to gpt-realtime-2.1-mini",
        "Transcription model 'whisper-1' was shut down on 2027-02-26; move to gpt-realtime-whisper",
    ]
    (on_the_day,) = model_warnings(["gpt-realtime"], [], today=REALTIME_SHUTDOWN)
    assert "on 2027-01-20 (today)" in on_the_day
    (day_before,) = model_warnings(["gpt-realtime"], [], today=date(2027, 1, 19))
    assert "(in 1 day)" in day_before


def test_warnings_are_deduplicated_case_aside():
    lines = model_warnings(
        ["gpt-realtime", "GPT-Realtime", " gpt-realtime ", "", "gpt-audio-mini"],
        ("whisper-1", "whisper-1"),
        today=TODAY,
    )
    assert len(lines) == 3
    assert "'gpt-audio-mini'" in lines[1] and "gpt-realtime-2.1-mini" in lines[1]
    # A single model id as a string is one model, not its letters.
    assert len(model_warnings("gpt-realtime", "whisper-1", today=TODAY)) == 2


def test_the_built_in_table_works_without_the_source(no_source):
    assert models._package_dates() == {}
    dates = shutdown_dates()
    assert dates["gpt-realtime"] == REALTIME_SHUTDOWN
    assert dates["gpt-realtime-mini"] == REALTIME_SHUTDOWN
    assert dates["gpt-4o-mini-transcribe"] == TRANSCRIPTION_SHUTDOWN
    assert "gpt-realtime-2.1" not in dates
    assert len(model_warnings(["gpt-realtime"], ["whisper-1"], today=TODAY)) == 2


def test_the_package_wins_over_the_built_in_table(monkeypatch):
    models._package_dates.cache_clear()
    monkeypatch.setattr(
        inspect,
        "getsource",
        lambda _module: (
            '"""Deprecated values: - "gpt-realtime": Announced shutdown date: 2027-06-01."""'
        ),
    )
    try:
        dates = shutdown_dates()
        assert dates["gpt-realtime"] == date(2027, 6, 1)
        assert dates["whisper-1"] == TRANSCRIPTION_SHUTDOWN  # still from the table
    finally:
        monkeypatch.undo()
        models._package_dates.cache_clear()


def test_warn_once_logs_each_model_once(warnings):
    warn_once("realtime", "gpt-realtime")
    warn_once("realtime", "GPT-Realtime")
    warn_once("Realtime", "gpt-realtime")
    warn_once("realtime", "gpt-realtime-2.1")  # no shutdown: nothing
    warn_once("transcription", "gpt-4o-mini-transcribe")
    warn_once("transcription", "gpt-4o-mini-transcribe")
    warn_once("transcription", DEFAULT_TRANSCRIPTION_MODEL)
    assert len(warnings) == 2
    assert "'gpt-realtime'" in warnings[0] and "2027-01-20" in warnings[0]
    assert "'gpt-4o-mini-transcribe'" in warnings[1] and "2027-02-26" in warnings[1]
    with pytest.raises(ValueError, match="realtime"):
        warn_once("speech", "gpt-realtime")


PROMPT_BOT = "---\ndescription: x\nmodel: {model}\n---\nYou are a test bot.\n"


def test_configured_model_warnings_of_settings_and_prompt_bots(tmp_path):
    (tmp_path / "mini.md").write_text(PROMPT_BOT.format(model="gpt-realtime-mini"))
    (tmp_path / "current.md").write_text(PROMPT_BOT.format(model="gpt-realtime-2.1"))
    (tmp_path / "same.md").write_text(PROMPT_BOT.format(model="gpt-realtime"))
    (tmp_path / "default.md").write_text("---\ndescription: y\n---\nYou are a test bot.\n")
    (tmp_path / "code.py").write_text('"""A Python bot."""\n\ndef pipeline(call):\n    return []\n')
    bots = load_bots(tmp_path)
    settings = Settings(openai_realtime_model="gpt-realtime", _env_file=None)

    realtime, transcription = configured_models(settings, bots)
    assert sorted(set(realtime)) == ["gpt-realtime", "gpt-realtime-2.1", "gpt-realtime-mini"]
    assert transcription == [DEFAULT_TRANSCRIPTION_MODEL]

    lines = configured_model_warnings(settings, bots, today=TODAY)
    assert lines == [
        "Realtime model 'gpt-realtime' has an announced shutdown on 2027-01-20 (in 51 days); "
        "move to gpt-realtime-2.1",
        "Realtime model 'gpt-realtime-mini' has an announced shutdown on 2027-01-20 "
        "(in 51 days); move to gpt-realtime-2.1-mini",
    ]

    current = Settings(openai_realtime_model="gpt-realtime-2.1", _env_file=None)
    assert configured_model_warnings(current, {}, today=TODAY) == []


def test_a_prompt_bots_transcription_model_is_checked(tmp_path):
    (tmp_path / "bot.md").write_text(PROMPT_BOT.format(model="gpt-realtime-2.1"))
    bots = load_bots(tmp_path)
    prompt_bot = bots["bot"].builder.__self__  # type: ignore[attr-defined]
    settings = Settings(openai_realtime_model="gpt-realtime-2.1", _env_file=None)
    assert configured_model_warnings(settings, bots, today=TODAY) == []

    # A spec with a transcription model (whether or not the front matter has the key yet).
    prompt_bot.spec = SimpleNamespace(
        model="gpt-realtime-2.1", transcription=SimpleNamespace(model="whisper-1")
    )
    (line,) = configured_model_warnings(settings, bots, today=TODAY)
    assert line.startswith("Transcription model 'whisper-1' has an announced shutdown")
    prompt_bot.spec = SimpleNamespace(model=None, transcription=None)
    assert configured_model_warnings(settings, bots, today=TODAY) == []


@pytest.mark.skipif(
    "transcription" not in PromptBotSpec.model_fields,
    reason="prompt bots have no transcription key yet",
)
def test_a_prompt_bot_files_transcription_model_is_checked(tmp_path):
    (tmp_path / "bot.md").write_text(
        "---\ndescription: x\ntranscription:\n  model: gpt-4o-transcribe\n---\nYou are a bot.\n"
    )
    settings = Settings(openai_realtime_model="gpt-realtime-2.1", _env_file=None)
    (line,) = configured_model_warnings(settings, load_bots(tmp_path), today=TODAY)
    assert line.startswith("Transcription model 'gpt-4o-transcribe' has an announced shutdown")


def test_log_model_warnings_logs_and_returns_them(tmp_path, warnings):
    (tmp_path / "bot.md").write_text(PROMPT_BOT.format(model="gpt-realtime-mini"))
    settings = Settings(openai_realtime_model="gpt-realtime-2.1", _env_file=None)
    lines = log_model_warnings(settings, load_bots(tmp_path), today=TODAY)
    assert len(lines) == 1 and "'gpt-realtime-mini'" in lines[0]
    assert warnings == lines


def test_the_runner_warns_at_start_about_a_configured_model_with_a_shutdown(tmp_path, warnings):
    from pipecat_realtime_twilio.runner.app import create_app

    (tmp_path / "default.md").write_text("---\ndescription: x\n---\nYou are a test bot.\n")
    settings = Settings(
        _env_file=None,
        openai_api_key="sk-test",
        openai_realtime_model="gpt-realtime",
        twilio_auth_token="token",
        bots_dir=str(tmp_path),
        database_url=f"sqlite:///{tmp_path}/calls.db",
    )
    create_app(settings)
    [warning] = [w for w in warnings if "gpt-realtime'" in w]
    assert "2027-01-20" in warning and "gpt-realtime-2.1" in warning
