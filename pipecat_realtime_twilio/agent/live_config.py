#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a GPT-Live session is opened with: the connection, ``session.start``, checked events.

GPT-Live (``/v1/live/sessions``) is configured once, by the first client event,
``session.start``: the model, the instructions, the audio format and voice (both
fixed for the session's life), the delegation and the conversation so far. A
phone session asks for 8 kHz ``audio/pcmu`` both ways (one format serves input
and output on a Live websocket), and delegates reasoning and tools to a
Responses model (``delegation: {type: responses}``), whose tools are the bot's
:class:`~pipecat_realtime_twilio.agent.tools.RealtimeTool` schemas (function tools)
and its MCP servers (Responses ``mcp`` tools, which OpenAI's backend calls).

Every client event but the audio appends is checked against the ``openai``
package's ``openai.types.live.ClientEvent`` before it is sent
(:func:`checked_event`): a mismatch is a bug of ours and is logged loudly.
"""

from functools import cache
from typing import Any, get_args

from loguru import logger
from openai.types.live import ClientEvent, SessionConfig
from openai.types.live.built_in_voice import BuiltInVoice
from openai.types.responses.tool import Mcp as ResponsesMcp
from pipecat.adapters.llm.schemas.tools_schema import AdapterType, ToolsSchema
from pydantic import TypeAdapter, ValidationError

from pipecat_realtime_twilio.agent.configuration import is_azure_url
from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
from pipecat_realtime_twilio.audio import SAMPLE_RATE
from pipecat_realtime_twilio.settings import SettingsError, current_settings

LIVE_FORMAT = {"type": "audio/pcmu", "rate": SAMPLE_RATE}
"""The one audio format of a phone's Live session, input and output: 8 kHz μ-law."""

LIVE_VOICES: tuple[str, ...] = get_args(BuiltInVoice)
"""GPT-Live's built-in voices (the ``openai`` package's ``BuiltInVoice``)."""

DEFAULT_LIVE_VOICE = "marin"
"""The voice of a Live bot that names none (the API's default too)."""

MAX_INPUT_ITEMS = 100
"""Most earlier turns a new session is given (the API takes at most 128 messages)."""

MAX_INPUT_CHARS = 24_000
"""Most characters of earlier turns a new session is given (the API's limit is about
8,192 tokens by default); the oldest turns are left out first."""

_NO_KEY_NEEDED = "no-key-needed"
_OPENAI_LIVE_HOST = "api.openai.com"


def live_connection(
    api_key: str | None, base_url: str | None, model: str | None, backend_model: str | None
) -> tuple[str, str, str, str]:
    """The key, URL, Live model and backend model to use: as given, else from the settings.

    Args:
        api_key: The API key, or None for ``OPENAI_API_KEY``.
        base_url: The Live websocket URL, or None for ``OPENAI_LIVE_URL`` (derived from
            ``OPENAI_REALTIME_URL`` when unset).
        model: The Live model, or None for ``OPENAI_LIVE_MODEL``.
        backend_model: The Responses model, or None for ``OPENAI_LIVE_BACKEND_MODEL``.

    Returns:
        ``(api_key, base_url, model, backend_model)``; a URL other than OpenAI's (a local
        emulator, a keyless gateway) needs no key.

    Raises:
        SettingsError: If no API key is given or configured for OpenAI's own URL.
    """
    if None not in (api_key, base_url, model, backend_model):
        return api_key or "", base_url or "", model or "", backend_model or ""
    settings = current_settings()
    base_url = (base_url or settings.openai_live_sessions_url).rstrip("/")
    model = model or settings.openai_live_model
    backend_model = backend_model or settings.openai_live_backend_model
    if api_key is None:
        if settings.openai_api_key is not None:
            api_key = settings.openai_api_key.get_secret_value()
        elif _OPENAI_LIVE_HOST in base_url or is_azure_url(base_url):
            raise SettingsError("OPENAI_API_KEY is not set: the GPT-Live API needs a key")
        else:
            api_key = _NO_KEY_NEEDED
    return api_key, base_url, model, backend_model


def backend_tools(tools: ToolsSchema | None) -> list[dict[str, Any]]:
    """The Responses backend's tools, from the bot's tool schemas.

    Args:
        tools: The schemas of the bot's tools (``split_tools``), or None.

    Returns:
        ``[{"type": "function", "name", "description", "parameters"}, ...]``, as
        ``openai.types.live.FunctionTool`` has them, then the MCP servers' ``mcp`` tools
        (``server_label``, ``server_url``, ``allowed_tools``, ``require_approval``,
        ``headers``, ``server_description``), each a valid Responses ``Mcp`` tool.
    """
    if tools is None:
        return []
    result = []
    for schema in tools.standard_tools:
        parameters = {"type": "object", "properties": dict(schema.properties)}
        if schema.required:
            parameters["required"] = list(schema.required)
        tool: dict[str, Any] = {"type": "function", "name": schema.name, "parameters": parameters}
        if schema.description:
            tool["description"] = schema.description
        result.append(tool)
    for custom in (tools.custom_tools or {}).get(AdapterType.OPENAI) or []:
        if custom.get("type") == "mcp":  # McpServer.to_realtime_tool(): the same fields
            ResponsesMcp.model_validate(custom)
            result.append(dict(custom))
    return result


def initial_items(transcript: list[TranscriptEntry]) -> list[dict[str, Any]]:
    """The conversation so far as a new session's ``input``: text messages, newest kept.

    Args:
        transcript: Both sides' utterances so far.

    Returns:
        Messages (``user`` with ``input_text``, ``assistant`` with ``output_text``), at most
        :data:`MAX_INPUT_ITEMS` of them and :data:`MAX_INPUT_CHARS` characters in all.
    """
    items: list[dict[str, Any]] = []
    chars = 0
    for entry in reversed(transcript):
        if entry.unrecognised or not entry.text.strip():
            continue  # no words to give: the new session did not hear that audio
        chars += len(entry.text)
        if len(items) >= MAX_INPUT_ITEMS or chars > MAX_INPUT_CHARS:
            break
        if entry.role == "caller":
            content = {"type": "input_text", "text": entry.text}
            items.append({"type": "message", "role": "user", "content": [content]})
        else:
            content = {"type": "output_text", "text": entry.text}
            items.append({"type": "message", "role": "assistant", "content": [content]})
    items.reverse()
    return items


def session_config(
    *,
    model: str,
    instructions: str,
    voice: str,
    backend_model: str,
    backend_instructions: str | None,
    tools: list[dict[str, Any]],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``session`` of a phone's ``session.start``.

    Args:
        model: The Live model.
        instructions: The Live model's instructions (conversation and delegation).
        voice: The output voice.
        backend_model: The Responses model delegated work goes to.
        backend_instructions: The backend's instructions (business rules, tool use).
        tools: The backend's function tools (:func:`backend_tools`).
        history: The conversation so far (:func:`initial_items`).

    Returns:
        The session configuration, checked against ``openai.types.live.SessionConfig``.
    """
    responses: dict[str, Any] = {"model": backend_model}
    if backend_instructions:
        responses["instructions"] = backend_instructions
    if tools:
        responses["tools"] = tools
    session: dict[str, Any] = {
        "model": model,
        "instructions": instructions,
        "audio": {"format": dict(LIVE_FORMAT), "output": {"voice": voice}},
        "delegation": {"type": "responses", "responses": responses},
    }
    if history:
        session["input"] = history
    SessionConfig.model_validate(session)  # a mistake of ours fails the build, not the call
    return session


@cache
def _client_event() -> TypeAdapter:
    return TypeAdapter(ClientEvent)


def checked_event(payload: dict[str, Any]) -> dict[str, Any]:
    """A client event as sent, checked against ``openai.types.live.ClientEvent``.

    Args:
        payload: The event (a JSON object with its ``type``).

    Returns:
        ``payload``, unchanged; a mismatch is logged as an error (a bug of ours) and
        the event is sent anyway, for the server to judge.
    """
    try:
        _client_event().validate_python(payload)
    except ValidationError as e:
        logger.error(f"GPT-Live client event {payload.get('type')!r} fails the openai types: {e}")
    return payload


def started_format(session: dict[str, Any] | None) -> dict[str, Any] | None:
    """The audio format a ``session.started`` (or ``session.updated``) session says it uses.

    Args:
        session: The event's ``session``, as a dict.

    Returns:
        Its ``audio.format`` (``{"type", "rate"}``), or None if it names none.
    """
    audio = (session or {}).get("audio")
    fmt = audio.get("format") if isinstance(audio, dict) else None
    return fmt if isinstance(fmt, dict) else None


def is_phone_format(fmt: dict[str, Any] | None) -> bool:
    """Whether an audio format is the phone's: ``audio/pcmu`` at 8000 Hz."""
    return (
        fmt is not None
        and fmt.get("type") == LIVE_FORMAT["type"]
        and (fmt.get("rate") == LIVE_FORMAT["rate"])
    )
