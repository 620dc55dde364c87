from pathlib import Path

import pytest
from pipecat.processors.frame_processor import FrameProcessor

from pipecat_realtime_twilio.agent.realtime import RealtimeAgent
from pipecat_realtime_twilio.runner.bots import BotError, load_bot_file, load_bots, select_bot
from pipecat_realtime_twilio.settings import Settings, SettingsError, settings_in_effect

ROOT = Path(__file__).resolve().parent.parent


class StubCall:
    """Stands in for a CallSession: pipeline() only asks it for input and output."""

    def input(self):
        return FrameProcessor(name="caller-input")

    def output(self):
        return FrameProcessor(name="caller-output")


async def build_offline(bot) -> list:
    """Build a bot's pipeline for a stand-in call, with settings that reach no server."""
    settings = Settings(
        _env_file=None, openai_api_key="sk-test", openai_realtime_url="ws://127.0.0.1:1"
    )
    with settings_in_effect(settings):
        return await bot.build(StubCall())  # type: ignore[arg-type]


async def test_default_bot_pipeline_is_three_entries():
    bot = select_bot(load_bots(ROOT / "bots"), "default")
    processors = await build_offline(bot)
    assert len(processors) == 3
    assert [p.name for p in (processors[0], processors[2])] == ["caller-input", "caller-output"]
    assert isinstance(processors[1], RealtimeAgent)
    assert bot.description == "A helpful, concise phone assistant."


def test_unknown_bot_and_missing_folder_name_the_setting(tmp_path):
    with pytest.raises(SettingsError, match="BOT: no bot named 'nope'"):
        select_bot(load_bots(ROOT / "bots"), "nope")
    with pytest.raises(SettingsError, match="BOTS_DIR"):
        load_bots(tmp_path / "missing")


def test_broken_bot_files_name_the_file(tmp_path):
    (tmp_path / "syntax.py").write_text("def pipeline(call)\n")
    with pytest.raises(BotError, match="syntax.py"):
        load_bot_file(tmp_path / "syntax.py")
    (tmp_path / "nopipeline.py").write_text("X = 1\n")
    with pytest.raises(BotError, match="defines no pipeline"):
        load_bot_file(tmp_path / "nopipeline.py")


async def test_bot_returning_garbage_is_an_error(tmp_path):
    (tmp_path / "garbage.py").write_text("def pipeline(call):\n    return ['not a processor']\n")
    bot = load_bot_file(tmp_path / "garbage.py")
    with pytest.raises(BotError, match="list of processors"):
        await bot.build(StubCall())  # type: ignore[arg-type]
