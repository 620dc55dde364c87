"""The README's example bot, run by Pipecat's own development runner, answers a call."""

import asyncio
import os
from pathlib import Path

import pytest
from conftest import free_port, spawn, wait_for_port

from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator

pytestmark = pytest.mark.call

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pipecat_runner_bot.py"


async def test_example_bot_under_pipecats_development_runner(tmp_path):
    port = free_port()
    async with RealtimeEmulator() as emulator:
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_REALTIME_URL": emulator.url,
            "PIPECAT_ALLOWED_ORIGINS": "",
        }
        process = await spawn(
            str(EXAMPLE),
            "-t",
            "twilio",
            "-x",
            f"127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            cwd=tmp_path,
            env=env,
        )
        try:
            await wait_for_port(port, process)
            async with TwilioCaller(
                server_url=f"http://127.0.0.1:{port}",
                public_url=f"https://127.0.0.1:{port}",
                auth_token="unused",
                webhook_path="/",
                sign=False,
            ) as caller:
                dial = await caller.call()
                assert dial.stream_url == f"wss://127.0.0.1:{port}/ws"
                await caller.wait_heard(500, timeout=15)
                session = emulator.sessions[0]
                assert session.config["audio"]["output"]["format"]["type"] == "audio/pcmu"
                await caller.hangup()
                await emulator.wait_for(lambda: session.closed_at is not None, timeout=5)
            assert emulator.validation_errors == []
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=15)
