#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Bots: a bot builds a call's pipeline, fresh for every call.

A Python bot (``NAME.py``) defines ``pipeline(call)``; it may declare a post-call
analysis as ``ANALYSIS``, the mapping a prompt bot's front matter has under
``analysis`` (or an :class:`~pipecat_realtime_twilio.runner.analysis_spec.AnalysisSpec`)::

    ANALYSIS = {
        "fields": {
            "booked": {"type": "boolean", "description": "Whether an appointment was booked."},
        },
    }
"""

import asyncio
import inspect
import re
import sys
import traceback
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor
from pydantic import SecretStr

from pipecat_realtime_twilio.errors import BotError, SettingsError
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.runner.analysis_spec import (
    AnalysisDeclarationError,
    AnalysisSpec,
    check_analysis,
)
from pipecat_realtime_twilio.runner.prompt_bot import load_prompt_bot
from pipecat_realtime_twilio.settings import Settings, settings_in_effect

PipelineBuilder = Callable[[CallSession], list[FrameProcessor] | Awaitable[list[FrameProcessor]]]


@dataclass
class Bot:
    """A bot the runner can answer calls with.

    Parameters:
        name: The bot's name (its file name without the extension).
        description: One line about the bot (its module docstring's first line).
        builder: Builds the call's pipeline from the :class:`CallSession`.
        path: The file the bot was loaded from, if any.
        analysis: Its post-call analysis, if it declares one.
        voicemail: What a campaign's call says to an answering machine after its
            beep (a prompt bot's ``voicemail:``, a Python bot's ``VOICEMAIL``); none:
            the call hangs up.
        rest_tools: Its tools that need Twilio's REST API (a prompt bot's
            ``warm_transfer``), for the runner to check the credentials at start-up.
    """

    name: str
    description: str
    builder: PipelineBuilder
    path: Path | None = None
    analysis: AnalysisSpec | None = None
    voicemail: str | None = None
    rest_tools: tuple[str, ...] = ()

    async def build(self, call: CallSession) -> list[FrameProcessor]:
        """Build a fresh pipeline for one call.

        Args:
            call: The call to build for.

        Returns:
            The pipeline's processors.

        Raises:
            BotError: If the builder fails or returns something other than processors.
        """
        try:
            processors = self.builder(call)
            if inspect.isawaitable(processors):
                processors = await processors
        except Exception as e:
            raise BotError(
                f"{self.where(e)}: bot '{self.name}': pipeline() raised {type(e).__name__}: {e}"
            ) from e
        if not isinstance(processors, list) or not all(
            isinstance(p, FrameProcessor) for p in processors
        ):
            raise BotError(
                f"bot '{self.name}' ({self.path}): pipeline() must return a list of processors"
            )
        return processors

    def where(self, error: BaseException) -> str:
        """``FILE:LINE`` of the bot's own line that raised ``error`` (its file, if none).

        Args:
            error: What the bot's code raised.

        Returns:
            Where to look, as editors and terminals link it.
        """
        if self.path is None:
            return f"bot '{self.name}'"
        own = self.path.resolve()
        lines = [
            frame.lineno
            for frame in traceback.extract_tb(error.__traceback__)
            if Path(frame.filename).resolve() == own
        ]
        return f"{self.path}:{lines[-1]}" if lines else str(self.path)


async def check_bot(bot: Bot, settings: Settings) -> list[FrameProcessor]:
    """Build ``bot``'s pipeline once, offline, as a call would (nothing connects).

    Without ``OPENAI_API_KEY`` a stand-in key is used: building opens no session.

    Args:
        bot: The bot.
        settings: The settings the bot is built under.

    Returns:
        The pipeline's processors (e.g. for ``bots check`` to show their MCP servers).

    Raises:
        BotError: ``FILE:LINE: ...`` when ``pipeline()`` raises or returns something
            other than processors.
    """
    if settings.openai_api_key is None:
        settings = settings.model_copy(update={"openai_api_key": SecretStr("offline-check")})
    call = CallSession.before_stream(
        "CA" + "0" * 32,
        parameters={"bot": bot.name, "from": "+15550100000", "to": "+15550100001"},
    )
    with settings_in_effect(settings):
        return await bot.build(call)


def load_bot_file(path: Path) -> Bot:
    """Load a Python bot: a module that defines ``pipeline(call)``.

    Args:
        path: The ``.py`` file.

    Returns:
        The bot.

    Raises:
        BotError: If the file cannot be imported, defines no ``pipeline``, or
            declares an ``ANALYSIS`` with mistakes (a line for each).
    """
    name = path.stem
    module_name = f"pipecat_realtime_twilio_bots.{name}"
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    try:
        # Compiled from the source every time (no bytecode cache), so a file edited
        # again within the same second still reloads what is on disk.
        source = path.read_text(encoding="utf-8")
        code = compile(source, str(path), "exec")
        sys.modules[module_name] = module
        exec(code, module.__dict__)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise BotError(f"{path}: failed to import: {type(e).__name__}: {e}") from e
    builder = getattr(module, "pipeline", None)
    if not callable(builder):
        raise BotError(f"{path}: defines no pipeline(call) function")
    doc = (module.__doc__ or "").strip().splitlines()
    bot = Bot(name=name, description=doc[0] if doc else "", builder=builder, path=path)
    declared = getattr(module, "ANALYSIS", None)
    if declared is not None:
        try:
            bot.analysis = check_analysis(declared)
        except AnalysisDeclarationError as e:
            found = re.search(r"^ANALYSIS\b", source, re.MULTILINE)
            line = source.count("\n", 0, found.start()) + 1 if found else 1
            raise BotError(e.lines("ANALYSIS", lambda _: f"{path}:{line}")) from None
    voicemail = getattr(module, "VOICEMAIL", None)
    if voicemail is not None:
        if not isinstance(voicemail, str) or not voicemail.strip() or len(voicemail) > 1000:
            found = re.search(r"^VOICEMAIL\b", source, re.MULTILINE)
            line = source.count("\n", 0, found.start()) + 1 if found else 1
            raise BotError(f"{path}:{line}: VOICEMAIL must be text of 1 to 1000 characters")
        bot.voicemail = voicemail.strip()
    return bot


def load_markdown_bot(path: Path) -> Bot:
    """Load a prompt-only bot (``NAME.md``, see :mod:`pipecat_realtime_twilio.runner.prompt_bot`).

    Args:
        path: The ``.md`` file.

    Returns:
        The bot.

    Raises:
        BotError: ``FILE:LINE: what is wrong``.
    """
    prompt_bot = load_prompt_bot(path)
    return Bot(
        name=path.stem,
        description=prompt_bot.spec.description,
        builder=prompt_bot.pipeline,
        path=path,
        analysis=prompt_bot.spec.analysis,
        voicemail=prompt_bot.spec.voicemail,
        rest_tools=tuple(t for t in prompt_bot.spec.tools if t == "warm_transfer"),
    )


def bot_files(bots_dir: str | Path) -> list[Path]:
    """The bot files of a folder: ``*.py`` and ``*.md`` not starting with ``_``.

    Raises:
        SettingsError: If the folder does not exist.
    """
    folder = Path(bots_dir)
    if not folder.is_dir():
        raise SettingsError(f"BOTS_DIR: folder '{folder}' does not exist")
    return sorted(
        path
        for path in [*folder.glob("*.py"), *folder.glob("*.md")]
        if not path.name.startswith("_") and path.name.lower() != "readme.md"
    )


def load_bot(path: Path) -> Bot:
    """Load one bot file, Python or Markdown.

    Raises:
        BotError: If it cannot be loaded.
    """
    return load_markdown_bot(path) if path.suffix == ".md" else load_bot_file(path)


def load_bots(bots_dir: str | Path) -> dict[str, Bot]:
    """Load every bot in a folder: Python bots (``NAME.py``) and prompt-only ones (``NAME.md``).

    Args:
        bots_dir: The folder (``BOTS_DIR``).

    Returns:
        The bots by name.

    Raises:
        SettingsError: If the folder does not exist.
        BotError: If a bot file cannot be loaded, or two files give the same name.
    """
    bots: dict[str, Bot] = {}
    for path in bot_files(bots_dir):
        bot = load_bot(path)
        if bot.name in bots:
            raise BotError(f"{path}: bot '{bot.name}' is also defined by {bots[bot.name].path}")
        bots[bot.name] = bot
    return bots


def select_bot(bots: dict[str, Bot], name: str) -> Bot:
    """Return the bot called ``name``.

    Raises:
        SettingsError: If there is no such bot; the message lists the ones there are.
    """
    if name not in bots:
        known = ", ".join(sorted(bots)) or "none"
        raise SettingsError(f"BOT: no bot named '{name}' (bots found: {known})")
    return bots[name]


async def watch_bots(
    folder: str | Path,
    default: str,
    reloaded: Callable[[dict[str, Bot]], None],
    *,
    interval: float = 0.5,
) -> None:
    """Reload the bots whenever a bot file is added, changed or removed (runs until cancelled).

    A reload that fails (a broken file, the default bot gone) is logged and the
    bots stay as they were.

    Args:
        folder: The folder of bots (``BOTS_DIR``).
        default: The bot that must stay (``BOT``).
        reloaded: Called with the new bots after each good reload.
        interval: Seconds between looks at the folder.
    """

    def snapshot() -> dict[Path, int]:
        return {path: path.stat().st_mtime_ns for path in bot_files(folder)}

    seen = snapshot()
    while True:
        await asyncio.sleep(interval)
        try:
            now = snapshot()
        except (OSError, SettingsError) as e:
            logger.warning(f"Bot reload: cannot read {folder}: {e}")
            continue
        if now == seen:
            continue
        seen = now
        try:
            bots = load_bots(folder)
            select_bot(bots, default)
        except (BotError, SettingsError) as e:
            logger.error(f"Bot reload failed, keeping the bots as they were: {e}")
            continue
        reloaded(bots)
        logger.info(f"Reloaded bots from {folder}: {', '.join(sorted(bots))}")
