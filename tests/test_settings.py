import pytest
from conftest import ROOT

from pipecat_realtime_twilio.settings import Settings, SettingsError, load_settings

KEYS = [
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
