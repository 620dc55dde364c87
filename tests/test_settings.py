import pytest
from conftest import ROOT

from pipecat_realtime_twilio.settings import Settings, SettingsError, load_settings

KEYS = [
    "BOT_ROUTES",
    "DATABASE_URL",
    "OUTBOX_DIR",
    "OPENAI_API_KEY",
    "OPENAI_REALTIME_URL",
    "PUBLIC_URL",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "PORT",
    "LOG_LEVEL",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env


def test_serving_names_every_missing_setting():
    with pytest.raises(SettingsError) as e:
        load_settings().require_for_serving()
    for name in ("OPENAI_API_KEY", "PUBLIC_URL", "TWILIO_AUTH_TOKEN"):
        assert name in str(e.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("OPENAI_REALTIME_URL", "https://api.openai.com/v1/realtime"),
        ("PUBLIC_URL", "not a url"),
        ("TWILIO_ACCOUNT_SID", "XY123"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_bad_setting_is_named(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert name in str(e.value)


def test_env_file_and_derived_urls(tmp_path):
    (tmp_path / ".env").write_text(
        "PUBLIC_URL=https://bot.example.com/\nOPENAI_API_KEY=sk-x\nTWILIO_AUTH_TOKEN=t\n"
    )
    settings = load_settings()
    settings.require_for_serving()
    assert settings.public_origin == "https://bot.example.com"
    assert settings.websocket_origin == "wss://bot.example.com"
    assert settings.openai_api_key.get_secret_value() == "sk-x"


def test_env_example_copied_to_dot_env_loads(tmp_path, monkeypatch):
    """.env.example, copied as it is, is a valid .env: empty values mean "not set"."""
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    settings = load_settings()
    assert settings.public_url is None and settings.call_webhook_url is None
    assert settings.max_calls == 20 and settings.database_url == "sqlite:///calls.db"
    assert str(settings.twilio_api_url).rstrip("/") == "https://api.twilio.com"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("sales", "not JSON"),
        ('["+15551230000", "sales"]', "must be a JSON object of called number to bot name"),
        ('{"+15551230000": 7}', "+15551230000 must go to a bot name, not 7"),
        ('{"+15551230000": ""}', '+15551230000 must go to a bot name, not ""'),
    ],
)
def test_bad_bot_routes_are_named_in_one_line(monkeypatch, value, problem):
    monkeypatch.setenv("BOT_ROUTES", value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    message = str(e.value)
    assert "BOT_ROUTES" in message and problem in message and "\n" not in message


def test_bot_routes_from_json(monkeypatch, tmp_path):
    monkeypatch.setenv("BOT_ROUTES", '{"+15551230000": "sales", "+15551230001": "support"}')
    assert load_settings().bot_routes == {"+15551230000": "sales", "+15551230001": "support"}
    monkeypatch.delenv("BOT_ROUTES")
    (tmp_path / ".env").write_text('BOT_ROUTES={"+15551230000": "sales"}\n')
    assert load_settings().bot_routes == {"+15551230000": "sales"}


def test_a_malformed_database_url_is_named(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "calls.db")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "DATABASE_URL" in str(e.value) and "not a database URL" in str(e.value)
    assert "\n" not in str(e.value)


def test_outbox_dir_is_unset_by_default_and_taken_from_the_environment(monkeypatch):
    assert load_settings().outbox_dir is None  # beside the SQLite file (runner.outbox)
    monkeypatch.setenv("OUTBOX_DIR", "/var/lib/prt/outbox")
    assert load_settings().outbox_dir == "/var/lib/prt/outbox"
