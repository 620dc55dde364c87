#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Twilio's inbound Media Streams messages, validated by type before anything uses them.

One :func:`parse_message` call (pydantic-core's JSON parser and validator, no
``json.loads``) turns a raw websocket message into one of :class:`Connected`,
:class:`Start`, :class:`Media`, :class:`Mark`, :class:`Dtmf` or :class:`Stop`,
picked by its ``event`` (a discriminated union), or raises pydantic's
``ValidationError``; :func:`describe_error` says what was wrong in a short,
log-safe phrase.

Every field the package reads is typed strictly: SIDs are two capital letters
and 32 hex digits (``CA…``, ``MZ…``, ``AC…``), the sample rate and channel count
are JSON integers in a sane range, ``customParameters`` is an object of at most
:data:`MAX_PARAMETERS` string entries of at most :data:`MAX_PARAMETER_CHARS`
characters each. Fields the package does not read (``sequenceNumber``,
``tracks``, ``chunk``...) and fields Twilio may add later are ignored.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from pipecat_realtime_twilio.logs import field

MAX_PARAMETERS = 32
"""Most ``<Parameter>`` entries a ``start`` message may carry (the runner sends six)."""

MAX_PARAMETER_CHARS = 1024
"""Longest ``<Parameter>`` name or value, in characters (the runner's own are far shorter)."""

MAX_NAME_CHARS = 256
"""Longest mark name, DTMF digit or media format encoding accepted."""


CallSid = Annotated[str, StringConstraints(max_length=34, pattern=r"^CA[0-9a-fA-F]{32}$")]
"""A Call SID: ``CA`` and 32 hex digits."""

StreamSid = Annotated[str, StringConstraints(max_length=34, pattern=r"^MZ[0-9a-fA-F]{32}$")]
"""A Media Stream SID: ``MZ`` and 32 hex digits."""

AccountSid = Annotated[str, StringConstraints(max_length=34, pattern=r"^AC[0-9a-fA-F]{32}$")]
"""An account SID: ``AC`` and 32 hex digits."""

_Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
_ParameterText = Annotated[str, StringConstraints(max_length=MAX_PARAMETER_CHARS)]


class _Part(BaseModel):
    """A part of a message: strict types, unknown fields ignored, immutable."""

    model_config = ConfigDict(
        strict=True, extra="ignore", frozen=True, validate_by_name=True, validate_by_alias=True
    )


class MediaFormat(_Part):
    """``start.mediaFormat``: what the caller's audio is (Twilio: 8 kHz μ-law, mono)."""

    encoding: _Name = "audio/x-mulaw"
    sample_rate: int = Field(8000, alias="sampleRate", ge=1, le=384_000)
    channels: int = Field(1, ge=1, le=32)


class StartInfo(_Part):
    """``start.start``: the stream, its call and account, parameters and format."""

    stream_sid: StreamSid | None = Field(None, alias="streamSid")
    call_sid: CallSid = Field(alias="callSid")
    account_sid: AccountSid = Field(alias="accountSid")
    custom_parameters: dict[_ParameterText, _ParameterText] = Field(
        default_factory=dict, alias="customParameters", max_length=MAX_PARAMETERS
    )
    media_format: MediaFormat = Field(default_factory=MediaFormat, alias="mediaFormat")


class MediaInfo(_Part):
    """``media.media``: one packet of the caller's audio (base64 μ-law).

    ``timestamp`` (ms since the stream started, a string from Twilio) is read only by
    a call's recorder, and leniently: any value is accepted here (the packet's audio
    must not be lost over it), and one that is not a count of ms is ignored there.
    """

    payload: str
    timestamp: Any = None


class MarkInfo(_Part):
    """``mark.mark``: the echo of a mark we sent."""

    name: _Name


class DtmfInfo(_Part):
    """``dtmf.dtmf``: a key the caller pressed."""

    digit: _Name


class StopInfo(_Part):
    """``stop.stop``: nothing in it is used (the stream is known already)."""


class Connected(_Part):
    """``connected``: the first message of a stream."""

    event: Literal["connected"]


class Start(_Part):
    """``start``: the stream's metadata, sent once after ``connected``."""

    event: Literal["start"]
    stream_sid: StreamSid | None = Field(None, alias="streamSid")
    start: StartInfo

    @property
    def sid(self) -> str | None:
        """The stream's SID, from ``start.streamSid`` or else the top-level ``streamSid``."""
        return self.start.stream_sid or self.stream_sid


class Media(_Part):
    """``media``: caller audio, about 50 a second."""

    event: Literal["media"]
    media: MediaInfo


class Mark(_Part):
    """``mark``: Twilio played up to a mark we sent."""

    event: Literal["mark"]
    mark: MarkInfo


class Dtmf(_Part):
    """``dtmf``: the caller pressed a key."""

    event: Literal["dtmf"]
    dtmf: DtmfInfo


class Stop(_Part):
    """``stop``: the stream ended (the caller hung up, or the call moved on)."""

    event: Literal["stop"]
    stop: StopInfo | None = None


InboundMessage = Media | Mark | Dtmf | Stop | Connected | Start
"""Any inbound Media Streams message (:func:`parse_message` tells them apart by ``event``)."""

_MESSAGES: TypeAdapter[InboundMessage] = TypeAdapter(
    Annotated[InboundMessage, Field(discriminator="event")]
)


def parse_message(data: str | bytes) -> InboundMessage:
    """Parse and validate one raw Media Streams message.

    Args:
        data: The websocket message (text, or UTF-8 bytes).

    Returns:
        The message, as the model of its ``event``.

    Raises:
        ValidationError: If it is not JSON, not an object, has no known ``event``,
            or any field it must have is missing or of the wrong type or size.
    """
    return _MESSAGES.validate_json(data)


def describe_error(error: ValidationError) -> str:
    """What was wrong with a message, short and safe to log.

    Names and values that came from the message go through
    :func:`~pipecat_realtime_twilio.logs.field` (control characters escaped,
    length bounded); pydantic's own text is used only where it holds no input.

    Args:
        error: What :func:`parse_message` raised.

    Returns:
        A phrase such as ``"not JSON"``, ``"unknown event 'x'"`` or
        ``"invalid 'start' message: start.mediaFormat.sampleRate: Input should be a
        valid integer (got 'abc')"``.
    """
    errors = error.errors(include_url=False, include_context=True, include_input=True)
    if not errors:
        return "invalid message"
    first = errors[0]
    kind = first["type"]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    if kind == "json_invalid":
        return "not JSON"
    if kind in ("dict_type", "model_type", "model_attributes_type") and not first["loc"]:
        return "not a JSON object"
    if kind == "union_tag_not_found":
        return "no event"
    if kind == "union_tag_invalid":
        tag = (first.get("ctx") or {}).get("tag")
        return f"unknown event '{field(tag, 40)}'"
    # loc: the event (the union's tag) first, then the path inside the message
    event, *inside = first["loc"] or ("?",)
    path = ".".join(field(part, 40) for part in inside) or "message"
    reason = f"invalid '{field(event, 40)}' message: {path}: {field(first['msg'], 120)}"
    value = first.get("input")
    if isinstance(value, str):
        reason += f" (got '{field(value, 40)}')"
    return reason + more
