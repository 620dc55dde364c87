"""The command line, as an operator or a newcomer runs it."""

import asyncio
import wave
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, clean_env, free_port, spawn, wait_for_port
from twilio.request_validator import RequestValidator

from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator

pytestmark = pytest.mark.call


async def run_cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 90):
    process = await spawn("-m", "pipecat_realtime_twilio", *args, cwd=cwd, env=env, capture=True)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_serve_without_settings_stops_naming_them(tmp_path):
    code, _, stderr = await run_cli("serve", cwd=tmp_path, env=clean_env())
    assert code == 2
    for name in ("OPENAI_API_KEY", "PUBLIC_URL", "TWILIO_AUTH_TOKEN"):
        assert name in stderr


async def test_serve_with_a_bad_setting_names_it(tmp_path):
    code, _, stderr = await run_cli("serve", cwd=tmp_path, env=clean_env(PORT="http"))
    assert code == 2 and "PORT" in stderr


async def test_bots_lists_the_default_bot():
    code, stdout, _ = await run_cli("bots", cwd=ROOT, env=clean_env())
    assert code == 0
    assert "* default" in stdout and "A helpful, concise phone assistant." in stdout


async def test_serve_answers_a_signed_webhook(tmp_path):
    port = free_port()
    public = "https://bot.example.com"
    env = clean_env(
        OPENAI_API_KEY="sk-test",
        TWILIO_AUTH_TOKEN="secret-token",
        PUBLIC_URL=public,
        PORT=str(port),
        BOTS_DIR=str(ROOT / "bots"),
    )
    process = await spawn("-m", "pipecat_realtime_twilio", "serve", cwd=tmp_path, env=env)
    try:
        await wait_for_port(port, process)
        form = {"CallSid": "CA" + "1" * 32, "From": "+15550001111", "To": "+15550002222"}
        signature = RequestValidator("secret-token").compute_signature(f"{public}/incoming", form)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            signed = await client.post(
                "/incoming", data=form, headers={"X-Twilio-Signature": signature}
            )
            forged = await client.post(
                "/incoming",
                data={**form, "From": "+1666"},
                headers={"X-Twilio-Signature": signature},
            )
        assert signed.status_code == 200
        assert '<Stream url="wss://bot.example.com/media-stream">' in signed.text
        assert forged.status_code == 403
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=15)


async def test_simulate_runs_a_whole_call_offline(tmp_path):
    out = tmp_path / "heard.wav"
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path}/calls.db")
    code, stdout, stderr = await run_cli("simulate", "--out", str(out), cwd=ROOT, env=env)
    assert code == 0, stderr
    assert "bundled Realtime emulator" in stdout
    lines = stdout.splitlines()
    transcript = lines[lines.index("Transcript:") + 1 : lines.index("Timings:") - 1]
    assert [line.split(":")[0].split("]")[1].strip() for line in transcript] == [
        "bot",
        "caller",
        "bot",
    ]
    assert "What time do you open tomorrow morning?" in stdout
    with wave.open(str(out)) as heard:
        assert heard.getframerate() == 8000 and heard.getnchannels() == 1
        assert heard.getnframes() / 8000 > 5


async def test_emulator_url_setting_reaches_the_agent(tmp_path):
    """OPENAI_REALTIME_URL picks the Realtime server: here the emulator, with a key."""
    async with RealtimeEmulator() as emulator:
        code, stdout, stderr = await run_cli(
            "simulate",
            "--out",
            str(tmp_path / "h.wav"),
            cwd=ROOT,
            env=clean_env(
                OPENAI_API_KEY="sk-real-looking",
                OPENAI_REALTIME_URL=emulator.url,
                DATABASE_URL=f"sqlite:///{tmp_path}/calls.db",
            ),
        )
        assert code == 0, stderr
        assert "the OpenAI Realtime API" in stdout
        assert emulator.sessions[0].authorization == "Bearer sk-real-looking"
