"""The command line, as an operator or a newcomer runs it."""

import asyncio
import struct
import sys
import wave
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, clean_env, free_port, spawn, wait_for_port
from loguru import logger
from twilio.request_validator import RequestValidator

from pipecat_realtime_twilio.cli import main
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.twiml import parse_twiml

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
        assert parse_twiml(signed.text).stream_url == "wss://bot.example.com/media-stream"
        assert forged.status_code == 403
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=15)


async def test_simulate_runs_a_whole_call_offline(tmp_path):
    out = tmp_path / "heard.wav"
    elsewhere = tmp_path / "elsewhere"
    env = clean_env(BOTS_DIR=str(ROOT / "bots"), DATABASE_URL=f"sqlite:///{elsewhere}/calls.db")
    code, stdout, stderr = await run_cli("simulate", "--out", str(out), cwd=tmp_path, env=env)
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
    # The record went to a temporary database: none in the working directory, none at
    # DATABASE_URL, no outbox left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heard.wav"]


async def test_emulator_url_setting_reaches_the_agent(tmp_path):
    """OPENAI_REALTIME_URL picks the Realtime server: here the emulator, with a key."""
    async with RealtimeEmulator() as emulator:
        code, stdout, stderr = await run_cli(
            "simulate",
            "--out",
            str(tmp_path / "h.wav"),
            "--database-url",
            f"sqlite:///{tmp_path}/records.db",
            cwd=ROOT,
            env=clean_env(OPENAI_API_KEY="sk-real-looking", OPENAI_REALTIME_URL=emulator.url),
        )
        assert code == 0, stderr
        assert "the OpenAI Realtime API" in stdout
        assert emulator.sessions[0].authorization == "Bearer sk-real-looking"
    # --database-url keeps the record.
    with CallStore(f"sqlite:///{tmp_path}/records.db") as store:
        (record,) = store.list()
    assert record.call_sid in stdout and record.transcript


async def test_simulate_reports_a_fallback_and_exits_1(tmp_path):
    """A wrong key: the emulator refuses the handshake; the caller gets the fallback line."""
    async with RealtimeEmulator(api_key="sk-the-right-one") as emulator:
        code, stdout, stderr = await run_cli(
            "simulate",
            "--out",
            str(tmp_path / "h.wav"),
            cwd=tmp_path,
            env=clean_env(
                BOTS_DIR=str(ROOT / "bots"),
                OPENAI_API_KEY="sk-a-wrong-one",
                OPENAI_REALTIME_URL=emulator.url,
                PREWARM="false",
            ),
        )
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert "ended: failed: connect: invalid_api_key" in stdout
    assert "Twilio was told: <Say> Sorry, I'm having technical trouble" in stdout


async def test_simulate_reports_a_bot_that_fails_to_build(tmp_path):
    bots = tmp_path / "bots"
    bots.mkdir()
    (bots / "default.py").write_text("def pipeline(call):\n    return [call.input(), 1 / 0]\n")
    code, stdout, stderr = await run_cli(
        "simulate",
        "--out",
        str(tmp_path / "h.wav"),
        cwd=tmp_path,
        env=clean_env(BOTS_DIR=str(bots)),
    )
    assert code == 1, stderr
    assert "ended: failed: build: ZeroDivisionError" in stdout
    assert "<Say>" in stdout and "Traceback" not in stderr


# --- one line, exit 2, no traceback -------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, tmp_path, capsys):
    """Run ``main(args)`` in this process with only ``env`` set; (exit code, stderr lines)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no .env

    def run(*args: str, **env: str) -> tuple[int, list[str]]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(list(args))
        return code, capsys.readouterr().err.strip().splitlines()

    yield run
    logger.remove()  # main() logs to the stderr that capsys replaced
    logger.add(sys.__stderr__)


def write_wav(path: Path, *, width: int = 2, frames: bytes = b"\0\0" * 800) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(width)
        wav.setframerate(8000)
        wav.writeframes(frames)
    return path


def float_wav(folder: Path) -> Path:
    """A 32-bit IEEE float WAV (format tag 3), which the caller cannot speak."""
    path = folder / "float.wav"
    data = struct.pack("<800f", *([0.0] * 800))
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data))
    path.write_bytes(
        b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(data)) + b"WAVE" + chunks + data
    )
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: d, "cannot read it"),
        (lambda d: (d / "notes.wav").write_text("hello") and d / "notes.wav", "not a WAV file"),
        (lambda d: write_wav(d / "24bit.wav", width=3, frames=b"\0" * 2400), "24 bits"),
        (float_wav, "format tag 0x0003"),
        (lambda d: write_wav(d / "empty.wav", frames=b""), "has no audio"),
    ],
    ids=["missing", "a folder", "not a WAV", "24-bit", "float", "empty"],
)
def test_simulate_with_a_bad_wav_says_what_is_wrong(cli, tmp_path, make, problem):
    wav = make(tmp_path)
    code, lines = cli("simulate", "--wav", str(wav))
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"pipecat-realtime-twilio: --wav {wav}: ")
    assert problem in lines[0]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://user@127.0.0.1/calls", "the driver of mysql is not installed"),
        ("postgresql+asyncpg://user@127.0.0.1/calls", "asyncio driver"),
        ("postgresql+nosuchdriver://user@127.0.0.1/calls", "[postgres]"),
        ("oracle+nosuchdriver://user@127.0.0.1/calls", "knows no database or driver"),
        ("calls.db", "not a database URL"),
    ],
)
def test_calls_with_an_unusable_database_url_names_it(cli, url, problem):
    code, lines = cli("calls", DATABASE_URL=url)
    assert code == 2
    assert len(lines) == 1 and "DATABASE_URL" in lines[0] and problem in lines[0]


def test_calls_with_an_unreachable_database_names_it(cli):
    url = f"postgresql+psycopg://nobody:s3cret@127.0.0.1:{free_port()}/calls"
    code, lines = cli("calls", DATABASE_URL=url)
    assert code == 2
    assert len(lines) == 1 and "DATABASE_URL: cannot open the database" in lines[0]
    assert "Connection refused" in lines[0] and "s3cret" not in lines[0]


@pytest.mark.parametrize("routes", ["{+15551230000: sales}", '["sales"]', '{"+1555": 1}'])
def test_serve_with_bad_bot_routes_names_them(cli, routes):
    code, lines = cli("serve", BOT_ROUTES=routes)
    assert code == 2
    assert len(lines) == 1 and "BOT_ROUTES" in lines[0]


def serve_settings(**values: str) -> dict[str, str]:
    return clean_env(
        OPENAI_API_KEY="sk-test",
        TWILIO_AUTH_TOKEN="secret-token",
        PUBLIC_URL="https://bot.example.com",
        PORT=str(free_port()),
        BOTS_DIR=str(ROOT / "bots"),
        LOG_LEVEL="WARNING",  # not Pipecat's INFO banner: only what went wrong
        **values,
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:{port}/calls"},
            "DATABASE_URL: cannot open the database",
        ),
        ({"DATABASE_URL": "mysql://nobody@127.0.0.1/calls"}, "DATABASE_URL: the driver of mysql"),
        ({"BOT_ROUTES": '{"+15551230000": "nobody"}'}, "BOT_ROUTES: +15551230000 goes to bot"),
        (
            {"PRICES_FILE": "{tmp}/prices.json"},
            "PRICES_FILE {tmp}/prices.json: gpt-realtime-2.1: cached_audio_in: Field required",
        ),
    ],
    ids=[
        "database unreachable",
        "driver missing",
        "route to a missing bot",
        "a wrong price",
    ],
)
async def test_serve_stops_at_start_in_one_line(tmp_path, values, expected):
    (tmp_path / "prices.json").write_text('{"gpt-realtime-2.1": {"audio_in": 1}}')
    values = {
        name: value.replace("{port}", str(free_port())).replace("{tmp}", str(tmp_path))
        for name, value in values.items()
    }
    expected = expected.replace("{tmp}", str(tmp_path))
    code, stdout, stderr = await run_cli("serve", cwd=tmp_path, env=serve_settings(**values))
    assert code == 2, stderr
    assert stderr.strip().splitlines() == [stderr.strip()]
    assert stderr.startswith(f"pipecat-realtime-twilio: {expected}")
    assert "Traceback" not in stderr + stdout
