#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Prompt-only bots: ``bots/NAME.md``, a small YAML front matter and the prompt as body.

Example ``bots/receptionist.md``::

    ---
    description: Takes a message, or puts the caller through.
    greeting: Hello, you've reached Acme. How can I help?
    voice: cedar
    tools: [end_call, transfer_call]
    transfer_number: "+15551230000"
    limits:
      max_duration_secs: 600
      silence_timeout_secs: 20
    ---
    You are the receptionist of Acme...

Front matter keys (all optional): ``description``, ``greeting``, ``voice``,
``model``, ``language``, ``speed``, ``tools`` (names of built-in tools:
``end_call``, ``transfer_call``), ``transfer_number`` (needed by
``transfer_call``), ``fallback_number``, ``fallback_line``, ``limits``
(``max_duration_secs``, ``closing_line``, ``silence_timeout_secs``,
``silence_prompt``, ``silence_goodbye``). Any mistake is a :class:`BotError`
naming the file and line.
"""

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pipecat.processors.frame_processor import FrameProcessor
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from pipecat_realtime_twilio.agent.limits import CallLimits
from pipecat_realtime_twilio.agent.realtime import RealtimeAgent
from pipecat_realtime_twilio.agent.tools import end_call, transfer_call
from pipecat_realtime_twilio.errors import BotError
from pipecat_realtime_twilio.phone.call import CallSession

Voice = Literal[
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse"
]
VOICES: tuple[str, ...] = get_args(Voice)
"""The Realtime API's voices."""

Tool = Literal["end_call", "transfer_call"]
TOOLS: tuple[str, ...] = get_args(Tool)
"""Built-in tools a prompt-only bot can list by name."""


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_duration_secs: float | None = Field(default=None, gt=0)
    closing_line: str | None = None
    silence_timeout_secs: float | None = Field(default=None, gt=0)
    silence_prompt: str | None = None
    silence_goodbye: str | None = None


class PromptBotSpec(BaseModel):
    """The front matter of a prompt-only bot, checked.

    Parameters:
        description: One line about the bot (``pipecat-realtime-twilio bots``).
        greeting: What the bot says first; none: it waits for the caller.
        voice: One of :data:`VOICES`.
        model: Realtime model; ``OPENAI_REALTIME_MODEL`` when unset.
        language: The language the bot speaks (added to the prompt).
        speed: Speaking speed, 0.25 to 1.5.
        tools: Built-in tools by name (:data:`TOOLS`).
        transfer_number: Where ``transfer_call`` transfers.
        fallback_number: Where a call goes if the Realtime API fails for good.
        fallback_line: What the caller hears then (Twilio's voice).
        first_byte_timeout_secs: Most seconds a response may take to its first byte.
        limits: Call limits.
    """

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    greeting: str | None = None
    voice: Voice = "marin"
    model: str | None = None
    language: str | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)
    tools: list[Tool] = Field(default_factory=list)
    transfer_number: str | None = None
    fallback_number: str | None = None
    fallback_line: str | None = None
    first_byte_timeout_secs: float | None = Field(default=None, gt=0, le=30)
    limits: _Limits | None = None

    @field_validator("transfer_number", "fallback_number", mode="before")
    @classmethod
    def _number_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class PromptBot:
    """A bot from a Markdown file: the prompt and its front matter."""

    def __init__(self, path: Path, spec: PromptBotSpec, prompt: str):
        """Initialize the bot.

        Args:
            path: The ``.md`` file.
            spec: The checked front matter.
            prompt: The instructions (the body).
        """
        self.path = path
        self.spec = spec
        self.prompt = prompt

    def pipeline(self, call: CallSession) -> list[FrameProcessor]:
        """Build a call's pipeline: caller in, the agent, caller out."""
        spec = self.spec
        tools = [
            transfer_call(spec.transfer_number or "") if name == "transfer_call" else end_call()
            for name in spec.tools
        ]
        instructions = self.prompt
        if spec.language:
            instructions += f"\n\nSpeak {spec.language}."
        options: dict[str, Any] = {}
        if spec.limits is not None:
            values = spec.limits.model_dump(exclude_none=True)
            options["limits"] = CallLimits(**values)
        if spec.fallback_line:
            options["fallback_line"] = spec.fallback_line
        if spec.first_byte_timeout_secs is not None:
            options["first_byte_timeout_secs"] = spec.first_byte_timeout_secs
        agent = RealtimeAgent(
            instructions=instructions,
            greeting=spec.greeting,
            voice=spec.voice,
            model=spec.model,
            speed=spec.speed,
            tools=tools or None,
            fallback_number=spec.fallback_number,
            **options,
        )
        return [call.input(), agent, call.output()]


def load_prompt_bot(path: Path) -> PromptBot:
    """Read and check a prompt-only bot.

    Args:
        path: The ``.md`` file.

    Returns:
        The bot.

    Raises:
        BotError: For bad front matter, an unknown key, tool or voice, or a
            missing prompt; the message is ``FILE:LINE: what is wrong``.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise BotError(f"{path}:1: a prompt bot starts with a '---' front matter line")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise BotError(f"{path}:1: the front matter has no closing '---' line") from None
    front = "\n".join(lines[1:end])
    try:
        data = yaml.safe_load(front) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 2
        problem = getattr(e, "problem", None) or str(e)
        raise BotError(f"{path}:{line}: bad front matter: {problem}") from None
    if not isinstance(data, dict):
        raise BotError(f"{path}:2: the front matter must be 'key: value' lines")
    try:
        spec = PromptBotSpec.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        line = _line_of(lines[1:end], key)
        raise BotError(f"{path}:{line}: {key}: {_explain(error)}") from None
    if "transfer_call" in spec.tools and not spec.transfer_number:
        line = _line_of(lines[1:end], "tools")
        raise BotError(f"{path}:{line}: tools: transfer_call needs a transfer_number")
    prompt = "\n".join(lines[end + 1 :]).strip()
    if not prompt:
        raise BotError(f"{path}:{end + 2}: the prompt (the text after the front matter) is empty")
    return PromptBot(path, spec, prompt)


def _line_of(front: list[str], key: str) -> int:
    """The file line of top-level ``key`` in the front matter (its first line if absent)."""
    for number, line in enumerate(front, start=2):  # the front matter starts on line 2
        if line.split(":", 1)[0].strip() == key and not line.startswith((" ", "\t")):
            return number
    return 2


def _explain(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "literal_error":
        allowed = VOICES if error["loc"][0] == "voice" else TOOLS
        value = error.get("input")
        return f"unknown {error['loc'][0]} {value!r} (known: {', '.join(allowed)})"
    return error["msg"]
