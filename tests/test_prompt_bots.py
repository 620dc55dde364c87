"""Prompt-only bots (bots/NAME.md), `bots check`, and routing by the called number."""

import asyncio

import pytest
from conftest import (
    AUTH_TOKEN,
    ROOT,
    bots_check,
    free_port,
    phone_call,
    serve_env,
    spawn,
    wait_for_port,
)
from test_bots import build_offline

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.runner.bots import BotError, load_bots, load_markdown_bot
from pipecat_realtime_twilio.settings import Settings, SettingsError
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.sounds import silence, tone

GOOD = """\
---
description: Takes messages.
greeting: Hello, Acme here.
voice: cedar
tools: [end_call, transfer_call]
transfer_number: "+15551230000"
limits:
  max_duration_secs: 300
  silence_timeout_secs: 20
---
You are the receptionist of Acme.
"""


def write(folder, name: str, text: str):
    path = folder / name
    path.write_text(text)
    return path


async def test_a_prompt_bot_builds_an_agent_from_its_front_matter(tmp_path):
    bot = load_markdown_bot(write(tmp_path, "reception.md", GOOD))
    assert (bot.name, bot.description) == ("reception", "Takes messages.")
    processors = await build_offline(bot)
    agent = processors[1]
    assert isinstance(agent, RealtimeAgent) and len(processors) == 3
    session = agent._settings.session_properties
    assert session.audio.output.voice == "cedar"
    assert [t.name for t in session.tools.standard_tools] == ["end_call", "transfer_call"]
    assert agent._limits is not None and agent._greeting == "Hello, Acme here."
    assert agent._instructions == "You are the receptionist of Acme."


@pytest.mark.call
@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (
            GOOD.replace("tools: [end_call, transfer_call]", "tools: [end_call, fly]"),
            5,
            "unknown tools 'fly'",
        ),
        (GOOD.replace("voice: cedar", "voice: robot"), 4, "unknown voice 'robot'"),
        (GOOD.replace("You are the receptionist of Acme.\n", ""), 11, "prompt"),
        (GOOD.replace("greeting: Hello, Acme here.", "greeting: [unclosed"), 4, "bad front matter"),
        (GOOD.replace("voice: cedar", "colour: blue"), 4, "colour: unknown key"),
        (GOOD.replace('transfer_number: "+15551230000"\n', ""), 5, "needs a transfer_number"),
        (
            GOOD.replace('transfer_number: "+15551230000"', "transfer_number: call Bob"),
            6,
            "transfer_number: 'call Bob' is neither a phone number",
        ),
        ("no front matter\n", 1, "starts with a '---'"),
    ],
    ids=[
        "unknown tool",
        "unknown voice",
        "missing prompt",
        "bad yaml",
        "unknown key",
        "transfer without number",
        "transfer to nonsense",
        "no front matter",
    ],
)
async def test_bots_check_names_file_and_line_of_each_planted_error(tmp_path, text, line, says):
    write(tmp_path, "default.md", GOOD.replace("receptionist", "assistant"))
    path = write(tmp_path, "broken.md", text)
    with pytest.raises(BotError) as error:
        load_markdown_bot(path)
    assert str(error.value).startswith(f"{path}:{line}: ")
    assert says in str(error.value)

    code, out = await bots_check(tmp_path)
    assert code == 1
    assert f"error: {path}:{line}: " in out and "ok: default" in out


@pytest.mark.call
async def test_bots_check_passes_on_the_repository_bots():
    code, out = await bots_check(ROOT / "bots")
    assert code == 0, out
    assert "ok: default" in out


def test_a_name_defined_twice_is_an_error(tmp_path):
    write(tmp_path, "same.md", GOOD)
    write(tmp_path, "same.py", "def pipeline(call):\n    return []\n")
    with pytest.raises(BotError, match="also defined by"):
        load_bots(tmp_path)


@pytest.mark.call
async def test_two_called_numbers_reach_two_bots(tmp_path):
    write(tmp_path, "default.md", GOOD.replace("Hello, Acme here.", "Hello from the default bot."))
    write(tmp_path, "sales.md", GOOD.replace("Hello, Acme here.", "Hello from sales."))
    settings = {"bots_dir": str(tmp_path), "bot_routes": {"+15550007777": "sales"}}
    async with phone_call(settings=settings, replies=say_as_asked()) as (emulator, runner, caller):
        other = TwilioCaller(
            server_url=caller.server_url,
            public_url=caller.public_url,
            auth_token=caller.auth_token,
            to_number="+15550007777",
        )
        try:
            await caller.call()
            await other.call()
            assert caller.dial_result.parameters["bot"] == "default"
            assert other.dial_result.parameters["bot"] == "sales"
            await emulator.wait_for(lambda: len(emulator.sessions) == 2, timeout=5)
            await caller.wait_quiet(quiet_ms=300, timeout=10)
            await other.wait_quiet(quiet_ms=300, timeout=10)
            said = sorted(s.responses[0].transcript for s in emulator.sessions)
            assert said == ["Hello from sales.", "Hello from the default bot."]
        finally:
            await other.close()


def test_a_route_to_a_missing_bot_stops_startup(tmp_path):
    from pipecat_realtime_twilio.runner.app import CallRunner

    write(tmp_path, "default.md", GOOD)
    settings = Settings(
        _env_file=None,
        bots_dir=str(tmp_path),
        bot_routes={"+1555": "nobody"},
        twilio_auth_token="token",
        database_url=f"sqlite:///{tmp_path}/calls.db",
    )
    with pytest.raises(SettingsError, match="BOT_ROUTES: \\+1555 goes to bot 'nobody'"):
        CallRunner(settings, load_bots(tmp_path))


@pytest.mark.call
async def test_serve_reload_changes_the_next_call_not_the_current_one(tmp_path):
    bots = tmp_path / "bots"
    bots.mkdir()
    bot_file = write(bots, "default.md", GOOD.replace("Hello, Acme here.", "Version one."))
    async with RealtimeEmulator(replies=say_as_asked(Reply(text="Noted."))) as emulator:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = serve_env(emulator, port, tmp_path, BOTS_DIR=str(bots), DRAIN_TIMEOUT_SECS="0")
        process = await spawn(
            "-m", "pipecat_realtime_twilio", "serve", "--reload", cwd=tmp_path, env=env
        )
        first = TwilioCaller(server_url=public, public_url=public, auth_token=AUTH_TOKEN)
        second = TwilioCaller(server_url=public, public_url=public, auth_token=AUTH_TOKEN)
        try:
            await wait_for_port(port, process)
            await first.call()
            await first.wait_quiet(quiet_ms=300, timeout=10)

            # Edit the bot while the first call goes on.
            bot_file.write_text(
                GOOD.replace("Hello, Acme here.", "Version two.").replace("Acme", "Zenith")
            )
            await asyncio.sleep(1.5)  # the runner polls the folder twice a second

            await second.call()
            await second.wait_quiet(quiet_ms=300, timeout=10)
            heard = len(first.heard)
            await first.say(tone(600) + silence(700))
            await first.wait_quiet(after=heard, quiet_ms=300, timeout=10)

            old, new = emulator.sessions[0], emulator.sessions[1]
            assert old.responses[0].transcript == "Version one."
            assert new.responses[0].transcript == "Version two."
            assert "receptionist of Acme" in old.config["instructions"]
            assert "receptionist of Zenith" in new.config["instructions"]
            # The first call kept its bot: same session, same instructions, still answering.
            assert len(old.responses) == 2 and not first.ended
            assert "receptionist of Acme" in old.config["instructions"]
        finally:
            await first.close()
            await second.close()
            process.terminate()
            await process.wait()


@pytest.mark.call
async def test_bots_check_builds_each_pipeline_and_names_the_line_that_raised(tmp_path):
    write(tmp_path, "default.md", GOOD)
    path = write(
        tmp_path,
        "broken.py",
        '"""A bot whose pipeline raises."""\n\n\ndef pipeline(call):\n'
        '    options = {}\n    return [call.input(), options["voice"], call.output()]\n',
    )
    code, out = await bots_check(tmp_path)  # no OPENAI_API_KEY: building connects nowhere
    assert code == 1, out
    assert f"error: {path}:6: bot 'broken': pipeline() raised KeyError: 'voice'" in out
    assert "ok: default" in out


LIVE = """\
---
description: A concierge on GPT-Live.
engine: live
greeting: Good evening.
voice: quartz
backend_model: gpt-5.4-mini
tools: [end_call, transfer_call]
transfer_number: "+15551230000"
limits:
  max_duration_secs: 300
---
You are the concierge.
"""


async def test_engine_live_builds_a_live_agent_from_the_front_matter(tmp_path):
    from pipecat_realtime_twilio.agent.live import LiveAgent

    bot = load_markdown_bot(write(tmp_path, "concierge.md", LIVE))
    processors = await build_offline(bot)
    agent = processors[1]
    assert isinstance(agent, LiveAgent) and len(processors) == 3
    assert agent.engine == "live" and agent.model == "gpt-live-1.1"
    assert agent._voice == "quartz" and agent.live_usage.backend_model == "gpt-5.4-mini"
    assert [t["name"] for t in agent._backend_tools] == ["end_call", "transfer_call"]
    assert agent._limits is not None and agent._greeting == "Good evening."


async def test_a_live_bot_may_warm_transfer_and_use_mcp_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", "t0ken")
    text = LIVE.replace(
        "tools: [end_call, transfer_call]",
        'tools: [end_call, warm_transfer]\nwarm_transfer: {number: "+15551230000"}\n'
        "mcp:\n  - label: crm\n    url: https://crm.example.com/mcp\n"
        "    headers:\n      Authorization: Bearer ${CRM_TOKEN}",
    )
    bot = load_markdown_bot(write(tmp_path, "concierge.md", text))
    agent = (await build_offline(bot))[1]
    tools = agent._backend_tools  # the Responses backend's: function tools, then MCP servers
    assert [t.get("name", t["type"]) for t in tools] == ["end_call", "warm_transfer", "mcp"]
    assert tools[2] == {
        "type": "mcp",
        "server_label": "crm",
        "server_url": "https://crm.example.com/mcp",
        "require_approval": "never",
        "headers": {"Authorization": "Bearer t0ken"},
    }
    assert [server.label for server in agent.mcp_servers] == ["crm"]


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (LIVE.replace("voice: quartz", "voice: quartz\nspeed: 1.2"), 6, "speed: Realtime-only"),
        (
            LIVE.replace("limits:", "turn_detection:\n  type: semantic_vad\nlimits:"),
            9,
            "turn_detection: Realtime-only (GPT-Live decides turns itself)",
        ),
        (
            LIVE.replace("limits:", "transcription: false\nlimits:"),
            9,
            "transcription: Realtime-only",
        ),
        (
            LIVE.replace("limits:", "noise_reduction: near_field\nlimits:"),
            9,
            "noise_reduction: Realtime-only",
        ),
        (
            LIVE.replace("limits:", "keypad_response_interval_secs: 2\nlimits:"),
            9,
            "keypad_response_interval_secs: Realtime-only",
        ),
        (
            LIVE.replace("backend_model: gpt-5.4-mini", "model: gpt-realtime-2"),
            6,
            "model: 'gpt-realtime-2' is no GPT-Live model",
        ),
        (LIVE.replace("voice: quartz", "voice: robot"), 5, "unknown voice 'robot'"),
        (LIVE.replace("engine: live", "engine: turbo"), 3, "unknown engine 'turbo'"),
        (
            LIVE.replace("engine: live\n", "").replace("backend_model: gpt-5.4-mini\n", ""),
            4,
            "voice: 'quartz' is a GPT-Live voice, not a Realtime one",
        ),
        (
            LIVE.replace("engine: live\n", "").replace("voice: quartz", "voice: cedar"),
            5,
            "backend_model: Live-only",
        ),
        (
            GOOD.replace("voice: cedar", "voice: cedar\nmodel: gpt-live-1.1"),
            5,
            "model: 'gpt-live-1.1' is a GPT-Live model: set engine: live",
        ),
    ],
    ids=[
        "speed",
        "turn detection",
        "transcription",
        "noise reduction",
        "keypad interval",
        "realtime model",
        "unknown voice",
        "unknown engine",
        "live voice on realtime",
        "backend model on realtime",
        "live model on realtime",
    ],
)
def test_a_live_bot_names_each_key_its_engine_cannot_have(tmp_path, text, line, says):
    path = write(tmp_path, "concierge.md", text)
    with pytest.raises(BotError) as error:
        load_markdown_bot(path)
    assert str(error.value).startswith(f"{path}:{line}: "), str(error.value)
    assert says in str(error.value)
