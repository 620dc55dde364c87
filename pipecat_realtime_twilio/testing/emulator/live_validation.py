#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Live event validation against the ``openai`` package's ``openai.types.live`` models.

Client events are checked as strictly as Realtime ones (``validation``): against the
``openai.types.live.ClientEvent`` member for their ``type``, in strict mode, plus
rejection of keys the models accept only as extras (the real server refuses unknown
parameters). Server events the emulator produces are checked against
``openai.types.live.ServerEvent``; the Responses streaming event nested in a
``response.event`` is checked against ``openai.types.responses.ResponseStreamEvent``.
"""

import json
from functools import cache
from typing import Any

from openai.types.live import ClientEvent, ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter, ValidationError

from .validation import (
    Problem,
    _json_kind,
    _pick_error,
    _problem_from_pydantic,
    _union_members,
    _unknown_fields,
)


@cache
def _client_adapters() -> dict[str, TypeAdapter]:
    return {t: TypeAdapter(m) for t, m in _union_members(ClientEvent).items()}


@cache
def _server_adapters() -> dict[str, TypeAdapter]:
    return {t: TypeAdapter(m) for t, m in _union_members(ServerEvent).items()}


@cache
def _responses_adapters() -> dict[str, TypeAdapter]:
    return {t: TypeAdapter(m) for t, m in _union_members(ResponseStreamEvent).items()}


def check_live_client_event(
    data: Any, raw: str | None = None
) -> tuple[BaseModel | None, Problem | None]:
    """Validate a parsed Live client event.

    Args:
        data: The parsed JSON value.
        raw: The JSON text it came from, if any (validated as is, else ``data`` is dumped).

    Returns:
        ``(model, None)`` for a valid event, ``(None, problem)`` otherwise.
    """
    if not isinstance(data, dict):
        return None, Problem(
            f"Invalid type for 'event': expected an object, but got {_json_kind(data)} instead.",
            "invalid_type",
        )
    if "type" not in data:
        return None, Problem(
            "Missing required parameter: 'type'.", "missing_required_parameter", "type"
        )
    adapters = _client_adapters()
    event_type = data["type"]
    if not isinstance(event_type, str) or event_type not in adapters:
        supported = ", ".join(f"'{t}'" for t in adapters)
        return None, Problem(
            f"Invalid value: '{event_type}'. Supported values are: {supported}.",
            "invalid_value",
            "type",
        )
    try:
        model = adapters[event_type].validate_json(
            raw if raw is not None else json.dumps(data), strict=True
        )
    except ValidationError as exc:
        return None, _problem_from_pydantic(_pick_error(exc.errors()))
    unknown = _unknown_fields(model)
    if unknown:
        return None, Problem(f"Unknown parameter: '{unknown[0]}'.", "unknown_parameter", unknown[0])
    return model, None


def validate_live_client_event(event: dict | str) -> str | None:
    """Check a Live client event the way the emulator (strictly, like the server) would.

    Args:
        event: The event as a dict or JSON text.

    Returns:
        None if the event is valid, else the error message the emulator would send.
    """
    raw = event if isinstance(event, str) else None
    try:
        data = json.loads(event) if isinstance(event, str) else event
    except ValueError as exc:
        return f"Invalid JSON: {exc}"
    _, problem = check_live_client_event(data, raw)
    return problem.message if problem else None


def validate_live_server_event(event: dict) -> str | None:
    """Check a Live server event against the ``openai.types.live.ServerEvent`` models.

    Unknown fields are reported too. A ``response.event``'s nested event must be a
    valid ``ResponseStreamEvent``.

    Args:
        event: The event.

    Returns:
        None if valid, else a description of the problem.
    """
    kind = event.get("type")
    adapter = _server_adapters().get(kind) if isinstance(kind, str) else None
    if adapter is None:
        return f"unknown Live server event type {kind!r}"
    try:
        model = adapter.validate_python(event)
    except ValidationError as exc:
        return str(exc)
    unknown = _unknown_fields(model)
    if unknown:
        return f"unknown fields: {', '.join(unknown)}"
    if kind == "response.event":
        inner_kind = event["event"].get("type")
        inner_adapter = _responses_adapters().get(inner_kind)
        if inner_adapter is None:
            return f"unknown nested Responses event type {inner_kind!r}"
        try:
            inner = inner_adapter.validate_python(event["event"])
        except ValidationError as exc:
            return f"nested Responses event: {exc}"
        unknown = _unknown_fields(inner)
        if unknown:
            return f"nested Responses event: unknown fields: {', '.join(unknown)}"
    return None


def prepare_live_validators() -> None:
    """Build the validators up front, so that the first Live event isn't slow."""
    _client_adapters()
    _server_adapters()
    _responses_adapters()
