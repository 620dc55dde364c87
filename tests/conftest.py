"""Shared fixtures: a Realtime emulator, the runner on a local port, and a simulated caller."""

import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
from pathlib import Path

import pytest

from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import Bot, load_bots
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.server import (  # noqa: F401 (used by the tests)
    LocalServer,
    free_port,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = secrets.token_hex(16)


@pytest.fixture
async def emulator():
    async with RealtimeEmulator() as emulator:
        yield emulator


def runner_settings(emulator: RealtimeEmulator, public_url: str, **overrides) -> Settings:
    """Settings of a runner that talks to ``emulator``, ignoring the environment."""
    values = {
        "openai_api_key": "sk-test",
        "openai_realtime_url": emulator.url,
        "twilio_auth_token": AUTH_TOKEN,
        "public_url": public_url,
        "bots_dir": str(ROOT / "bots"),
        "bot": "default",
        "database_url": f"sqlite:///{tempfile.mkdtemp(prefix='calls-')}/calls.db",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
async def runner(emulator):
    """The call runner serving the repository's bots on a local port, against the emulator."""
    server = LocalServer()
    settings = runner_settings(emulator, server.url)
    server.app = create_app(settings, load_bots(settings.bots_dir))
    async with server:
        yield server


@pytest.fixture
async def caller(runner):
    async with TwilioCaller(
        server_url=runner.url, public_url=runner.url, auth_token=AUTH_TOKEN
    ) as caller:
        yield caller


@contextlib.asynccontextmanager
async def phone_call(
    *,
    bot: str = "default",
    pipeline=None,
    settings: dict | None = None,
    **emulator_options,
):
    """A runner against a fresh emulator, and a caller that has not dialled yet.

    Args:
        bot: The repository bot that answers (ignored with ``pipeline``).
        pipeline: A bot builder ``pipeline(call)`` to answer with instead.
        settings: Settings overrides.
        **emulator_options: ``RealtimeEmulator`` arguments.

    Yields:
        (emulator, runner, caller): the ``RealtimeEmulator``, the ``CallRunner``
        and the ``TwilioCaller``.
    """
    async with RealtimeEmulator(**emulator_options) as emulator:
        server = LocalServer()
        if pipeline is not None:
            bot = "test"
        settings = runner_settings(emulator, server.url, bot=bot, **(settings or {}))
        bots = (
            {"test": Bot("test", "a test bot", pipeline)}
            if pipeline is not None
            else load_bots(settings.bots_dir)
        )
        server.app = create_app(settings, bots)
        async with server:
            async with TwilioCaller(
                server_url=server.url, public_url=server.url, auth_token=AUTH_TOKEN
            ) as caller:
                yield emulator, server.app.state.runner, caller


def clean_env(**values: str) -> dict[str, str]:
    """This environment without any of the runner's settings, plus ``values``."""
    from pipecat_realtime_twilio.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(values)
    return env


def serve_env(emulator, port: int, tmp_path, **values: str) -> dict[str, str]:
    """The environment of a ``serve`` subprocess on ``port`` that talks to ``emulator``."""
    settings = {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_REALTIME_URL": emulator.url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "BOTS_DIR": str(ROOT / "bots"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/calls.db",
    }
    return clean_env(**{**settings, **values})


async def spawn(*args: str, cwd, env: dict[str, str], capture: bool = False):
    """Start ``python ARGS`` with this interpreter, output captured or discarded."""
    stream = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=cwd, env=env, stdout=stream, stderr=stream
    )
