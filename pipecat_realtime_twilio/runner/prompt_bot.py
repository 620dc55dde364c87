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
    turn_detection:
      type: semantic_vad
      eagerness: low
    noise_reduction: near_field
    transcription:
      language: en
    analysis:
      fields:
        outcome: {type: string, enum: [message_taken, transferred], description: ...}
        callback_requested: {type: boolean, description: ...}
    ---
    You are the receptionist of Acme...

Front matter keys (all optional): ``description``, ``engine`` (``realtime``, the
default, or ``live``: GPT-Live, with ``backend_model``; see
:mod:`~pipecat_realtime_twilio.runner.live_bot`), ``greeting``, ``voice``,
``model``, ``language``, ``speed``, ``tools`` (names of built-in tools:
``end_call``, ``transfer_call``, ``warm_transfer``), ``transfer_number`` (needed by
``transfer_call``), ``warm_transfer`` (``number``, ``ring_secs``, ``caller_id``: needed
by the tool; see :mod:`~pipecat_realtime_twilio.runner.warm_transfer_spec`),
``fallback_number``, ``fallback_line``,
``first_byte_timeout_secs``, ``keypad_max_digits``, ``keypad_response_interval_secs``,
``limits`` (``max_duration_secs``, ``closing_line``,
``silence_timeout_secs``, ``silence_prompt``, ``silence_goodbye``),
``turn_detection`` (as the Realtime API names it: ``type`` ``server_vad``, the
default, with ``threshold``, ``prefix_padding_ms``, ``silence_duration_ms``,
``idle_timeout_ms``, ``create_response``, ``interrupt_response``; or
``semantic_vad`` with ``eagerness``, ``create_response``, ``interrupt_response``),
``noise_reduction`` (``near_field`` or ``far_field``), ``transcription``
(``model``, ``language``; ``false``: no transcript of the caller), ``analysis``
(the post-call analysis: ``fields``, ``instructions``, ``model``; see
:mod:`~pipecat_realtime_twilio.runner.analysis_spec`), ``mcp`` (MCP servers, each
``label``, ``url``, ``allowed_tools``, ``approval``, ``headers``, ``description``; see
:mod:`~pipecat_realtime_twilio.agent.mcp`). Any mistake is a
:class:`BotError` naming the file and line (of the nested key, for a nested one);
each mistake in ``analysis`` gets a line of its own.
"""

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from openai.types.realtime.noise_reduction_type import NoiseReductionType
from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad
from pipecat.processors.frame_processor import FrameProcessor
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from pipecat_realtime_twilio.agent.limits import CallLimits
from pipecat_realtime_twilio.agent.mcp import McpDeclarationError, McpServer, parse_mcp_servers
from pipecat_realtime_twilio.agent.realtime import RealtimeAgent
from pipecat_realtime_twilio.agent.tools import end_call, transfer_call
from pipecat_realtime_twilio.errors import BotError
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.runner.analysis_spec import (
    AnalysisDeclarationError,
    AnalysisSpec,
    check_analysis,
)
from pipecat_realtime_twilio.runner.live_bot import check_engine, live_agent
from pipecat_realtime_twilio.runner.warm_transfer_spec import WarmTransferSpec
from pipecat_realtime_twilio.targets import InvalidTransferTarget, check_transfer_target

Voice = Literal[
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse"
]
VOICES: tuple[str, ...] = get_args(Voice)
"""The Realtime API's voices."""

AnyVoice = Literal[
    Voice,
    "beacon", "bossa", "cinder", "delta", "gleam", "meridian", "quartz",
    "ripple", "shida", "stone", "tempo", "vesper", "willow",
]  # fmt: skip
"""A Realtime voice, or a GPT-Live one (for ``engine: live``; checked by engine)."""

Tool = Literal["end_call", "transfer_call", "warm_transfer"]
TOOLS: tuple[str, ...] = get_args(Tool)
"""Built-in tools a prompt-only bot can list by name."""


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_duration_secs: float | None = Field(default=None, gt=0)
    closing_line: str | None = None
    silence_timeout_secs: float | None = Field(default=None, gt=0)
    silence_prompt: str | None = None
    silence_goodbye: str | None = None


TURN_DETECTIONS: dict[str, type[ServerVad] | type[SemanticVad]] = {
    "server_vad": ServerVad,
    "semantic_vad": SemanticVad,
}
"""The Realtime API's turn detection types, by their ``type``."""

_MS_SETTINGS = ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms")
# Labels pydantic puts in an error's location for a union's member: no front matter key.
_UNION_MEMBERS = {*TURN_DETECTIONS, "_Transcription", "literal[False]"}


def _nested_error(key: str, message: str, **values: object) -> PydanticCustomError:
    """An error about the nested key ``key`` (its line is found by it)."""
    return PydanticCustomError("nested", message, {"key": key, **values})


class _Transcription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    language: str | None = None

    @field_validator("language")
    @classmethod
    def _iso_639_1(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z]{2}", value):
            raise PydanticCustomError(
                "language",
                "{value} is no ISO-639-1 code (two letters, e.g. 'en')",
                {"value": repr(value)},
            )
        return value


class PromptBotSpec(BaseModel):
    """The front matter of a prompt-only bot, checked.

    Parameters:
        description: One line about the bot (``pipecat-realtime-twilio bots``).
        engine: ``realtime`` (the OpenAI Realtime API, the default) or ``live`` (GPT-Live;
            see :mod:`~pipecat_realtime_twilio.runner.live_bot` for the keys it refuses).
        greeting: What the bot says first; none: it waits for the caller.
        voice: One of :data:`VOICES`.
        model: Realtime model; ``OPENAI_REALTIME_MODEL`` when unset (``engine: live``:
            the GPT-Live model; ``OPENAI_LIVE_MODEL`` when unset).
        backend_model: ``engine: live`` only: the Responses model GPT-Live delegates to;
            ``OPENAI_LIVE_BACKEND_MODEL`` when unset.
        language: The language the bot speaks (added to the prompt).
        speed: Speaking speed, 0.25 to 1.5.
        tools: Built-in tools by name (:data:`TOOLS`).
        transfer_number: Where ``transfer_call`` transfers.
        warm_transfer: Where and how ``warm_transfer`` transfers (``number``, ``ring_secs``...).
        fallback_number: Where a call goes if the Realtime API fails for good.
        fallback_line: What the caller hears then (Twilio's voice).
        first_byte_timeout_secs: Most seconds a response may take to its first byte.
        keypad_max_digits: Most digits in one keypad group sent to the model.
        keypad_response_interval_secs: Least seconds between two keypad-started responses.
        limits: Call limits.
        turn_detection: Server turn detection, the ``openai`` package's ``ServerVad``
            (the default ``type``) or ``SemanticVad``; unset: server VAD, the API's defaults.
        noise_reduction: ``near_field`` or ``far_field`` noise reduction of the caller.
        transcription: The caller's transcription (``model``, ``language``); False: none.
        analysis: The post-call analysis (the fields a text model fills after the call).
        voicemail: What a campaign's call says to an answering machine after its beep
            (Twilio's voice, no Realtime session); none: it hangs up.
        mcp: Remote MCP servers whose tools the model may call (through OpenAI).
    """

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    engine: Literal["realtime", "live"] = "realtime"
    greeting: str | None = None
    voice: AnyVoice = "marin"
    model: str | None = None
    backend_model: str | None = None
    language: str | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)
    tools: list[Tool] = Field(default_factory=list)
    transfer_number: str | None = None
    warm_transfer: WarmTransferSpec | None = None
    fallback_number: str | None = None
    fallback_line: str | None = None
    first_byte_timeout_secs: float | None = Field(default=None, gt=0, le=30)
    keypad_max_digits: int | None = Field(default=None, ge=1, le=256)
    keypad_response_interval_secs: float | None = Field(default=None, ge=0, le=60)
    limits: _Limits | None = None
    turn_detection: Annotated[ServerVad | SemanticVad, Field(discriminator="type")] | None = None
    noise_reduction: NoiseReductionType | None = None
    transcription: _Transcription | Literal[False] | None = None
    analysis: AnalysisSpec | None = None
    voicemail: str | None = Field(default=None, min_length=1, max_length=1000)
    mcp: list[McpServer] = Field(default_factory=list)

    @field_validator("transfer_number", "fallback_number", mode="before")
    @classmethod
    def _number_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("transfer_number", "fallback_number")
    @classmethod
    def _a_transfer_target(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            return check_transfer_target(value)
        except InvalidTransferTarget:
            raise PydanticCustomError(
                "transfer_target",
                "{value} is neither a phone number (E.164, e.g. '+15551234567') nor a SIP "
                "address (sip:user@host)",
                {"value": repr(value)},
            ) from None

    @field_validator("turn_detection", mode="before")
    @classmethod
    def _turn_detection_keys(cls, value: object) -> object:
        """``type`` defaults to ``server_vad``; a key the type does not know is an error."""
        if value is None:
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "turn_detection", "must be a mapping of settings, e.g. type: semantic_vad"
            )
        value = {"type": "server_vad", **value}
        kind = TURN_DETECTIONS.get(value["type"]) if isinstance(value["type"], str) else None
        if kind is None:
            known = ", ".join(TURN_DETECTIONS)
            raise _nested_error(
                "type",
                "unknown type {value} (known: {known})",
                value=repr(value["type"]),
                known=known,
            )
        for key in value:
            if key not in kind.model_fields:
                others = [t for t, k in TURN_DETECTIONS.items() if key in k.model_fields]
                hint = f" (a {others[0]} setting)" if others else ""
                raise _nested_error(str(key), "unknown key" + hint)
        return value

    @field_validator("turn_detection")
    @classmethod
    def _turn_detection_ranges(cls, value: ServerVad | SemanticVad | None) -> object:
        """The ranges the API documents: threshold 0 to 1, durations 0 or more."""
        if not isinstance(value, ServerVad):
            return value
        if value.threshold is not None and not 0 <= value.threshold <= 1:
            raise _nested_error(
                "threshold", "must be between 0 and 1, not {value}", value=value.threshold
            )
        for key in _MS_SETTINGS:
            ms = getattr(value, key)
            if ms is not None and ms < 0:
                raise _nested_error(key, "must be 0 or more, not {value}", value=ms)
        return value

    @field_validator("transcription", mode="before")
    @classmethod
    def _transcription_off(cls, value: object) -> object:
        if value is None or value is False or isinstance(value, dict):
            return value
        raise PydanticCustomError(
            "transcription", "must be model and/or language, or false for no caller transcript"
        )


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
            if name != "warm_transfer"
        ]
        if spec.warm_transfer is not None and "warm_transfer" in spec.tools:
            tools.append(spec.warm_transfer.tool())
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
        if spec.keypad_max_digits is not None:
            options["keypad_max_digits"] = spec.keypad_max_digits
        if spec.keypad_response_interval_secs is not None:
            options["keypad_response_interval_secs"] = spec.keypad_response_interval_secs
        if spec.turn_detection is not None:
            options["turn_detection"] = spec.turn_detection
        if spec.noise_reduction is not None:
            options["noise_reduction"] = spec.noise_reduction
        if spec.transcription is False:
            options["transcribe_caller"] = False
        elif spec.transcription is not None:
            if spec.transcription.model:
                options["transcription_model"] = spec.transcription.model
            options["transcription_language"] = spec.transcription.language
        if spec.engine == "live":
            return [call.input(), live_agent(spec, instructions, tools, options), call.output()]
        agent = RealtimeAgent(
            instructions=instructions,
            greeting=spec.greeting,
            voice=spec.voice,
            model=spec.model,
            speed=spec.speed,
            tools=[*tools, *spec.mcp] or None,
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
    if data.get("analysis") is not None:
        try:
            data["analysis"] = check_analysis(data["analysis"])
        except AnalysisDeclarationError as e:

            def where(key: tuple[str | int, ...]) -> str:
                return f"{path}:{_node_line(front, ('analysis', *key))}"

            raise BotError(e.lines("analysis", where)) from None
    if data.get("mcp") is not None:
        try:
            data["mcp"] = parse_mcp_servers(data["mcp"])
        except McpDeclarationError as e:
            key = "mcp" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.loc)
            line = _node_line(front, ("mcp", *e.loc))
            raise BotError(f"{path}:{line}: {key}: {e.message}") from None
    try:
        spec = PromptBotSpec.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        key = _key_path(error)
        line = _node_line(front, tuple(key.split(".")))
        raise BotError(f"{path}:{line}: {key}: {_explain(error)}") from None
    if "transfer_call" in spec.tools and not spec.transfer_number:
        line = _node_line(front, ("tools",))
        raise BotError(f"{path}:{line}: tools: transfer_call needs a transfer_number")
    if "warm_transfer" in spec.tools and spec.warm_transfer is None:
        line = _node_line(front, ("tools",))
        raise BotError(f"{path}:{line}: tools: warm_transfer needs warm_transfer: {{number: ...}}")
    check_engine(data, spec, VOICES, lambda key, message: _key_error(path, front, key, message))
    prompt = "\n".join(lines[end + 1 :]).strip()
    if not prompt:
        raise BotError(f"{path}:{end + 2}: the prompt (the text after the front matter) is empty")
    return PromptBot(path, spec, prompt)


def _key_error(path: Path, front: str, key: str, message: str) -> BotError:
    return BotError(f"{path}:{_node_line(front, (key,))}: {key}: {message}")


def _node_line(front: str, keys: tuple[str | int, ...]) -> int:
    """The file line of a key of the front matter (nested, or a list item), found by YAML.

    The nearest parent that is there gives its line when the key is not (absent, or
    past a list); a key not found at all gives the front matter's first line.
    """
    try:
        node = yaml.compose(front)
    except yaml.YAMLError:
        return 2
    line = 2  # the front matter starts on line 2
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if str(k.value) == str(key)), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 2, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 2
        else:
            break
    return line


def _key_path(error: ErrorDetails) -> str:
    """The dotted front matter key of a validation error, e.g. ``turn_detection.eagerness``."""
    keys = [str(p) for p in error["loc"] if isinstance(p, str) and p not in _UNION_MEMBERS]
    nested = error.get("ctx", {}).get("key") if error["type"] == "nested" else None
    return ".".join([*keys, nested] if nested else keys)


def _explain(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "literal_error":
        name = _key_path(error).rsplit(".", 1)[-1]
        known = {"voice": VOICES, "tools": TOOLS}.get(name)
        if known is None:
            known = tuple(re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", ""))))
        value = error.get("input")
        return f"unknown {name} {value!r} (known: {', '.join(known)})"
    return error["msg"]
