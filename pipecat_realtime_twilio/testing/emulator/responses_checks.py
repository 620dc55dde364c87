#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The checks of a Responses API request, as the real API makes them (for ``ResponsesApi``).

Every parameter is validated against the ``openai`` package's
``ResponseCreateParamsNonStreaming``; a key the models do not know is an unknown
parameter (the TypedDicts drop such keys: what validation dropped was unknown); a
``json_schema`` text format marked ``strict`` must be strict (every object
``additionalProperties: false``, every property ``required``, known types only).
Problems are worded as the real API words them, with their ``code`` and ``param``.
"""

from collections.abc import Iterator
from functools import cache
from typing import Any

from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming
from pydantic import TypeAdapter, ValidationError

from .validation import Problem, _pick_error, _problem_from_pydantic

_JSON_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}


@cache
def _params_adapter() -> TypeAdapter:
    return TypeAdapter(ResponseCreateParamsNonStreaming)


def check_request(body: Any, raw: bytes) -> Problem | None:
    """Check a Responses request as the real API would.

    Args:
        body: The parsed JSON body.
        raw: The body as sent.

    Returns:
        None for a valid request, else the problem (message, code, param).
    """
    if not isinstance(body, dict):
        return Problem("Invalid type for the request body: expected an object.", "invalid_type")
    if "model" not in body:
        return Problem(
            "Missing required parameter: 'model'.", "missing_required_parameter", "model"
        )
    try:
        params = _materialize(_params_adapter().validate_json(raw, strict=True), ())
    except _Invalid as invalid:  # in a list validated lazily: its errors start at the item
        error = _pick_error(invalid.error.errors())
        return _problem_from_pydantic({**error, "loc": (*invalid.path, *error["loc"])})
    except ValidationError as error:
        return _problem_from_pydantic(_pick_error(error.errors()))
    unknown = _unknown(body, params, "")
    if unknown is not None:
        return Problem(f"Unknown parameter: '{unknown}'.", "unknown_parameter", unknown)
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema" and fmt.get("strict"):
        detail = strict_schema_problem(fmt["schema"])
        if detail is not None:
            message = f"Invalid schema for response_format '{fmt['name']}': {detail}"
            return Problem(message, "invalid_json_schema", "text.format.schema")
    return None


def strict_schema_problem(schema: Any, context: tuple = ()) -> str | None:
    """What a strict JSON schema lacks (as the real API words it), or None.

    Args:
        schema: The schema (or a part of it).
        context: Where the part is, e.g. ``("properties", "outcome")``.
    """
    if not isinstance(schema, dict):
        return None
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds else []:
        if kind not in _JSON_TYPES:
            return f"In context={context}, type '{kind}' is not supported."
    if kinds == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return (
                f"In context={context}, 'additionalProperties' is required to be supplied "
                "and to be false."
            )
        required = schema.get("required")
        for key in schema.get("properties", {}):
            if not isinstance(required, list) or key not in required:
                return (
                    f"In context={context}, 'required' is required to be supplied and to be an "
                    f"array including every key in properties. Missing '{key}'."
                )
    parts: list[tuple[tuple, Any]] = [
        (("properties", k), v) for k, v in schema.get("properties", {}).items()
    ]
    parts += [(("$defs", k), v) for k, v in schema.get("$defs", {}).items()]
    parts += [(("anyOf", i), v) for i, v in enumerate(schema.get("anyOf", []))]
    if "items" in schema:
        parts.append((("items",), schema["items"]))
    for where, part in parts:
        problem = strict_schema_problem(part, context + where)
        if problem is not None:
            return problem
    return None


class _Invalid(Exception):
    """A lazily validated iterable failed: where it was, and why."""

    def __init__(self, path: tuple, error: ValidationError):
        super().__init__(str(error))
        self.path = path
        self.error = error


def _materialize(value: Any, path: tuple) -> Any:
    """The validated request with pydantic's lazy iterables (``Iterable[...]``) made lists."""
    if isinstance(value, Iterator):  # pydantic's ValidatorIterator
        try:
            value = list(value)
        except ValidationError as error:
            raise _Invalid(path, error) from None
    if isinstance(value, dict):
        return {k: _materialize(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialize(v, (*path, i)) for i, v in enumerate(value)]
    return value


def _unknown(sent: Any, known: Any, path: str) -> str | None:
    """The first key sent that validation dropped: a parameter the API does not know."""
    if isinstance(sent, dict) and isinstance(known, dict):
        for key, value in sent.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in known:
                return where
            found = _unknown(value, known[key], where)
            if found is not None:
                return found
    elif isinstance(sent, list) and isinstance(known, list):
        for index, (value, kept) in enumerate(zip(sent, known, strict=False)):
            found = _unknown(value, kept, f"{path}[{index}]")
            if found is not None:
                return found
    return None
