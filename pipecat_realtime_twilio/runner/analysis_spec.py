#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A bot's post-call analysis as the bot declares it: the fields a text model fills.

A prompt bot declares it in its front matter, a Python bot as a module-level
``ANALYSIS`` (the same mapping, or an :class:`AnalysisSpec`)::

    analysis:
      fields:
        outcome:
          type: string
          enum: [message_taken, transferred, no_message]
          description: How the call ended for the caller.
        callback_requested: {type: boolean, description: Whether the caller wants a call back.}
      instructions: Extra guidance for the model.   # optional
      model: gpt-4.1-mini                           # optional; ANALYSIS_MODEL by default

``summary`` (text) is always filled, first; the declared fields follow in their order.
A field's ``type`` is ``string`` (with an optional ``enum`` of allowed values),
``boolean``, ``integer``, ``number`` or ``array`` (a list of strings, with an
optional ``enum`` for its items); each needs a ``description``, which is what the
model reads. Names are identifiers (letters, digits, ``_``; at most 64).

:func:`check_analysis` checks a declaration and reports every mistake, each with
its key (``fields.outcome.enum``); :func:`output_model` builds the pydantic model of
the answer, whose JSON schema (strict: every field required, no other keys) goes
to the Responses API and which checks the answer.
"""

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

SUMMARY = "summary"
"""The field every analysis has, first."""

SUMMARY_DESCRIPTION = (
    "A short summary of the call in two or three sentences: who called, what they wanted, "
    "and how the call ended."
)

FieldType = Literal["string", "boolean", "integer", "number", "array"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
"""The types a declared field can have (``array``: a list of strings)."""

MAX_FIELDS = 50
"""Most fields a bot can declare (besides ``summary``)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ENUM_TYPES = ("string", "array")
_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _field_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise PydanticCustomError(
            "field_name",
            "{name} is no field name (letters, digits and _, not starting with a digit, "
            "at most 64)",
            {"name": repr(name)},
        )
    if name == SUMMARY:
        raise PydanticCustomError(
            "field_name", "'summary' is always there: declare only the other fields"
        )
    return name


class AnalysisField(BaseModel):
    """One declared field of a post-call analysis.

    Parameters:
        type: One of :data:`FIELD_TYPES`.
        description: What the model should put there (the model reads it).
        enum: The allowed values of a ``string`` field, or of an ``array``'s items.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    description: _Text
    enum: list[str] | None = None

    @field_validator("enum")
    @classmethod
    def _enum_of_text(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return value
        kind = info.data.get("type")
        if kind is not None and kind not in _ENUM_TYPES:
            raise PydanticCustomError(
                "enum",
                "only a string or an array field has an enum, not a {kind} one",
                {"kind": kind},
            )
        if not value:
            raise PydanticCustomError("enum", "lists no value: give one or more, or leave it out")
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise PydanticCustomError("enum", "lists {value} twice", {"value": repr(twice[0])})
        return value

    def python_type(self) -> Any:
        """The type of the field's value in the answer (a ``Literal`` for an enum)."""
        item: Any = Literal.__getitem__(tuple(self.enum)) if self.enum else str
        return {
            "string": item,
            "boolean": bool,
            "integer": int,
            "number": float,
            "array": list[item],
        }[self.type]


class AnalysisSpec(BaseModel):
    """A bot's post-call analysis: the fields to fill, and how.

    Parameters:
        fields: The declared fields by name, in order (``summary`` comes first anyway).
        instructions: Extra guidance for the model, after the runner's own.
        model: The text model; ``ANALYSIS_MODEL`` when unset.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[Annotated[str, AfterValidator(_field_name)], AnalysisField] = Field(
        default_factory=dict, max_length=MAX_FIELDS
    )
    instructions: _Text | None = None
    model: _Text | None = None


Problem = tuple[tuple[str | int, ...], str]
"""A mistake in a declaration: the path of its key (``("fields", "outcome", "enum")``), what."""


class AnalysisDeclarationError(ValueError):
    """A declaration with mistakes; :attr:`problems` has every one of them."""

    def __init__(self, problems: list[Problem]):
        """Initialize the error.

        Args:
            problems: Each mistake: the path of its key, and what is wrong.
        """
        self.problems = problems
        super().__init__("; ".join(f"{key_text(key)}: {what}" for key, what in problems))

    def lines(self, root: str, line_of: Callable[[tuple[str | int, ...]], str]) -> str:
        """The mistakes as ``WHERE: root.key: what`` lines, the way ``bots check`` shows them.

        Args:
            root: The declaration's own key (``analysis``, or ``ANALYSIS`` in Python).
            line_of: ``FILE:LINE`` of a key path.
        """
        return "\n".join(
            f"{line_of(key)}: {key_text((root, *key))}: {what}" for key, what in self.problems
        )


def key_text(key: tuple[str | int, ...]) -> str:
    """A key path as text: ``fields.outcome.enum[0]``."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def check_analysis(declared: object) -> AnalysisSpec:
    """Check a bot's analysis declaration.

    Args:
        declared: The ``analysis`` mapping of the front matter (or ``ANALYSIS``), or a spec.

    Returns:
        The checked declaration.

    Raises:
        AnalysisDeclarationError: With every mistake found, each with its key.
    """
    if isinstance(declared, AnalysisSpec):
        return declared
    try:
        spec = AnalysisSpec.model_validate(declared)
    except ValidationError as error:
        raise AnalysisDeclarationError([_problem(e) for e in error.errors()]) from None
    try:
        output_model(spec).model_json_schema()
    except Exception as error:  # pydantic refusing a name or type: say so, never a traceback
        raise AnalysisDeclarationError([(("fields",), f"cannot be used: {error}")]) from None
    return spec


def output_model(spec: AnalysisSpec) -> type[BaseModel]:
    """The pydantic model of an answer: ``summary``, then the declared fields, all required.

    Attributes are ``f0``, ``f1``... with the declared names as aliases (so any name
    works, ``json`` or ``model_config`` too); dump with ``by_alias=True``. The model is
    strict (no coercion) and forbids other keys; its JSON schema is what the
    ``openai`` package sends as a strict ``json_schema`` text format.

    Args:
        spec: The declaration.

    Returns:
        The model, named ``call_analysis`` (the schema's name).
    """
    definitions: dict[str, Any] = {
        "f0": (str, Field(alias=SUMMARY, description=SUMMARY_DESCRIPTION)),
    }
    for index, (name, declared) in enumerate(spec.fields.items(), start=1):
        definitions[f"f{index}"] = (
            declared.python_type(),
            Field(alias=name, description=declared.description),
        )
    config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_enums_only)
    return create_model("call_analysis", __config__=config, **definitions)


def _enums_only(schema: dict[str, Any]) -> None:
    """A one-value enum as ``enum`` (pydantic writes ``const``, which not every API takes)."""
    for node in schema.get("properties", {}).values():
        for part in (node, node.get("items", {})):
            if "const" in part:
                part["enum"] = [part.pop("const")]


def _problem(error: ErrorDetails) -> Problem:
    """A pydantic error as a key path and a plain sentence."""
    loc = tuple(error["loc"])
    kind = error["type"]
    if loc and loc[-1] == "[key]":  # a field's name
        return loc[:-1], error["msg"]
    if kind == "extra_forbidden":
        known = {
            1: "fields, instructions, model",
            3: "type, description, enum",
        }.get(len(loc), "")
        return loc, f"unknown key (known: {known})" if known else "unknown key"
    if kind == "missing":
        what = {
            "type": f"needs a type ({', '.join(FIELD_TYPES)})",
            "description": "needs a description: it tells the model what to put there",
        }.get(str(loc[-1]), "is missing")
        return loc, what
    if kind == "literal_error":
        return loc, f"unknown type {error.get('input')!r} (known: {', '.join(FIELD_TYPES)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if not loc:
            return loc, "must be a mapping: fields, and optionally instructions and model"
        if loc == ("fields",):
            return loc, "must be a mapping of field names to their declarations"
        return loc, "must be a mapping: type, description (and for a string, enum)"
    if kind == "string_type" and "enum" in loc:
        value = error.get("input")
        return loc, f"{value!r} is not text: quote it in YAML (e.g. 'yes', 'no', 'on', '1')"
    if kind == "string_too_short":
        return loc, "is empty"
    if kind == "too_long":
        return loc, f"declares more than {MAX_FIELDS} fields"
    return loc, error["msg"]
