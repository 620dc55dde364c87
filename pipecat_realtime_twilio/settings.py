#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Configuration from the environment and ``.env``, checked at startup."""

import contextlib
import contextvars
import json
import re
from collections.abc import Iterator
from typing import Annotated, Literal

import pydantic_settings
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.settings_scale_out import ScaleOutSettings

DEFAULT_REALTIME_URL = "wss://api.openai.com/v1/realtime"
DEFAULT_REALTIME_MODEL = "gpt-realtime-2.1"
DEFAULT_LIVE_MODEL = "gpt-live-1.1"
DEFAULT_LIVE_BACKEND_MODEL = "gpt-5.4-mini"
DEFAULT_TWILIO_API_URL = "https://api.twilio.com"
DEFAULT_DATABASE_URL = "sqlite:///calls.db"
_BOT_ROUTES_FORM = 'a JSON object of called number to bot name, e.g. {"+15551230000": "sales"}'


class Settings(ScaleOutSettings, BaseSettings):
    """Settings of the runner and the agents it builds.

    Every field is read from the environment variable of the same name in upper
    case (``OPENAI_API_KEY`` for ``openai_api_key``) or from a ``.env`` file in
    the working directory. ``.env.example`` documents each one. The settings of
    several instances and of campaigns (``REDIS_URL``, ``CAMPAIGN_*``...) are
    declared in :class:`~pipecat_realtime_twilio.settings_scale_out.ScaleOutSettings`.
    """

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", validate_default=True, env_ignore_empty=True
    )

    openai_api_key: SecretStr | None = Field(
        default=None, description="OpenAI API key; required unless talking to an emulator."
    )
    openai_realtime_url: str = Field(
        default=DEFAULT_REALTIME_URL,
        description="Websocket URL of the Realtime API (OpenAI, Azure, or the bundled emulator).",
    )
    openai_realtime_model: str = Field(
        default=DEFAULT_REALTIME_MODEL, description="Realtime model of every call."
    )
    openai_live_url: str | None = Field(
        default=None,
        description="Websocket URL of the GPT-Live API; unset: derived from OPENAI_REALTIME_URL "
        "(wss://host/v1/realtime -> wss://host/v1/live/sessions).",
    )
    openai_live_model: str = Field(
        default=DEFAULT_LIVE_MODEL, description="GPT-Live model of bots with engine: live."
    )
    openai_live_backend_model: str = Field(
        default=DEFAULT_LIVE_BACKEND_MODEL,
        description="Responses model GPT-Live delegates reasoning and tools to.",
    )
    twilio_account_sid: str | None = Field(
        default=None,
        description="Twilio account SID (AC...); when set, other accounts' calls are refused.",
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, description="Twilio auth token; signs and checks Twilio's requests."
    )
    twilio_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl(DEFAULT_TWILIO_API_URL),
        description="Base URL of Twilio's REST API (transfers without <Connect action>).",
    )
    twilio_shared_key_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Secret of the Twilio SharedKey your Webhook Settings sign with (HMAC-SHA256); "
            "several, comma-separated, while a key is rotated. Requests without "
            "X-Twilio-Webhooks-Signature-Settings are checked with TWILIO_AUTH_TOKEN."
        ),
    )
    twilio_validate_signatures: bool = Field(
        default=True,
        description="Check X-Twilio-Signature on webhooks. Turn off only for local development.",
    )
    public_url: AnyHttpUrl | None = Field(
        default=None, description="The https origin Twilio reaches this runner at."
    )
    host: str = Field(default="127.0.0.1", description="Interface the runner listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the runner listens on.")
    bot: str = Field(default="default", description="Bot that answers calls.")
    bots_dir: str = Field(default="bots", description="Folder the bots are loaded from.")
    bot_routes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='Called number -> bot, as JSON: {"+15551230000": "sales"}; others get BOT.',
    )
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of the runner."
    )
    log_phone_numbers: bool = Field(
        default=False,
        description="Show callers' and transfer numbers in full in logs (masked by default).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token GET /metrics wants (Authorization: Bearer ...); open without.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port of METRICS_HOST instead of the runner's port.",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Interface of the METRICS_PORT listener."
    )
    max_calls: int = Field(
        default=20, ge=1, description="Most calls at once; more hear a busy message."
    )
    drain_timeout_secs: float = Field(
        default=60.0,
        ge=0,
        description="On SIGTERM, how long active calls may go on before they are ended.",
    )
    http_header_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        description=(
            "A client must have sent a request's headers this many seconds after connecting "
            "(or after the answer to its previous request), or it is disconnected."
        ),
    )
    http_body_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        description="A webhook's or API request's body must arrive within this; else 408.",
    )
    http_idle_timeout_secs: float = Field(
        default=5.0,
        gt=0,
        description="An idle keep-alive connection is closed after this many seconds.",
    )
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="Where call records are kept (SQLAlchemy URL); SQLite file by default.",
    )
    outbox_dir: str | None = Field(
        default=None,
        description=(
            "Folder of call records not yet stored in the database (the outbox); by default "
            "beside a SQLite file (calls.db-outbox), else ./outbox."
        ),
    )
    prices_file: str | None = Field(
        default=None,
        description=(
            "JSON file of Realtime prices (USD per million tokens, by model) that replace "
            "or add to the built-in table, for a contract with other prices."
        ),
    )
    call_webhook_url: AnyHttpUrl | None = Field(
        default=None, description="Receives each call record as JSON (POST), retried."
    )
    call_webhook_secret: SecretStr | None = Field(
        default=None, description="Signs call-record webhooks (X-Call-Record-Signature)."
    )
    runner_api_key: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer key of the operator's API (POST /calls, /api/calls) and the console "
            "(/console); all off without it."
        ),
    )
    playground_token: SecretStr | None = Field(
        default=None,
        description="Turns on the browser softphone at /playground?token=...; off without it.",
    )
    twilio_phone_number: str | None = Field(
        default=None, description="Your Twilio number: the caller ID of outbound calls."
    )
    prewarm: bool = Field(
        default=True,
        description=(
            "Open the OpenAI session (and start the greeting) while answering the webhook; "
            "the stream must then reach this same instance (see STREAM_URL)."
        ),
    )
    prewarm_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        description="A pre-warmed session whose stream has not started by then is closed.",
    )
    greeting_cache_dir: str | None = Field(
        default=None,
        description=(
            "Also keep cached greetings (the model's audio of each bot's greeting) in this "
            "folder, for restarts and other instances; in memory only without it."
        ),
    )
    greeting_warmup: bool = Field(
        default=False,
        description="At start-up, have the model say each prompt bot's greeting for the cache.",
    )
    stream_url: AnyHttpUrl | None = Field(
        default=None,
        description=(
            "The origin Twilio opens media streams at, if not PUBLIC_URL: an address of "
            "this instance when several share PUBLIC_URL."
        ),
    )

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as text, or one JSON object per line (for log pipelines).",
    )
    record_calls: bool = Field(
        default=False,
        description=(
            "Keep a two-channel 8 kHz WAV of every call as heard (left the caller, right "
            "the bot as played). Tell callers: many places require their consent."
        ),
    )
    recordings_dir: str = Field(
        default="recordings",
        description="Folder recordings are kept in (when no RECORDINGS_S3_BUCKET is set).",
    )
    recordings_s3_bucket: str | None = Field(
        default=None,
        description=(
            "Keep recordings in this S3 (or S3-compatible) bucket instead of RECORDINGS_DIR; "
            "credentials from AWS's usual environment variables."
        ),
    )
    recordings_s3_prefix: str = Field(
        default="recordings/", description="Key prefix of recordings in the bucket."
    )
    recordings_s3_endpoint_url: AnyHttpUrl | None = Field(
        default=None,
        description="Endpoint of an S3-compatible service (MinIO, R2...); AWS when unset.",
    )
    recordings_s3_region: str | None = Field(
        default=None, description="Region of the bucket (AWS_DEFAULT_REGION when unset)."
    )
    recording_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Recordings older than this many days are deleted; kept forever when unset.",
    )
    twilio_record: bool = Field(
        default=False,
        description=(
            "Have Twilio record each call too (its REST API); the recording's URL goes on "
            "the call record."
        ),
    )
    openai_base_url: AnyHttpUrl | None = Field(
        default=None,
        description=(
            "OpenAI's HTTP API, for post-call analysis (the Responses API); by default "
            "derived from OPENAI_REALTIME_URL (wss://host/v1/realtime -> https://host/v1)."
        ),
    )
    analysis_model: str = Field(
        default="gpt-4.1-mini",
        description="Text model that fills a bot's post-call analysis fields.",
    )

    @field_validator("openai_realtime_url", "openai_live_url")
    @classmethod
    def _check_realtime_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value.rstrip("/")

    @field_validator("twilio_account_sid")
    @classmethod
    def _check_account_sid(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"AC[0-9a-fA-F]{32}", value):
            raise ValueError("must be a Twilio account SID: AC followed by 32 hex digits")
        return value

    @field_validator("bot_routes", mode="before")
    @classmethod
    def _parse_bot_routes(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"must be {_BOT_ROUTES_FORM}; not JSON ({e.msg} at character {e.pos})"
                ) from None
        if not isinstance(value, dict):
            raise ValueError(f"must be {_BOT_ROUTES_FORM}, not {type(value).__name__}")
        for number, bot in value.items():
            if not isinstance(bot, str) or not bot:
                raise ValueError(f"{number} must go to a bot name, not {json.dumps(bot)}")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value == DEFAULT_DATABASE_URL:
            return value
        from sqlalchemy.engine import make_url  # only for a URL of one's own
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL; SQLAlchemy's form is "
                "dialect+driver://user:password@host/database, e.g. sqlite:///calls.db"
            ) from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def public_origin(self) -> str:
        """``PUBLIC_URL`` without a trailing slash (requires it to be set)."""
        if self.public_url is None:
            raise SettingsError("PUBLIC_URL is not set")
        return str(self.public_url).rstrip("/")

    @property
    def openai_http_url(self) -> str:
        """OpenAI's HTTP API: ``OPENAI_BASE_URL``, else derived from ``OPENAI_REALTIME_URL``.

        ``wss://api.openai.com/v1/realtime`` gives ``https://api.openai.com/v1``; ``ws://``
        gives ``http://`` (the bundled emulator serves both on one port).
        """
        if self.openai_base_url is not None:
            return str(self.openai_base_url).rstrip("/")
        scheme, rest = self.openai_realtime_url.split("://", 1)
        rest = rest.split("?", 1)[0].rstrip("/")
        if rest.endswith("/realtime"):
            rest = rest[: -len("/realtime")]
        return f"{'https' if scheme == 'wss' else 'http'}://{rest}"

    @property
    def openai_live_sessions_url(self) -> str:
        """GPT-Live's websocket: ``OPENAI_LIVE_URL``, else derived from ``OPENAI_REALTIME_URL``.

        ``wss://api.openai.com/v1/realtime`` gives ``wss://api.openai.com/v1/live/sessions``
        (the bundled emulator serves both on one port).
        """
        if self.openai_live_url is not None:
            return self.openai_live_url
        scheme, rest = self.openai_realtime_url.split("://", 1)
        rest = rest.split("?", 1)[0].rstrip("/")
        if rest.endswith("/realtime"):
            rest = rest[: -len("/realtime")]
        return f"{scheme}://{rest}/live/sessions"

    @property
    def websocket_origin(self) -> str:
        """Where media streams go: ``STREAM_URL`` (else ``PUBLIC_URL``) as a websocket origin.

        ``wss://`` for https, ``ws://`` for http.
        """
        origin = str(self.stream_url).rstrip("/") if self.stream_url else self.public_origin
        scheme, rest = origin.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}"

    def require_for_serving(self) -> None:
        """Check what answering real calls needs, naming every missing setting.

        Raises:
            SettingsError: If a setting the runner needs is missing.
        """
        missing = []
        if self.openai_api_key is None:
            missing.append("OPENAI_API_KEY (the OpenAI API key)")
        if self.public_url is None:
            missing.append("PUBLIC_URL (the https origin Twilio reaches, e.g. a tunnel)")
        if self.twilio_validate_signatures and self.twilio_auth_token is None:
            missing.append("TWILIO_AUTH_TOKEN (to check Twilio's request signatures)")
        if missing:
            raise SettingsError("missing settings: " + "; ".join(missing))


def load_settings(**overrides) -> Settings:
    """Load settings from the environment and ``.env``, with overrides.

    Args:
        **overrides: Field values that take precedence over the environment.

    Returns:
        The validated settings.

    Raises:
        SettingsError: If a setting is invalid; the message names each one.
    """
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = []
        for error in e.errors():
            name = "_".join(str(part) for part in error["loc"]).upper() or "settings"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    except pydantic_settings.SettingsError as e:  # a value it could not even parse
        raise SettingsError(f"invalid settings: {' '.join(str(e).split())}") from None


_current: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "pipecat_realtime_twilio_settings", default=None
)


def current_settings() -> Settings:
    """Return the settings of the runner building this call, or load them from the environment.

    The runner sets them while it builds a call's pipeline, so processors that
    take connection options from settings (such as the Realtime agent) follow
    the runner's configuration; anywhere else they come from the environment.
    """
    settings = _current.get()
    return settings if settings is not None else load_settings()


@contextlib.contextmanager
def settings_in_effect(settings: Settings) -> Iterator[Settings]:
    """Make ``settings`` what :func:`current_settings` returns, inside the ``with`` block.

    The runner builds each call's pipeline inside one, so a bot's agents connect
    as the runner is configured::

        with settings_in_effect(settings):
            processors = await bot.build(call)

    Args:
        settings: The settings in effect.

    Yields:
        The settings.
    """
    token = _current.set(settings)
    try:
        yield settings
    finally:
        _current.reset(token)
