#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Event validation against the ``openai`` package's Realtime models.

Client events are checked strictly, like the real server: against the
``RealtimeClientEvent`` member for their ``type``, plus the keys the models
accept only as extras (the real server rejects unknown parameters). A failure is
shaped as the real server's ``error`` (message, code, param). Server events the
emulator produces are checked against ``RealtimeServerEvent``.
"""

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter, ValidationError

# Fields the real server puts in its session object that the request models don't declare.
_ALLOWED_SERVER_EXTRAS = {"session.id", "session.object", "session.expires_at"}


@dataclass
class Problem:
    """Why a client event was rejected, as the ``error`` the server sends back.

    Parameters:
        message: The error message.
        code: The error code (``invalid_value``, ``unknown_parameter`` ...).
        param: The offending parameter path, if any.
    """

    message: str
    code: str | None
    param: str | None = None


def _union_members(alias: Any) -> dict[str, type[BaseModel]]:
    """Map each member's ``type`` literal to the member model of an event union."""
    args = typing.get_args(alias)
    union = args[0] if args and typing.get_origin(alias) is typing.Annotated else alias
    members: dict[str, type[BaseModel]] = {}
    for model in typing.get_args(union):
        for literal in typing.get_args(model.model_fields["type"].annotation):
            members[literal] = model
    return members


@cache
def _client_adapters() -> dict[str, TypeAdapter]:
    return {t: TypeAdapter(m) for t, m in _union_members(RealtimeClientEvent).items()}


@cache
def _server_adapters() -> dict[str, TypeAdapter]:
    return {t: TypeAdapter(m) for t, m in _union_members(RealtimeServerEvent).items()}


_SCALAR_TAGS = {"int", "str", "float", "bool", "none", "list", "dict", "bytes"}


def _is_union_tag(part: Any) -> bool:
    if not isinstance(part, str) or not part:
        return False
    return part[0].isupper() or "[" in part or part in _SCALAR_TAGS


def _join_param(path: str, part: Any) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else str(part)


def _param_from_loc(loc: tuple) -> str:
    path = ""
    for part in loc:
        if not _is_union_tag(part):
            path = _join_param(path, part)
    return path


def _pick_error(errors: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """Pick the pydantic error that best explains why validation failed.

    Union validation reports every member's errors; this follows the union member
    whose discriminating fields (``type``/``role``) matched and that failed least.
    """
    direct = [e for e in errors if not any(_is_union_tag(p) for p in e["loc"])]
    if direct:
        return direct[0]

    def first_tag(e: Mapping[str, Any]) -> int:
        return next(i for i, p in enumerate(e["loc"]) if _is_union_tag(p))

    depth = min(first_tag(e) for e in errors)
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for e in errors:
        if first_tag(e) == depth:
            groups.setdefault(tuple(e["loc"][: depth + 1]), []).append(e)

    def score(key: tuple) -> tuple[int, int]:
        group = groups[key]
        mismatch = any(
            e["type"] == "literal_error" and tuple(e["loc"]) in {key + ("type",), key + ("role",)}
            for e in group
        )
        return (int(mismatch), len(group))

    best = min(groups, key=score)
    stripped = [
        {**e, "loc": tuple(e["loc"][:depth]) + tuple(e["loc"][depth + 1 :])} for e in groups[best]
    ]
    return _pick_error(stripped)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_EXPECTED_KINDS = {
    "int": "an integer",
    "string": "a string",
    "str": "a string",
    "float": "a number",
    "bool": "a boolean",
    "list": "an array",
    "tuple": "an array",
    "dict": "an object",
    "model": "an object",
    "model_attributes": "an object",
}


def _problem_from_pydantic(error: Mapping[str, Any]) -> Problem:
    loc = tuple(error["loc"])
    param = _param_from_loc(loc)
    kind = error["type"]
    if kind == "missing":
        return Problem(
            f"Missing required parameter: '{param}'.", "missing_required_parameter", param
        )
    if kind in ("literal_error", "enum"):
        expected = error.get("ctx", {}).get("expected", "")
        return Problem(
            f"Invalid value: '{error.get('input')}'. Supported values are: {expected}.",
            "invalid_value",
            param,
        )
    base = kind.removesuffix("_type").removesuffix("_parsing")
    if kind.endswith(("_type", "_parsing")) and base in _EXPECTED_KINDS:
        return Problem(
            f"Invalid type for '{param}': expected {_EXPECTED_KINDS[base]}, "
            f"but got {_json_kind(error.get('input'))} instead.",
            "invalid_type",
            param,
        )
    return Problem(f"Invalid value for '{param}': {error.get('msg')}.", "invalid_value", param)


def _unknown_fields(value: Any, path: str = "") -> list[str]:
    """Return the paths of keys the models accepted only as extras (unknown parameters)."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found.extend(_join_param(path, key) for key in (value.model_extra or {}))
        for name, info in type(value).model_fields.items():
            child = getattr(value, name, None)
            if isinstance(child, _CONTAINERS):  # a leaf has no keys of its own
                found.extend(_unknown_fields(child, _join_param(path, info.alias or name)))
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            if isinstance(child, _CONTAINERS):
                found.extend(_unknown_fields(child, _join_param(path, index)))
    return found


_CONTAINERS = (BaseModel, list, tuple)


def check_client_event(
    data: Any, raw: str | None = None
) -> tuple[BaseModel | None, Problem | None]:
    """Validate a parsed client event.

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
    adapters = _client_adapters()
    event_type = data.get("type")
    if "type" not in data:
        return None, Problem(
            "Missing required parameter: 'type'.", "missing_required_parameter", "type"
        )
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


def validate_client_event(event: dict | str) -> str | None:
    """Check a client event the way the emulator (and, strictly, the real server) would.

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
    _, problem = check_client_event(data, raw)
    return problem.message if problem else None


def validate_server_event(event: dict) -> str | None:
    """Check a server event against the ``RealtimeServerEvent`` models.

    Unknown fields are reported too, except the session fields the real server adds
    (``id``, ``object``, ``expires_at``).

    Args:
        event: The event.

    Returns:
        None if valid, else a description of the problem.
    """
    kind = event.get("type")
    adapter = _server_adapters().get(kind) if isinstance(kind, str) else None
    if adapter is None:
        return f"unknown server event type {event.get('type')!r}"
    try:
        model = adapter.validate_python(event)
    except ValidationError as exc:
        return str(exc)
    unknown = [p for p in _unknown_fields(model) if p not in _ALLOWED_SERVER_EXTRAS]
    if unknown:
        return f"unknown fields: {', '.join(unknown)}"
    return None


def prepare_validators() -> None:
    """Build the validators up front, so that the first event isn't slow."""
    _client_adapters()
    _server_adapters()
