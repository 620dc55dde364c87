#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A local stand-in for the OpenAI Realtime API (GA protocol) over websockets.

``RealtimeEmulator`` is a websocket server on 127.0.0.1 that speaks the GA
Realtime protocol closely enough to drive a real client end to end, without
the network and with scripted, deterministic model behaviour. Point the client
at ``emulator.url`` instead of ``wss://api.openai.com/v1/realtime``.

Example::

    async with RealtimeEmulator(replies=[Reply("Hello! How can I help?")]) as emulator:
        async with websockets.connect(
            emulator.url + "?model=gpt-realtime",
            additional_headers={"Authorization": "Bearer sk-test"},
        ) as ws:
            ...
        session = emulator.sessions[0]
        assert emulator.server_event_errors == []

What it emulates:

- The opening handshake: ``/v1/realtime`` only, an ``Authorization: Bearer ...``
  header is required (401 otherwise), ``session.created`` with a realistic
  default session.
- Strict validation of every client event against the ``openai`` package's
  ``RealtimeClientEvent`` models, plus rejection of unknown fields (the models
  allow extra keys; the real server does not). Invalid events get an ``error``
  event shaped like the real server's and the session carries on.
- ``session.update`` (deep merge, ``session.updated`` with the full session),
  input and output audio in ``audio/pcmu``, ``audio/pcma`` and ``audio/pcm``.
- An energy-based server VAD on the appended input audio: ``speech_started``,
  ``speech_stopped``, ``committed``, the user item, optional input transcription,
  an automatic response, and barge-in (cancelling the response in progress).
- Scripted responses (``Reply``): audio with transcript, text-only, or function
  calls, streamed with the GA event sequence and paced at ``send_rate`` times
  real time, with deterministic ``usage``.
- ``response.cancel``, ``conversation.item.create/delete/retrieve/truncate``,
  ``input_audio_buffer.commit/clear``.
- Faults: refused handshakes, abrupt disconnects, a configurable time to first
  byte, pushed ``error`` events.

Every server event the emulator sends is validated against ``RealtimeServerEvent``;
failures land in ``RealtimeEmulator.server_event_errors`` (tests assert it stays empty).

Token usage (``response.done``) is deterministic:

- input audio tokens: 10 per second of user audio in the conversation the
  response sees (integer division: ``ms * 10 // 1000``);
- input text tokens: ``ceil(len(text) / 4)`` for the instructions and for every
  text in that conversation (input/output text, assistant transcripts, function
  call arguments and outputs);
- output audio tokens: 20 per second of audio actually sent (``ms * 20 // 1000``);
- output text tokens: ``ceil(len(text) / 4)`` of the transcript, text or
  arguments actually sent;
- cached tokens are always 0.

Not emulated: semantic turn detection (``semantic_vad`` uses the same energy VAD
with a silence duration picked from ``eagerness``), ``idle_timeout_ms`` (accepted,
never fires), noise reduction, MCP tools, and WebRTC/SIP-only events
(``output_audio_buffer.clear`` is accepted and ignored).

Times recorded by the emulator (``received_at``, ``sent_at``, ``closed_at`` ...)
are ``loop.time()`` values, i.e. ``time.monotonic()`` on the default event loop.
"""

import asyncio
import base64
import binascii
import copy
import inspect
import json
import math
import re
import time
import typing
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from loguru import logger
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..audio import BYTES_PER_MS, SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16

__all__ = [
    "ALAW_SILENCE",
    "AudioDelta",
    "ClientEvent",
    "ClientEventError",
    "DEFAULT_INSTRUCTIONS",
    "EmulatedResponse",
    "EmulatedSession",
    "FunctionCall",
    "FunctionOutput",
    "RealtimeEmulator",
    "RejectedHandshake",
    "Reply",
    "ServerEvent",
    "ServerEventError",
    "Truncation",
    "alaw_to_pcm16",
    "decode_audio",
    "encode_ulaw_as",
    "pcm16_to_alaw",
    "speech_duration_ms",
    "synthesize_speech",
    "validate_client_event",
    "validate_server_event",
]

DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. "
    "Act like a human, but remember that you aren't a human and that you can't do human "
    "things in the real world. Your voice and personality should be warm and engaging."
)
"""Instructions in the default session (a shortened version of the real server's)."""

REALTIME_PATH = "/v1/realtime"
"""The only websocket path the emulator accepts."""

DEFAULT_MODEL = "gpt-realtime"
"""Model reported when the client's URL has no ``?model=``."""

ALAW_SILENCE = 0xD5
"""The A-law code for a zero sample."""

PCM_RATE = 24000
"""Sample rate of the ``audio/pcm`` format."""

_FORMAT_RATES = {"audio/pcmu": SAMPLE_RATE, "audio/pcma": SAMPLE_RATE, "audio/pcm": PCM_RATE}
_FORMAT_SAMPLE_BYTES = {"audio/pcmu": 1, "audio/pcma": 1, "audio/pcm": 2}
_VAD_WINDOW_MS = 20
_SEMANTIC_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 300}
_SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
# Fields the real server puts in its session object that the request models don't declare.
_ALLOWED_SERVER_EXTRAS = {"session.id", "session.object", "session.expires_at"}


# ---------------------------------------------------------------------------
# Audio helpers
# ---------------------------------------------------------------------------


def _build_alaw_tables() -> tuple[np.ndarray, np.ndarray]:
    # The classic G.711 A-law codec (as in Sun's g711.c / CPython's audioop).
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (codes & 0x70) >> 4
    magnitude = ((codes & 0x0F) << 4) + np.where(segment == 0, 8, 0x108)
    magnitude = np.where(segment > 1, magnitude << np.maximum(segment - 1, 0), magnitude)
    decode = np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)

    samples = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13 significant bits
    mask = np.where(samples >= 0, 0xD5, 0x55)
    value = np.where(samples >= 0, samples, -samples - 1)
    seg_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
    seg = np.searchsorted(seg_ends, value)
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((value >> shift) & 0x0F)
    encoded = np.where(seg >= 8, 0x7F ^ mask, aval ^ mask).astype(np.uint8)
    # Index by the sample's bit pattern read as unsigned: 0..32767, then -32768..-1.
    return decode, np.roll(encoded, -32768)


_ALAW_DECODE, _ALAW_ENCODE = _build_alaw_tables()


def alaw_to_pcm16(alaw: bytes) -> bytes:
    """Decode G.711 A-law bytes to 16-bit little-endian PCM at the same rate.

    Args:
        alaw: A-law encoded samples, one byte each.

    Returns:
        PCM16 samples, two bytes each.
    """
    return _ALAW_DECODE[np.frombuffer(alaw, dtype=np.uint8)].tobytes()


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian PCM to G.711 A-law bytes at the same rate.

    Args:
        pcm: PCM16 samples, two bytes each (a trailing odd byte is ignored).

    Returns:
        A-law encoded samples, one byte each.
    """
    usable = len(pcm) - (len(pcm) & 1)
    return _ALAW_ENCODE[np.frombuffer(pcm, dtype=np.uint16, count=usable // 2)].tobytes()


def decode_audio(data: bytes, fmt: str) -> np.ndarray:
    """Decode audio in a Realtime API format to int16 samples at the format's rate.

    Args:
        data: Encoded audio (``audio/pcm`` must be a whole number of samples).
        fmt: ``"audio/pcmu"``, ``"audio/pcma"`` (8 kHz) or ``"audio/pcm"`` (24 kHz PCM16).

    Returns:
        The samples as a 1-D ``int16`` array (8 kHz or 24 kHz).
    """
    if fmt == "audio/pcmu":
        return np.frombuffer(ulaw_to_pcm16(data), dtype=np.int16)
    if fmt == "audio/pcma":
        return np.frombuffer(alaw_to_pcm16(data), dtype=np.int16)
    if fmt == "audio/pcm":
        return np.frombuffer(data, dtype="<i2", count=len(data) // 2).astype(np.int16)
    raise ValueError(f"unsupported audio format: {fmt!r}")


def encode_ulaw_as(ulaw: bytes, fmt: str) -> bytes:
    """Convert 8 kHz μ-law audio to a Realtime API output format.

    ``audio/pcmu`` is returned unchanged (bit-exact). ``audio/pcma`` is transcoded
    through PCM16. ``audio/pcm`` is decoded and upsampled to 24 kHz by linear
    interpolation.

    Args:
        ulaw: 8 kHz μ-law audio.
        fmt: The target format.

    Returns:
        The audio in ``fmt``.
    """
    if fmt == "audio/pcmu":
        return bytes(ulaw)
    pcm = ulaw_to_pcm16(ulaw)
    if fmt == "audio/pcma":
        return pcm16_to_alaw(pcm)
    if fmt == "audio/pcm":
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        if len(samples) == 0:
            return b""
        factor = PCM_RATE // SAMPLE_RATE
        positions = np.arange(len(samples) * factor) / factor
        upsampled = np.interp(positions, np.arange(len(samples)), samples)
        return np.round(upsampled).astype("<i2").tobytes()
    raise ValueError(f"unsupported audio format: {fmt!r}")


def _bytes_per_ms(fmt: str) -> int:
    return _FORMAT_RATES[fmt] * _FORMAT_SAMPLE_BYTES[fmt] // 1000


def speech_duration_ms(text: str) -> int:
    """Return the default length of synthesized speech for ``text``.

    Args:
        text: The words to speak.

    Returns:
        About 60 ms per character, at least 400 ms.
    """
    return max(400, 60 * len(text))


def synthesize_speech(text: str, duration_ms: int | None = None) -> bytes:
    """Synthesize deterministic, speech-like 8 kHz μ-law audio for ``text``.

    The waveform is a voiced tone (a fundamental between 110 and 170 Hz picked
    from the text, plus two harmonics) under a syllable-rate (4 Hz) amplitude
    envelope that never drops below about a third of full level, so every 20 ms
    window carries energy well above a typical VAD threshold.

    Args:
        text: The words to "speak"; only used to pick the pitch and default length.
        duration_ms: Length of the audio; defaults to ``speech_duration_ms(text)``.

    Returns:
        μ-law bytes at 8 kHz, ``duration_ms * 8`` of them.
    """
    if duration_ms is None:
        duration_ms = speech_duration_ms(text)
    n = max(0, int(duration_ms)) * BYTES_PER_MS
    t = np.arange(n) / SAMPLE_RATE
    f0 = 110 + zlib.crc32(text.encode()) % 60
    voiced = (
        np.sin(2 * np.pi * f0 * t)
        + 0.5 * np.sin(2 * np.pi * 2 * f0 * t + 0.3)
        + 0.25 * np.sin(2 * np.pi * 3 * f0 * t + 0.7)
    )
    envelope = 0.35 + 0.65 * np.abs(np.sin(np.pi * 4 * t))
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / 40.0)  # 5 ms fades
    ramp = np.maximum(ramp, 0.2)
    pcm = np.round(5000 * voiced * envelope * ramp).astype(np.int16)
    return pcm16_to_ulaw(pcm.tobytes())


# ---------------------------------------------------------------------------
# Public records
# ---------------------------------------------------------------------------


@dataclass
class FunctionCall:
    """A scripted tool call: the model calls function ``name`` with ``arguments``.

    Parameters:
        name: The function name.
        arguments: The arguments, sent as a JSON string.
        call_id: The call id; a fresh ``call_...`` id when None.
    """

    name: str
    arguments: dict
    call_id: str | None = None


@dataclass
class Reply:
    """One scripted model response.

    Parameters:
        text: The spoken words (the audio transcript), or the text in text mode.
        audio: 8 kHz μ-law audio to speak; None synthesizes it from ``text``.
        duration_ms: Length of synthesized audio; defaults to
            ``speech_duration_ms(text)`` (about 60 ms per character, at least 400 ms).
        function_call: If set, the response is this function call instead of audio.
        ttfb_ms: Overrides the emulator's ``ttfb_ms`` for this response.
    """

    text: str = ""
    audio: bytes | None = None
    duration_ms: int | None = None
    function_call: FunctionCall | None = None
    ttfb_ms: float | None = None


class ClientEvent(dict):
    """A client event as received: the parsed JSON object, plus metadata.

    Attributes:
        raw: The websocket message text as received.
        received_at: ``loop.time()`` when it arrived.
        error: Why the event was rejected, or None if it was accepted.
    """

    def __init__(self, data: dict, *, raw: str, received_at: float) -> None:
        """Initialize the record.

        Args:
            data: The parsed JSON object (empty if the message wasn't a JSON object).
            raw: The message text.
            received_at: ``loop.time()`` when it arrived.
        """
        super().__init__(data)
        self.raw = raw
        self.received_at = received_at
        self.error: str | None = None


class ServerEvent(dict):
    """A server event the emulator sent, plus metadata.

    Attributes:
        queued_at: ``loop.time()`` when the event was produced.
        sent_at: ``loop.time()`` when it was written to the socket (None if never).
    """

    def __init__(self, data: dict, *, queued_at: float) -> None:
        """Initialize the record.

        Args:
            data: The event.
            queued_at: ``loop.time()`` when it was produced.
        """
        super().__init__(data)
        self.queued_at = queued_at
        self.sent_at: float | None = None


@dataclass
class ClientEventError:
    """A client event that failed validation.

    Parameters:
        event: The parsed event (or the raw text if it wasn't JSON).
        reason: The error message sent back to the client.
        code: The error code sent back (``invalid_value``, ``unknown_parameter`` ...).
        param: The offending parameter path, if any.
        session_id: The ``sess_...`` id of the session that received it.
    """

    event: Any
    reason: str
    code: str | None = None
    param: str | None = None
    session_id: str | None = None


@dataclass
class ServerEventError:
    """A server event produced by the emulator that failed ``RealtimeServerEvent`` validation.

    Parameters:
        event: The event (it was sent anyway).
        reason: What was wrong with it.
    """

    event: dict
    reason: str


@dataclass
class RejectedHandshake:
    """A websocket handshake the emulator refused.

    Parameters:
        status: The HTTP status returned.
        reason: Why (``"injected fault"``, ``"missing bearer token"`` ...).
        path: The request path including the query.
        at: ``loop.time()`` of the refusal.
    """

    status: int
    reason: str
    path: str
    at: float


@dataclass
class AudioDelta:
    """One ``response.output_audio.delta`` the emulator sent.

    Parameters:
        data: The audio bytes, in the response's output format.
        event: The event record (its ``sent_at`` is set once written).
    """

    data: bytes
    event: ServerEvent

    @property
    def sent_at(self) -> float | None:
        """``loop.time()`` when the delta was written to the socket."""
        return self.event.sent_at


@dataclass
class EmulatedResponse:
    """One model response, as the emulator produced it.

    Parameters:
        id: The ``resp_...`` id.
        trigger: ``"response.create"`` or ``"vad"``.
        reply: The scripted reply it plays (None until chosen, for async reply factories).
        status: ``"in_progress"``, ``"completed"`` or ``"cancelled"``.
        status_reason: For cancelled responses, ``"turn_detected"``, ``"client_cancelled"``
            or ``"disconnected"`` (the socket closed mid-response; no event was sent).
        kind: ``"audio"``, ``"text"`` or ``"function_call"``.
        item_id: The output item's id (None if cancelled before it was added).
        call_id: For function calls, the call id.
        conversation: ``"auto"`` or ``"none"`` (out-of-band).
        output_format: The audio format of ``audio``.
        instructions: The instructions in effect.
        params: The ``response`` object of the ``response.create`` event, if any.
        audio: Every audio byte sent, in ``output_format``.
        deltas: Every audio delta with its send time.
        transcript: The transcript (or text, or arguments) actually sent.
        usage: The ``usage`` object sent in ``response.done``.
        triggered_at: ``loop.time()`` when the response was triggered.
        created_at: When ``response.created`` was produced.
        first_audio_at: When the first audio delta was produced.
        done_at: When ``response.done`` was produced.
    """

    id: str
    trigger: str
    reply: Reply | None = None
    status: str = "in_progress"
    status_reason: str | None = None
    kind: str = "audio"
    item_id: str | None = None
    call_id: str | None = None
    conversation: str = "auto"
    output_format: str = "audio/pcm"
    instructions: str = ""
    params: dict = field(default_factory=dict)
    audio: bytearray = field(default_factory=bytearray)
    deltas: list[AudioDelta] = field(default_factory=list)
    transcript: str = ""
    usage: dict | None = None
    triggered_at: float = 0.0
    created_at: float | None = None
    first_audio_at: float | None = None
    done_at: float | None = None

    @property
    def audio_ms(self) -> float:
        """Milliseconds of audio sent."""
        return len(self.audio) / _bytes_per_ms(self.output_format)

    @property
    def active(self) -> bool:
        """Whether the response is still in progress."""
        return self.status == "in_progress"


@dataclass
class Truncation:
    """A ``conversation.item.truncate`` request and its outcome.

    Parameters:
        item_id: The item to truncate.
        content_index: The content part index.
        audio_end_ms: Where to cut.
        accepted: Whether the emulator truncated the item.
        error: The error message sent if not.
        audio_sent_ms: How much audio had been sent for the item at that time.
        at: ``loop.time()`` of the request.
    """

    item_id: str
    content_index: int
    audio_end_ms: int
    accepted: bool
    error: str | None = None
    audio_sent_ms: float | None = None
    at: float = 0.0


@dataclass
class FunctionOutput:
    """A ``function_call_output`` item the client created.

    Parameters:
        call_id: The call it answers.
        output: The output string.
        item_id: The conversation item id.
        at: ``loop.time()`` when it arrived.
    """

    call_id: str
    output: str
    item_id: str
    at: float = 0.0


@dataclass
class _Problem:
    message: str
    code: str | None
    param: str | None = None


@dataclass
class _ItemMeta:
    audio: bytes = b""
    audio_format: str | None = None
    audio_ms: float = 0.0
    full_transcript: str = ""


ReplySource = (
    list[Reply] | Callable[["EmulatedSession", str], "Reply | None | Awaitable[Reply | None]"]
)


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


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


def _pick_error(errors: list[dict]) -> dict:
    """Pick the pydantic error that best explains why validation failed.

    Union validation reports every member's errors; this follows the union member
    whose discriminating fields (``type``/``role``) matched and that failed least.
    """
    direct = [e for e in errors if not any(_is_union_tag(p) for p in e["loc"])]
    if direct:
        return direct[0]

    def first_tag(e: dict) -> int:
        return next(i for i, p in enumerate(e["loc"]) if _is_union_tag(p))

    depth = min(first_tag(e) for e in errors)
    groups: dict[tuple, list[dict]] = {}
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


def _problem_from_pydantic(error: dict) -> _Problem:
    loc = tuple(error["loc"])
    param = _param_from_loc(loc)
    kind = error["type"]
    if kind == "missing":
        return _Problem(
            f"Missing required parameter: '{param}'.", "missing_required_parameter", param
        )
    if kind in ("literal_error", "enum"):
        expected = error.get("ctx", {}).get("expected", "")
        return _Problem(
            f"Invalid value: '{error.get('input')}'. Supported values are: {expected}.",
            "invalid_value",
            param,
        )
    base = kind.removesuffix("_type").removesuffix("_parsing")
    if kind.endswith(("_type", "_parsing")) and base in _EXPECTED_KINDS:
        return _Problem(
            f"Invalid type for '{param}': expected {_EXPECTED_KINDS[base]}, "
            f"but got {_json_kind(error.get('input'))} instead.",
            "invalid_type",
            param,
        )
    return _Problem(f"Invalid value for '{param}': {error.get('msg')}.", "invalid_value", param)


def _unknown_fields(value: Any, path: str = "") -> list[str]:
    """Return the paths of keys the models accepted only as extras (unknown parameters)."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found.extend(_join_param(path, key) for key in (value.model_extra or {}))
        for name, info in type(value).model_fields.items():
            found.extend(
                _unknown_fields(getattr(value, name, None), _join_param(path, info.alias or name))
            )
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            found.extend(_unknown_fields(child, _join_param(path, index)))
    return found


def _validate_client(
    data: dict, raw: str | None = None
) -> tuple[BaseModel | None, _Problem | None]:
    adapters = _client_adapters()
    event_type = data.get("type")
    if "type" not in data:
        return None, _Problem(
            "Missing required parameter: 'type'.", "missing_required_parameter", "type"
        )
    if not isinstance(event_type, str) or event_type not in adapters:
        supported = ", ".join(f"'{t}'" for t in adapters)
        return None, _Problem(
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
        return None, _Problem(
            f"Unknown parameter: '{unknown[0]}'.", "unknown_parameter", unknown[0]
        )
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
    if not isinstance(data, dict):
        return f"Invalid type for 'event': expected an object, but got {_json_kind(data)} instead."
    _, problem = _validate_client(data, raw)
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
    adapter = _server_adapters().get(event.get("type"))  # type: ignore[arg-type]
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


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


def _text_tokens(text: str | None) -> int:
    return math.ceil(len(text) / 4) if text else 0


def _format_type(fmt: Any) -> str:
    if isinstance(fmt, dict) and fmt.get("type") in _FORMAT_RATES:
        return fmt["type"]
    return "audio/pcm"


def _deep_merge(base: dict, update: dict) -> None:
    """Merge ``update`` into ``base``; a dict whose ``type`` changes replaces the old one."""
    for key, value in update.items():
        current = base.get(key)
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and value.get("type", current.get("type")) == current.get("type")
        ):
            _deep_merge(current, value)
        else:
            base[key] = copy.deepcopy(value)


def _split_words(text: str) -> list[str]:
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


def _truncate_text(text: str, ratio: float) -> str:
    if ratio >= 1:
        return text
    cut = int(len(text) * max(0.0, ratio))
    if cut < len(text) and cut > 0 and not text[cut].isspace() and not text[cut - 1].isspace():
        space = text.rfind(" ", 0, cut)
        cut = space if space > 0 else 0
    return text[:cut].rstrip()


def _item_texts(item: dict) -> list[str]:
    kind = item.get("type")
    if kind == "message":
        texts = []
        for part in item.get("content") or []:
            if part.get("type") in ("input_text", "output_text"):
                texts.append(part.get("text") or "")
            elif part.get("type") == "output_audio":
                texts.append(part.get("transcript") or "")
        return texts
    if kind == "function_call":
        return [item.get("arguments") or ""]
    if kind == "function_call_output":
        return [item.get("output") or ""]
    return []


def _default_session(session_id: str, model: str, voice: str, instructions: str) -> dict:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": instructions,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": PCM_RATE},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(_SERVER_VAD_DEFAULTS),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": PCM_RATE},
                "voice": voice,
                "speed": 1.0,
            },
        },
        "include": None,
    }


# ---------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------


class EmulatedSession:
    """One accepted websocket connection: the server side of a Realtime session.

    Attributes:
        id: The ``sess_...`` id.
        model: The model from the ``?model=`` query (``"gpt-realtime"`` if absent).
        query: The parsed query string (first value of each parameter).
        authorization: The ``Authorization`` header as received.
        headers: All request headers (last value wins for repeated ones).
        config: The current session configuration (defaults merged with every
            accepted ``session.update``), as sent in ``session.updated``.
        client_events: Every client event as received, valid or not (``ClientEvent``
            dicts with ``received_at``).
        sent_events: Every server event sent (``ServerEvent`` dicts with ``sent_at``).
        input_audio: All appended audio, exactly as received (input format bytes).
        items: The conversation items in order (protocol-shaped dicts).
        responses: Every response, in order.
        truncations: Every truncate request, accepted or not.
        function_outputs: Every accepted ``function_call_output``.
        opened_at: ``loop.time()`` when the session was accepted.
        closed_at: ``loop.time()`` when the socket closed (either side), else None.
    """

    def __init__(self, emulator: "RealtimeEmulator", websocket: ServerConnection) -> None:
        """Initialize the session for an accepted websocket.

        Args:
            emulator: The emulator that owns the session.
            websocket: The accepted connection.
        """
        self._emulator = emulator
        self._ws = websocket
        self._loop = asyncio.get_running_loop()
        request = websocket.request
        assert request is not None
        query = parse_qs(urlsplit(request.path).query)
        self.id = _new_id("sess")
        self.query: dict[str, str] = {k: v[0] for k, v in query.items()}
        self.model: str = self.query.get("model", DEFAULT_MODEL)
        self.authorization: str | None = request.headers.get("Authorization")
        self.headers: dict[str, str] = dict(request.headers.raw_items())
        self.config: dict = _default_session(
            self.id, self.model, emulator.voice, emulator.instructions
        )
        self.client_events: list[ClientEvent] = []
        self.sent_events: list[ServerEvent] = []
        self.input_audio = bytearray()
        self.items: list[dict] = []
        self.responses: list[EmulatedResponse] = []
        self.truncations: list[Truncation] = []
        self.function_outputs: list[FunctionOutput] = []
        self.opened_at: float = self._loop.time()
        self.closed_at: float | None = None

        self._conversation_id = _new_id("conv")
        self._queue: asyncio.Queue[tuple[str, ServerEvent] | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = asyncio.Event()
        self._active: EmulatedResponse | None = None  # the default-conversation response
        self._running: dict[str, EmulatedResponse] = {}
        self._response_tasks: dict[str, asyncio.Task] = {}
        self._response_stage: dict[str, set[str]] = {}
        self._response_input: dict[str, tuple[int, int]] = {}
        self._item_meta: dict[str, _ItemMeta] = {}
        self._response_items: dict[str, dict] = {}  # response id -> its output item
        self._calls: dict[str, str] = {}  # call_id -> item_id
        self._audio_out_started = False
        # Input buffer and VAD state.
        self._input_ms = 0.0
        self._buffer = bytearray()
        self._buffer_start_ms = 0.0
        self._byte_tail = b""
        self._pcm_tail = np.zeros(0, dtype=np.int16)
        self._vad_pos_ms = 0.0
        self._reset_vad()

    def __repr__(self) -> str:
        """Return a short description."""
        state = "closed" if self.closed_at is not None else "open"
        return f"<EmulatedSession {self.id} model={self.model!r} {state}>"

    # -- public ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the socket has closed."""
        return self.closed_at is not None

    @property
    def active_response(self) -> EmulatedResponse | None:
        """The response in progress in the default conversation, if any."""
        return self._active

    @property
    def input_format(self) -> str:
        """The negotiated input audio format (``audio/pcmu``, ``audio/pcma`` or ``audio/pcm``)."""
        return _format_type(self.config["audio"]["input"]["format"])

    @property
    def output_format(self) -> str:
        """The negotiated output audio format."""
        return _format_type(self.config["audio"]["output"]["format"])

    @property
    def input_audio_ms(self) -> float:
        """Milliseconds of input audio appended so far (in the session's input timeline)."""
        return self._input_ms

    @property
    def errors_sent(self) -> list[ServerEvent]:
        """Every ``error`` event sent to the client."""
        return [e for e in self.sent_events if e.get("type") == "error"]

    def events_of_type(self, event_type: str) -> list[ClientEvent]:
        """Return the received client events of one type.

        Args:
            event_type: E.g. ``"input_audio_buffer.append"``.

        Returns:
            The matching events, in arrival order.
        """
        return [e for e in self.client_events if e.get("type") == event_type]

    def sent_of_type(self, event_type: str) -> list[ServerEvent]:
        """Return the sent server events of one type.

        Args:
            event_type: E.g. ``"response.done"``.

        Returns:
            The matching events, in send order.
        """
        return [e for e in self.sent_events if e.get("type") == event_type]

    def item(self, item_id: str) -> dict | None:
        """Return the conversation item with this id, or None."""
        return next((i for i in self.items if i.get("id") == item_id), None)

    async def send_event(self, event: dict) -> ServerEvent:
        """Push an arbitrary server event to the client (validated and recorded like any other).

        Args:
            event: The event; an ``event_id`` is added if missing.

        Returns:
            The recorded event.
        """
        record = self._emit(event)
        await self.flush()
        return record

    async def send_error(
        self,
        type: str,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
    ) -> ServerEvent:
        """Push an ``error`` server event to the client.

        Args:
            type: The error type, e.g. ``"server_error"`` or ``"invalid_request_error"``.
            code: The error code, or None.
            message: The human-readable message.
            param: The related parameter, if any.
            event_id: The client event id the error refers to, if any.

        Returns:
            The recorded event.
        """
        record = self._send_error(message, code, param=param, event_id=event_id, error_type=type)
        await self.flush()
        return record

    async def flush(self) -> None:
        """Wait until every produced event has been written (or the socket closed)."""
        if self._closed.is_set():
            return
        join = asyncio.ensure_future(self._queue.join())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({join, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            join.cancel()
            closed.cancel()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket from the server side (a normal close handshake).

        Args:
            code: The websocket close code.
            reason: The close reason.
        """
        await self.flush()
        await self._ws.close(code, reason)
        await self.wait_closed()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        transport = self._ws.transport
        if transport is not None:
            transport.abort()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the session has fully shut down.

        Args:
            timeout: Seconds to wait before raising ``TimeoutError``.
        """
        await asyncio.wait_for(self._closed.wait(), timeout)

    # -- lifecycle (called by the emulator) -------------------------------------

    def _open(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"emulator-writer-{self.id}")
        self._emit({"type": "session.created", "session": copy.deepcopy(self.config)})

    async def _run(self) -> None:
        try:
            async for message in self._ws:
                try:
                    self._on_message(message)
                except Exception as exc:
                    # A bug in the emulator: report it, keep the session going.
                    logger.exception(
                        f"Realtime emulator {self.id}: failed to handle a client event"
                    )
                    self._emulator.internal_errors.append(exc)
                    self._send_error(
                        "The server had an error while processing your request.",
                        None,
                        error_type="server_error",
                    )
        except ConnectionClosed:
            pass

    async def _shutdown(self) -> None:
        if self.closed_at is None:
            self.closed_at = self._loop.time()
        for response in list(self._running.values()):
            response.status = "cancelled"
            response.status_reason = "disconnected"
            response.done_at = self._loop.time()
        self._active = None
        self._running.clear()
        tasks = [*self._response_tasks.values(), *self._tasks]
        self._response_tasks.clear()
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        self._queue.put_nowait(None)
        if self._writer is not None:
            tasks.append(self._writer)
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        self._closed.set()

    async def _write_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            try:
                if entry is None:
                    return
                text, record = entry
                try:
                    await self._ws.send(text)
                except ConnectionClosed:
                    return
                record.sent_at = self._loop.time()
            finally:
                self._queue.task_done()

    def _spawn(self, coro: Awaitable, name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(
                f"Realtime emulator task {task.get_name()} failed"
            )

    # -- sending ----------------------------------------------------------------

    def _emit(self, event: dict) -> ServerEvent:
        if "event_id" not in event:
            event = {"event_id": _new_id("event"), **event}
        record = ServerEvent(event, queued_at=self._loop.time())
        problem = validate_server_event(event)
        if problem is not None:
            logger.error(f"Realtime emulator produced an invalid {event.get('type')}: {problem}")
            self._emulator.server_event_errors.append(ServerEventError(event=event, reason=problem))
        if self._closed.is_set() or self.closed_at is not None:
            logger.debug(f"Realtime emulator {self.id}: dropping {event.get('type')} (closed)")
            return record
        self.sent_events.append(record)
        self._queue.put_nowait((json.dumps(event), record))
        return record

    def _send_error(
        self,
        message: str,
        code: str | None,
        *,
        param: str | None = None,
        event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> ServerEvent:
        logger.debug(f"Realtime emulator {self.id}: error {code}: {message}")
        return self._emit(
            {
                "type": "error",
                "error": {
                    "type": error_type,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": event_id,
                },
            }
        )

    # -- receiving --------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        now = self._loop.time()
        if isinstance(message, bytes):
            record = ClientEvent({}, raw=repr(message[:64]), received_at=now)
            self.client_events.append(record)
            self._reject(
                record, _Problem("Binary frames are not supported.", "invalid_json"), message
            )
            return
        try:
            data = json.loads(message)
        except ValueError as exc:
            record = ClientEvent({}, raw=message, received_at=now)
            self.client_events.append(record)
            self._reject(record, _Problem(f"Invalid JSON: {exc}.", "invalid_json"), message)
            return
        record = ClientEvent(data if isinstance(data, dict) else {}, raw=message, received_at=now)
        self.client_events.append(record)
        if not isinstance(data, dict):
            problem = _Problem(
                "Invalid type for 'event': expected an object, "
                f"but got {_json_kind(data)} instead.",
                "invalid_type",
            )
            self._reject(record, problem, data)
            return
        model, problem = _validate_client(data, message)
        if problem is not None:
            self._reject(record, problem, data)
            return
        handler = getattr(self, "_on_" + data["type"].replace(".", "_"))
        handler(data, model)

    def _reject(self, record: ClientEvent, problem: _Problem, event: Any) -> None:
        record.error = problem.message
        self._emulator.validation_errors.append(
            ClientEventError(
                event=event,
                reason=problem.message,
                code=problem.code,
                param=problem.param,
                session_id=self.id,
            )
        )
        logger.debug(f"Realtime emulator {self.id}: invalid client event: {problem.message}")
        event_id = record.get("event_id")
        self._send_error(
            problem.message,
            problem.code,
            param=problem.param,
            event_id=event_id if isinstance(event_id, str) else None,
        )

    @staticmethod
    def _event_id(data: dict) -> str | None:
        return data.get("event_id")

    # -- session.update ---------------------------------------------------------

    def _on_session_update(self, data: dict, model: Any) -> None:
        update = data["session"]
        event_id = self._event_id(data)

        def fail(message: str, code: str, param: str) -> None:
            self._send_error(message, code, param=param, event_id=event_id)

        if update.get("type") != "realtime":
            fail(
                "Cannot update a realtime session to a transcription session.",
                "invalid_value",
                "session.type",
            )
            return
        if "model" in update and update["model"] != self.config.get("model"):
            # The model is fixed by the connection URL; keep it (and say so in the log).
            logger.debug(
                f"Realtime emulator {self.id}: ignoring session.model {update['model']!r}, "
                f"the session uses {self.config.get('model')!r}"
            )
            update = {k: v for k, v in update.items() if k != "model"}
        modalities = update.get("output_modalities")
        if modalities is not None and sorted(set(modalities)) not in (["audio"], ["text"]):
            fail(
                "Invalid value for 'session.output_modalities': "
                "exactly one of 'audio' or 'text' is supported.",
                "invalid_value",
                "session.output_modalities",
            )
            return
        new_voice = ((update.get("audio") or {}).get("output") or {}).get("voice")
        current_voice = self.config["audio"]["output"].get("voice")
        if new_voice is not None and new_voice != current_voice and self._audio_out_started:
            fail(
                "Cannot update a conversation's voice if assistant audio is present.",
                "cannot_update_voice",
                "session.audio.output.voice",
            )
            return

        old_input = self.input_format
        _deep_merge(self.config, update)
        self._normalize_config()
        if self.input_format != old_input:
            # Audio buffered in the old format can't be interpreted any more.
            self._buffer.clear()
            self._byte_tail = b""
            self._pcm_tail = np.zeros(0, dtype=np.int16)
            self._buffer_start_ms = self._vad_pos_ms = self._input_ms
            self._reset_vad()
        if self._turn_detection() is None:
            self._reset_vad()
            self._pcm_tail = np.zeros(0, dtype=np.int16)
            self._vad_pos_ms = self._input_ms
        logger.debug(f"Realtime emulator {self.id}: session.update {json.dumps(update)[:300]}")
        self._emit({"type": "session.updated", "session": copy.deepcopy(self.config)})

    def _normalize_config(self) -> None:
        audio = self.config.setdefault("audio", {})
        for direction in ("input", "output"):
            section = audio.setdefault(direction, {})
            fmt = section.get("format")
            if not isinstance(fmt, dict) or fmt.get("type") not in _FORMAT_RATES:
                section["format"] = {"type": "audio/pcm", "rate": PCM_RATE}
            elif fmt["type"] == "audio/pcm":
                fmt.setdefault("rate", PCM_RATE)
        detection = audio["input"].get("turn_detection")
        if isinstance(detection, dict):
            defaults = (
                _SEMANTIC_VAD_DEFAULTS
                if detection.get("type") == "semantic_vad"
                else _SERVER_VAD_DEFAULTS
            )
            for key, value in defaults.items():
                detection.setdefault(key, value)

    def _turn_detection(self) -> dict | None:
        detection = self.config["audio"]["input"].get("turn_detection")
        return detection if isinstance(detection, dict) else None

    # -- input audio & VAD --------------------------------------------------------

    def _reset_vad(self) -> None:
        self._speaking = False
        self._run_start_ms: float | None = None
        self._run_ms = 0.0
        self._silence_ms = 0.0
        self._speech_item_id: str | None = None
        self._speech_start_ms = 0.0

    def _on_input_audio_buffer_append(self, data: dict, model: Any) -> None:
        try:
            raw = base64.b64decode(data["audio"], validate=True)
        except (binascii.Error, ValueError):
            record = self.client_events[-1]
            self._reject(
                record,
                _Problem(
                    "Invalid 'audio'. Expected base64-encoded audio bytes.",
                    "invalid_value",
                    "audio",
                ),
                data,
            )
            return
        self.input_audio += raw
        self._buffer += raw
        fmt = self.input_format
        if fmt == "audio/pcm":
            raw = self._byte_tail + raw
            usable = len(raw) - (len(raw) & 1)
            raw, self._byte_tail = raw[:usable], raw[usable:]
        samples = decode_audio(raw, fmt)
        rate = _FORMAT_RATES[fmt]
        self._input_ms += len(samples) * 1000 / rate
        if self._turn_detection() is None:
            self._vad_pos_ms = self._input_ms
            return
        samples = np.concatenate([self._pcm_tail, samples])
        window = rate * _VAD_WINDOW_MS // 1000
        count = len(samples) // window
        if count:
            frames = samples[: count * window].astype(np.float64).reshape(count, window)
            levels = np.sqrt(np.mean(frames * frames, axis=1))
            for level in levels:
                start = self._vad_pos_ms
                self._vad_pos_ms = start + _VAD_WINDOW_MS
                self._vad_window(float(level), start, self._vad_pos_ms)
                if self._turn_detection() is None:  # pragma: no cover - defensive
                    break
        self._pcm_tail = samples[count * window :].copy()

    def _vad_threshold(self) -> float:
        detection = self._turn_detection() or {}
        threshold = detection.get("threshold")
        scale = threshold / 0.5 if isinstance(threshold, (int, float)) and threshold > 0 else 1.0
        return self._emulator.vad_threshold * scale

    def _silence_duration_ms(self) -> float:
        detection = self._turn_detection() or {}
        if detection.get("type") == "semantic_vad":
            return _SEMANTIC_SILENCE_MS.get(detection.get("eagerness") or "auto", 500)
        value = detection.get("silence_duration_ms")
        return float(value) if value is not None else 500.0

    def _vad_window(self, level: float, start_ms: float, end_ms: float) -> None:
        voiced = level >= self._vad_threshold()
        if not self._speaking:
            if not voiced:
                self._run_start_ms = None
                self._run_ms = 0.0
                return
            if self._run_start_ms is None:
                self._run_start_ms = start_ms
            self._run_ms += _VAD_WINDOW_MS
            if self._run_ms >= self._emulator.vad_start_ms:
                self._on_speech_started(self._run_start_ms)
            return
        if voiced:
            self._silence_ms = 0.0
            return
        self._silence_ms += _VAD_WINDOW_MS
        if self._silence_ms >= self._silence_duration_ms():
            self._on_speech_stopped(end_ms)

    def _on_speech_started(self, onset_ms: float) -> None:
        detection = self._turn_detection() or {}
        padding = detection.get("prefix_padding_ms")
        padding = 300 if padding is None else padding
        self._speaking = True
        self._silence_ms = 0.0
        self._speech_item_id = _new_id("item")
        self._speech_start_ms = max(self._buffer_start_ms, onset_ms - padding)
        logger.debug(f"Realtime emulator {self.id}: speech started at {onset_ms:.0f} ms")
        self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": int(round(self._speech_start_ms)),
                "item_id": self._speech_item_id,
            }
        )
        if detection.get("interrupt_response", True) and self._active is not None:
            self._cancel_response(self._active, "turn_detected")

    def _on_speech_stopped(self, end_ms: float) -> None:
        item_id = self._speech_item_id or _new_id("item")
        start_ms = self._speech_start_ms
        logger.debug(f"Realtime emulator {self.id}: speech stopped at {end_ms:.0f} ms")
        self._reset_vad()
        self._emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": int(round(end_ms)),
                "item_id": item_id,
            }
        )
        begin = self._buffer_offset(start_ms)
        cut = self._buffer_offset(end_ms)
        audio = bytes(self._buffer[begin:cut])
        del self._buffer[:cut]
        self._buffer_start_ms = end_ms
        self._commit(item_id, audio, end_ms - start_ms)
        detection = self._turn_detection() or {}
        if detection.get("create_response", True):
            if self._active is not None:
                logger.debug(
                    f"Realtime emulator {self.id}: not responding, {self._active.id} still active"
                )
            else:
                self._start_response("vad", {})

    def _buffer_offset(self, ms: float) -> int:
        fmt = self.input_format
        offset = int(round((ms - self._buffer_start_ms) * _bytes_per_ms(fmt)))
        offset -= offset % _FORMAT_SAMPLE_BYTES[fmt]
        return max(0, min(len(self._buffer), offset))

    def _commit(self, item_id: str, audio: bytes, audio_ms: float) -> None:
        previous = self.items[-1]["id"] if self.items else None
        self._emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        item = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.items.append(item)
        self._item_meta[item_id] = _ItemMeta(
            audio=audio, audio_format=self.input_format, audio_ms=audio_ms
        )
        for kind in ("conversation.item.added", "conversation.item.done"):
            self._emit({"type": kind, "item": copy.deepcopy(item), "previous_item_id": previous})
        if self.config["audio"]["input"].get("transcription") is not None:
            delay = self._emulator.transcription_delay_ms
            if delay > 0:
                self._spawn(self._transcribe_later(item_id, audio_ms, delay), "emulator-transcribe")
            else:
                self._transcribe(item_id, audio_ms)

    async def _transcribe_later(self, item_id: str, audio_ms: float, delay_ms: float) -> None:
        await asyncio.sleep(delay_ms / 1000)
        self._transcribe(item_id, audio_ms)

    def _transcribe(self, item_id: str, audio_ms: float) -> None:
        text = self._emulator._next_transcript(audio_ms)
        item = self.item(item_id)
        if item is not None:
            item["content"][0]["transcript"] = text
        audio_tokens = int(audio_ms) * 10 // 1000
        output_tokens = _text_tokens(text)
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": text,
            }
        )
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
                "usage": {
                    "type": "tokens",
                    "input_tokens": audio_tokens,
                    "output_tokens": output_tokens,
                    "total_tokens": audio_tokens + output_tokens,
                    "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
                },
            }
        )

    def _on_input_audio_buffer_commit(self, data: dict, model: Any) -> None:
        buffered_ms = len(self._buffer) / _bytes_per_ms(self.input_format)
        if buffered_ms < 100:
            self._send_error(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
                event_id=self._event_id(data),
            )
            return
        item_id = (
            self._speech_item_id if self._speaking and self._speech_item_id else _new_id("item")
        )
        audio = bytes(self._buffer)
        self._buffer.clear()
        self._buffer_start_ms = self._input_ms
        self._reset_vad()
        self._commit(item_id, audio, buffered_ms)

    def _on_input_audio_buffer_clear(self, data: dict, model: Any) -> None:
        self._buffer.clear()
        self._buffer_start_ms = self._input_ms
        self._reset_vad()
        self._emit({"type": "input_audio_buffer.cleared"})

    def _on_output_audio_buffer_clear(self, data: dict, model: Any) -> None:
        logger.debug(f"Realtime emulator {self.id}: output_audio_buffer.clear ignored (websocket)")

    # -- conversation items ---------------------------------------------------------

    def _on_conversation_item_create(self, data: dict, model: Any) -> None:
        item = copy.deepcopy(data["item"])
        event_id = self._event_id(data)
        item_id = item.get("id") or _new_id("item")
        if self.item(item_id) is not None:
            self._send_error(
                f"Item with id '{item_id}' already exists.",
                "invalid_value",
                param="item.id",
                event_id=event_id,
            )
            return
        previous_id = data.get("previous_item_id")
        if previous_id is None:
            index = len(self.items)
        elif previous_id == "root":
            index = 0
        else:
            match = [i for i, it in enumerate(self.items) if it.get("id") == previous_id]
            if not match:
                self._send_error(
                    f"Previous item with item_id not found: {previous_id}",
                    "invalid_value",
                    param="previous_item_id",
                    event_id=event_id,
                )
                return
            index = match[0] + 1
        if item.get("type") == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in self._calls:
                self._send_error(
                    f"No function call found with call_id '{call_id}'.",
                    "invalid_value",
                    param="item.call_id",
                    event_id=event_id,
                )
                return
        item["id"] = item_id
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        meta = _ItemMeta()
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "input_audio" and part.get("audio"):
                    try:
                        audio = base64.b64decode(part["audio"], validate=True)
                    except (binascii.Error, ValueError):
                        self._send_error(
                            "Invalid 'item.content.audio'. Expected base64-encoded audio bytes.",
                            "invalid_value",
                            param="item.content.audio",
                            event_id=event_id,
                        )
                        return
                    meta.audio += audio
                    meta.audio_format = self.input_format
                    meta.audio_ms += len(audio) / _bytes_per_ms(self.input_format)
                    del part["audio"]
                    part.setdefault("transcript", None)
        self.items.insert(index, item)
        self._item_meta[item_id] = meta
        if item.get("type") == "function_call" and item.get("call_id"):
            self._calls[item["call_id"]] = item_id
        if item.get("type") == "function_call_output":
            self.function_outputs.append(
                FunctionOutput(
                    call_id=item["call_id"],
                    output=item.get("output", ""),
                    item_id=item_id,
                    at=self._loop.time(),
                )
            )
        previous = self.items[index - 1]["id"] if index > 0 else None
        for kind in ("conversation.item.added", "conversation.item.done"):
            self._emit({"type": kind, "item": copy.deepcopy(item), "previous_item_id": previous})

    def _on_conversation_item_delete(self, data: dict, model: Any) -> None:
        item_id = data["item_id"]
        item = self.item(item_id)
        if item is None:
            self._send_error(
                f"Item with item_id not found: {item_id}",
                "item_delete_invalid_item_id",
                param="item_id",
                event_id=self._event_id(data),
            )
            return
        self.items.remove(item)
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    def _on_conversation_item_retrieve(self, data: dict, model: Any) -> None:
        item_id = data["item_id"]
        item = self.item(item_id)
        if item is None:
            self._send_error(
                f"Item with item_id not found: {item_id}",
                "item_retrieve_invalid_item_id",
                param="item_id",
                event_id=self._event_id(data),
            )
            return
        item = copy.deepcopy(item)
        meta = self._item_meta.get(item_id)
        if meta is not None and meta.audio:
            for part in item.get("content") or []:
                if part.get("type") in ("input_audio", "output_audio"):
                    part["audio"] = base64.b64encode(meta.audio).decode()
                    break
        self._emit({"type": "conversation.item.retrieved", "item": item})

    def _on_conversation_item_truncate(self, data: dict, model: Any) -> None:
        item_id = data["item_id"]
        content_index = data["content_index"]
        audio_end_ms = data["audio_end_ms"]
        event_id = self._event_id(data)
        item = self.item(item_id)
        meta = self._item_meta.get(item_id)
        record = Truncation(
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=audio_end_ms,
            accepted=False,
            at=self._loop.time(),
        )
        self.truncations.append(record)

        def fail(message: str, code: str, param: str) -> None:
            record.error = message
            self._send_error(message, code, param=param, event_id=event_id)

        if item is None or meta is None:
            fail(
                f"Item with item_id not found: {item_id}",
                "item_truncate_invalid_item_id",
                "item_id",
            )
            return
        content = item.get("content") or []
        if (
            item.get("type") != "message"
            or item.get("role") != "assistant"
            or not any(p.get("type") == "output_audio" for p in content)
        ):
            fail("Only assistant messages with audio can be truncated.", "invalid_value", "item_id")
            return
        if (
            not 0 <= content_index < len(content)
            or content[content_index].get("type") != "output_audio"
        ):
            fail(
                f"Invalid content_index {content_index}: no audio content at that index.",
                "invalid_value",
                "content_index",
            )
            return
        record.audio_sent_ms = meta.audio_ms
        if audio_end_ms < 0:
            fail("audio_end_ms must not be negative.", "invalid_value", "audio_end_ms")
            return
        if audio_end_ms > meta.audio_ms:
            fail(
                f"Audio content of {meta.audio_ms:.0f}ms is already shorter than {audio_end_ms}ms",
                "invalid_value",
                "audio_end_ms",
            )
            return
        ratio = audio_end_ms / meta.audio_ms if meta.audio_ms else 1.0
        part = content[content_index]
        part["transcript"] = _truncate_text(part.get("transcript") or "", ratio)
        if meta.audio_format:
            keep = int(audio_end_ms * _bytes_per_ms(meta.audio_format))
            keep -= keep % _FORMAT_SAMPLE_BYTES[meta.audio_format]
            meta.audio = meta.audio[:keep]
        meta.audio_ms = float(audio_end_ms)
        record.accepted = True
        logger.debug(f"Realtime emulator {self.id}: truncated {item_id} at {audio_end_ms} ms")
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )

    # -- responses --------------------------------------------------------------------

    def _on_response_create(self, data: dict, model: Any) -> None:
        params = data.get("response") or {}
        conversation = params.get("conversation") or "auto"
        if conversation != "none" and self._active is not None:
            self._send_error(
                "Conversation already has an active response in progress: "
                f"{self._active.id}. Wait until the response is finished "
                "before creating a new one.",
                "conversation_already_has_active_response",
                event_id=self._event_id(data),
            )
            return
        self._start_response("response.create", params)

    def _on_response_cancel(self, data: dict, model: Any) -> None:
        response_id = data.get("response_id")
        target = self._running.get(response_id) if response_id else self._active
        if target is None:
            self._send_error(
                "Cancellation failed: no active response found",
                "response_cancel_not_active",
                event_id=self._event_id(data),
            )
            return
        self._cancel_response(target, "client_cancelled")

    def _start_response(self, trigger: str, params: dict) -> EmulatedResponse:
        conversation = "none" if params.get("conversation") == "none" else "auto"
        audio_params = (params.get("audio") or {}).get("output") or {}
        output_format = _format_type(
            audio_params.get("format") or self.config["audio"]["output"]["format"]
        )
        modalities = params.get("output_modalities") or self.config.get("output_modalities")
        instructions = params.get("instructions")
        if instructions is None:
            instructions = self.config.get("instructions") or ""
        response = EmulatedResponse(
            id=_new_id("resp"),
            trigger=trigger,
            conversation=conversation,
            output_format=output_format,
            instructions=instructions,
            params=copy.deepcopy(params),
            kind="text" if modalities == ["text"] else "audio",
            triggered_at=self._loop.time(),
        )
        self.responses.append(response)
        self._running[response.id] = response
        self._response_stage[response.id] = set()
        if conversation == "auto":
            self._active = response
        # Snapshot what the model "sees" for input token usage.
        context = params.get("input") if params.get("input") is not None else self.items
        audio_ms = sum(
            self._item_meta[i["id"]].audio_ms
            for i in context
            if i.get("id") in self._item_meta and i.get("role") == "user"
        )
        text_tokens = _text_tokens(instructions) + sum(
            _text_tokens(text) for i in context for text in _item_texts(i)
        )
        self._response_input[response.id] = (int(audio_ms) * 10 // 1000, text_tokens)
        reply = self._emulator._next_reply(self, trigger)
        logger.debug(f"Realtime emulator {self.id}: response {response.id} ({trigger})")
        task = asyncio.ensure_future(self._run_response(response, reply))
        task.set_name(f"emulator-{response.id}")
        self._response_tasks[response.id] = task
        task.add_done_callback(lambda t, rid=response.id: self._response_task_done(rid, t))
        return response

    def _response_task_done(self, response_id: str, task: asyncio.Task) -> None:
        self._response_tasks.pop(response_id, None)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(
                f"Realtime emulator response {response_id} failed"
            )

    def _response_object(self, response: EmulatedResponse, output: list[dict]) -> dict:
        status_details = None
        if response.status == "cancelled":
            status_details = {"type": "cancelled", "reason": response.status_reason}
        elif response.status == "completed":
            status_details = None
        voice = self.config["audio"]["output"].get("voice")
        voice = ((response.params.get("audio") or {}).get("output") or {}).get("voice", voice)
        fmt = {"type": response.output_format}
        if response.output_format == "audio/pcm":
            fmt["rate"] = PCM_RATE
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": response.status,
            "status_details": status_details,
            "output": output,
            "conversation_id": self._conversation_id if response.conversation == "auto" else None,
            "output_modalities": ["text"] if response.kind == "text" else ["audio"],
            "max_output_tokens": response.params.get(
                "max_output_tokens", self.config.get("max_output_tokens", "inf")
            ),
            "audio": {
                "output": {"format": fmt, "voice": voice if isinstance(voice, str) else None}
            },
            "usage": response.usage,
            "metadata": response.params.get("metadata"),
        }

    async def _run_response(
        self, response: EmulatedResponse, reply: "Reply | Awaitable[Reply | None] | None"
    ) -> None:
        if inspect.isawaitable(reply):
            reply = await reply
        if reply is None:
            reply = self._emulator.default_reply
        response.reply = reply
        if reply.function_call is not None:
            response.kind = "function_call"
        delay = reply.ttfb_ms if reply.ttfb_ms is not None else self._emulator.ttfb_ms
        if delay and delay > 0:
            await asyncio.sleep(delay / 1000)
        if not response.active:
            return
        self._emit_created(response)
        if response.kind == "function_call":
            self._play_function_call(response, reply)
        elif response.kind == "text":
            await self._play_text(response, reply)
        else:
            await self._play_audio(response, reply)
        if response.active:
            self._finish(response, "completed", None)

    def _emit_created(self, response: EmulatedResponse) -> None:
        stage = self._response_stage[response.id]
        if "created" in stage:
            return
        stage.add("created")
        response.created_at = self._loop.time()
        self._emit({"type": "response.created", "response": self._response_object(response, [])})

    def _assistant_item(self, response: EmulatedResponse) -> dict:
        return {
            "id": response.item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }

    def _add_output_item(self, response: EmulatedResponse, item: dict) -> None:
        self._response_stage[response.id].add("item")
        self._response_items[response.id] = item
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": 0,
                "item": copy.deepcopy(item),
            }
        )
        if response.conversation == "auto":
            previous = self.items[-1]["id"] if self.items else None
            self.items.append(item)
            self._emit(
                {
                    "type": "conversation.item.added",
                    "item": copy.deepcopy(item),
                    "previous_item_id": previous,
                }
            )
        self._item_meta[item["id"]] = _ItemMeta(
            audio_format=response.output_format if response.kind == "audio" else None
        )

    def _content_event(self, response: EmulatedResponse, event_type: str, **fields: Any) -> None:
        self._emit(
            {
                "type": event_type,
                "response_id": response.id,
                "item_id": response.item_id,
                "output_index": 0,
                "content_index": 0,
                **fields,
            }
        )

    def _begin_message(self, response: EmulatedResponse) -> dict:
        response.item_id = _new_id("item")
        item = self._assistant_item(response)
        self._add_output_item(response, item)
        kind = "audio" if response.kind == "audio" else "text"
        part = {"type": kind, "transcript": ""} if kind == "audio" else {"type": "text", "text": ""}
        item["content"] = [
            {"type": "output_audio", "transcript": ""}
            if kind == "audio"
            else {"type": "output_text", "text": ""}
        ]
        self._response_stage[response.id].add("part")
        self._content_event(response, "response.content_part.added", part=part)
        return item

    async def _play_audio(self, response: EmulatedResponse, reply: Reply) -> None:
        ulaw = (
            reply.audio
            if reply.audio is not None
            else synthesize_speech(reply.text, reply.duration_ms)
        )
        audio = encode_ulaw_as(ulaw, response.output_format)
        item = self._begin_message(response)
        meta = self._item_meta[response.item_id]  # type: ignore[index]
        self._audio_out_started = True
        chunk_ms = max(1, int(self._emulator.audio_chunk_ms))
        chunk_bytes = chunk_ms * _bytes_per_ms(response.output_format)
        chunks = [audio[i : i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)]
        words = _split_words(reply.text)
        if not chunks and words:
            self._send_transcript(response, item, "".join(words))
        next_at = self._loop.time()
        for index, chunk in enumerate(chunks):
            # Ceiling division: the transcript runs slightly ahead of the audio, as it does live.
            lo = -(-index * len(words) // len(chunks))
            hi = -(-(index + 1) * len(words) // len(chunks))
            if hi > lo:
                self._send_transcript(response, item, "".join(words[lo:hi]))
            record = self._emit(
                {
                    "type": "response.output_audio.delta",
                    "response_id": response.id,
                    "item_id": response.item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(chunk).decode(),
                }
            )
            if response.first_audio_at is None:
                response.first_audio_at = record.queued_at
            response.audio += chunk
            response.deltas.append(AudioDelta(data=bytes(chunk), event=record))
            meta.audio += chunk
            meta.audio_ms = len(meta.audio) / _bytes_per_ms(response.output_format)
            rate = self._emulator.send_rate
            if rate and rate > 0 and not math.isinf(rate):
                next_at += len(chunk) / _bytes_per_ms(response.output_format) / 1000 / rate
                await asyncio.sleep(max(0.0, next_at - self._loop.time()))
            else:
                await asyncio.sleep(0)
            if not response.active:
                return
        meta.full_transcript = reply.text

    def _send_transcript(self, response: EmulatedResponse, item: dict, delta: str) -> None:
        response.transcript += delta
        item["content"][0]["transcript"] = response.transcript
        self._content_event(response, "response.output_audio_transcript.delta", delta=delta)

    async def _play_text(self, response: EmulatedResponse, reply: Reply) -> None:
        item = self._begin_message(response)
        for word in _split_words(reply.text):
            response.transcript += word
            item["content"][0]["text"] = response.transcript
            self._content_event(response, "response.output_text.delta", delta=word)
            await asyncio.sleep(0)
            if not response.active:
                return

    def _play_function_call(self, response: EmulatedResponse, reply: Reply) -> None:
        call = reply.function_call
        assert call is not None
        response.item_id = _new_id("item")
        response.call_id = call.call_id or _new_id("call")
        arguments = json.dumps(call.arguments)
        item = {
            "id": response.item_id,
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "call_id": response.call_id,
            "name": call.name,
            "arguments": "",
        }
        self._add_output_item(response, item)
        self._calls[response.call_id] = response.item_id
        common = {
            "response_id": response.id,
            "item_id": response.item_id,
            "output_index": 0,
            "call_id": response.call_id,
        }
        self._emit({"type": "response.function_call_arguments.delta", **common, "delta": arguments})
        response.transcript = arguments
        item["arguments"] = arguments
        self._emit(
            {
                "type": "response.function_call_arguments.done",
                **common,
                "arguments": arguments,
                "name": call.name,
            }
        )
        logger.debug(f"Realtime emulator {self.id}: function call {call.name}({arguments})")

    def _usage(self, response: EmulatedResponse) -> dict:
        audio_in, text_in = self._response_input.get(response.id, (0, 0))
        audio_out = int(response.audio_ms) * 20 // 1000 if response.kind == "audio" else 0
        text_out = _text_tokens(response.transcript)
        input_tokens = audio_in + text_in
        output_tokens = audio_out + text_out
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    def _finish(self, response: EmulatedResponse, status: str, reason: str | None) -> None:
        """Close the response's open parts, then send ``response.done``."""
        response.status = status
        response.status_reason = reason
        stage = self._response_stage.get(response.id, set())
        self._emit_created(response)
        item = self._response_items.get(response.id)
        item_status = "completed" if status == "completed" else "incomplete"
        output: list[dict] = []
        if item is not None:
            if "part" in stage:
                if response.kind == "audio":
                    self._content_event(response, "response.output_audio.done")
                    self._content_event(
                        response,
                        "response.output_audio_transcript.done",
                        transcript=response.transcript,
                    )
                    part = {"type": "audio", "transcript": response.transcript}
                else:
                    self._content_event(
                        response, "response.output_text.done", text=response.transcript
                    )
                    part = {"type": "text", "text": response.transcript}
                self._content_event(response, "response.content_part.done", part=part)
            item["status"] = item_status
            self._emit(
                {
                    "type": "response.output_item.done",
                    "response_id": response.id,
                    "output_index": 0,
                    "item": copy.deepcopy(item),
                }
            )
            index = next((i for i, it in enumerate(self.items) if it is item), None)
            if index is not None:
                previous = self.items[index - 1]["id"] if index > 0 else None
                self._emit(
                    {
                        "type": "conversation.item.done",
                        "item": copy.deepcopy(item),
                        "previous_item_id": previous,
                    }
                )
            output = [copy.deepcopy(item)]
        response.usage = self._usage(response)
        response.done_at = self._loop.time()
        self._running.pop(response.id, None)
        if self._active is response:
            self._active = None
        self._emit({"type": "response.done", "response": self._response_object(response, output)})
        logger.debug(
            f"Realtime emulator {self.id}: response {response.id} {status}"
            + (f" ({reason})" if reason else "")
        )
        if self._emulator.send_rate_limits:
            self._emit(
                {
                    "type": "rate_limits.updated",
                    "rate_limits": [
                        {
                            "name": "requests",
                            "limit": 5000,
                            "remaining": 4999,
                            "reset_seconds": 0.012,
                        },
                        {
                            "name": "tokens",
                            "limit": 2_000_000,
                            "remaining": 2_000_000 - response.usage["total_tokens"],
                            "reset_seconds": 0.1,
                        },
                    ],
                }
            )

    def _cancel_response(self, response: EmulatedResponse, reason: str) -> None:
        if not response.active:
            return
        task = self._response_tasks.get(response.id)
        self._finish(response, "cancelled", reason)
        if task is not None and task is not asyncio.current_task():
            task.cancel()


# ---------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------


class RealtimeEmulator:
    """A local websocket server speaking the OpenAI Realtime API (GA protocol).

    Replies and input transcripts are scripted. ``replies`` (a list) and
    ``transcripts`` are consumed in order across all sessions; both lists can be
    extended at any time through the ``replies`` and ``transcripts`` attributes.

    Attributes:
        sessions: One ``EmulatedSession`` per accepted websocket, in connection order.
        validation_errors: Every invalid client event, across sessions.
        server_event_errors: Every server event the emulator produced that failed
            ``RealtimeServerEvent`` validation (should always stay empty).
        internal_errors: Exceptions raised by the emulator itself while handling
            client events (should always stay empty).
        rejected_handshakes: Every refused handshake (auth, unknown path, injected faults).
        handshake_attempts: How many websocket handshakes were attempted.
        ttfb_ms, send_rate, audio_chunk_ms, vad_threshold: As passed to the
            constructor; may be changed at any time and apply to the next response
            (or the next audio window, for ``vad_threshold``).

    Example::

        emulator = RealtimeEmulator(
            replies=[
                Reply("Hi, this is the bot."),
                Reply(function_call=FunctionCall("hang_up", {})),
            ],
            transcripts=["Hello?"],
        )
        await emulator.start()
        ...  # connect a client to emulator.url + "?model=gpt-realtime"
        await emulator.wait_for(lambda: len(emulator.sessions[0].responses) == 2)
        await emulator.stop()
    """

    def __init__(
        self,
        *,
        replies: ReplySource | None = None,
        transcripts: list[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ttfb_ms: float = 0,
        send_rate: float = 4.0,
        audio_chunk_ms: int = 100,
        vad_threshold: int = 500,
        vad_start_ms: int = 60,
        api_key: str | None = None,
        voice: str = "marin",
        instructions: str = DEFAULT_INSTRUCTIONS,
        default_reply: Reply | None = None,
        transcription_delay_ms: float = 0,
        send_rate_limits: bool = True,
        max_message_size: int = 16 * 2**20,
    ) -> None:
        """Initialize the emulator (call ``start()`` or use ``async with`` to serve).

        Args:
            replies: Scripted responses: a list consumed in order, or a callable
                ``(session, trigger) -> Reply | None`` (it may also return an awaitable)
                where trigger is ``"response.create"`` or ``"vad"``. When the list is
                exhausted or the callable returns None, ``default_reply`` is used.
            transcripts: What the caller says, in order, reported as input audio
                transcriptions (when the session enables transcription). When
                exhausted, ``"(caller speech, N ms)"``.
            host: Interface to bind.
            port: Port to bind; 0 picks a free one.
            ttfb_ms: Delay between a response's trigger and its first event
                (``response.created``). Settable at runtime.
            send_rate: Audio is streamed at this multiple of real time; 0 or ``inf``
                sends as fast as possible. Settable at runtime.
            audio_chunk_ms: Milliseconds of audio per ``response.output_audio.delta``.
            vad_threshold: RMS level (int16 scale) above which a 20 ms window counts as
                speech, at the session's default ``threshold`` of 0.5 (the level scales
                with the session's ``threshold``).
            vad_start_ms: Milliseconds of continuous speech before ``speech_started``.
            api_key: If set, the bearer token must be exactly this key.
            voice: The default session voice.
            instructions: The default session instructions.
            default_reply: The reply used when no scripted one is left
                (``Reply("I heard you.")``).
            transcription_delay_ms: Delay of input transcription events after the
                commit; 0 sends them right after the user item.
            send_rate_limits: Send ``rate_limits.updated`` after each ``response.done``.
            max_message_size: Largest client message accepted, in bytes.
        """
        self.replies: list[Reply] = []
        self.reply_factory: Callable[..., Any] | None = None
        if callable(replies):
            self.reply_factory = replies
        elif replies is not None:
            self.replies = list(replies)
        self.transcripts: list[str] = list(transcripts or [])
        self.host = host
        self.port = port
        self.ttfb_ms = ttfb_ms
        self.send_rate = send_rate
        self.audio_chunk_ms = audio_chunk_ms
        self.vad_threshold = vad_threshold
        self.vad_start_ms = vad_start_ms
        self.api_key = api_key
        self.voice = voice
        self.instructions = instructions
        self.default_reply = default_reply or Reply("I heard you.")
        self.transcription_delay_ms = transcription_delay_ms
        self.send_rate_limits = send_rate_limits
        self.max_message_size = max_message_size

        self.sessions: list[EmulatedSession] = []
        self.validation_errors: list[ClientEventError] = []
        self.server_event_errors: list[ServerEventError] = []
        self.rejected_handshakes: list[RejectedHandshake] = []
        self.internal_errors: list[BaseException] = []
        self.handshake_attempts = 0

        self._server: Server | None = None
        self._fail_count = 0
        self._fail_status = 500

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The websocket URL to use instead of ``wss://api.openai.com/v1/realtime``.

        The client appends ``?model=...``.
        """
        if self._server is None:
            raise RuntimeError("RealtimeEmulator is not started")
        return f"ws://{self.host}:{self.port}{REALTIME_PATH}"

    @property
    def started(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    async def start(self) -> None:
        """Start listening (resolves ``port`` when it was 0)."""
        if self._server is not None:
            return
        # Build the validators up front so the first event isn't slow.
        _client_adapters()
        _server_adapters()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=self.max_message_size,
            close_timeout=2,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.debug(f"Realtime emulator listening on {self.url}")

    async def stop(self) -> None:
        """Close every session and stop the server; returns when everything has finished."""
        if self._server is None:
            return
        server, self._server = self._server, None
        for session in self.open_sessions:
            try:
                await asyncio.wait_for(session.flush(), 2)
            except TimeoutError:
                logger.debug(f"Realtime emulator: {session.id} did not drain before stop")
        server.close()
        await server.wait_closed()
        for session in self.sessions:
            if not session._closed.is_set():
                await session._shutdown()
        logger.debug("Realtime emulator stopped")

    async def __aenter__(self) -> "RealtimeEmulator":
        """Start the emulator."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop the emulator."""
        await self.stop()

    # -- helpers for tests ---------------------------------------------------------

    @property
    def open_sessions(self) -> list[EmulatedSession]:
        """Sessions whose socket is still open."""
        return [s for s in self.sessions if not s.closed]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,
        *,
        interval: float = 0.005,
        description: str | None = None,
    ) -> None:
        """Poll ``predicate`` until it returns true.

        Args:
            predicate: A zero-argument callable; exceptions count as "not yet".
            timeout: Seconds before giving up.
            interval: Seconds between polls.
            description: Used in the error message (defaults to the predicate's name).

        Raises:
            TimeoutError: If the predicate didn't become true in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: Exception | None = None
        while True:
            try:
                if predicate():
                    return
                last_error = None
            except Exception as exc:  # noqa: BLE001 - "not yet" for the poller
                last_error = exc
            if loop.time() >= deadline:
                what = description or getattr(predicate, "__qualname__", repr(predicate))
                detail = f" (last error: {last_error!r})" if last_error else ""
                raise TimeoutError(
                    f"RealtimeEmulator.wait_for: condition {what} not met "
                    f"within {timeout}s{detail}; "
                    f"{len(self.sessions)} session(s), "
                    f"{len(self.validation_errors)} invalid client event(s)"
                )
            await asyncio.sleep(interval)

    async def wait_for_session(self, index: int = 0, timeout: float = 5.0) -> EmulatedSession:
        """Wait until session number ``index`` (0-based) has connected.

        Args:
            index: Which session, in connection order.
            timeout: Seconds before giving up.

        Returns:
            The session.
        """
        await self.wait_for(
            lambda: len(self.sessions) > index, timeout, description=f"session #{index} connected"
        )
        return self.sessions[index]

    # -- faults ----------------------------------------------------------------------

    def fail_next_connections(self, n: int, status: int = 500) -> None:
        """Refuse the next ``n`` websocket handshakes with HTTP ``status``.

        Args:
            n: How many handshakes to refuse.
            status: The HTTP status to answer with.
        """
        self._fail_count = n
        self._fail_status = status

    async def drop_connections(self) -> None:
        """Abruptly close (TCP abort, no close frame) every open session socket.

        Returns once every dropped session has shut down (``closed_at`` is set).
        """
        dropped = self.open_sessions
        for session in dropped:
            logger.debug(f"Realtime emulator: dropping {session.id}")
            session.abort()
        for session in dropped:
            await session.wait_closed()

    # -- internals ---------------------------------------------------------------------

    def _next_reply(self, session: EmulatedSession, trigger: str) -> Any:
        if self.reply_factory is not None:
            return self.reply_factory(session, trigger)
        if self.replies:
            return self.replies.pop(0)
        return None

    def _next_transcript(self, audio_ms: float) -> str:
        if self.transcripts:
            return self.transcripts.pop(0)
        return f"(caller speech, {int(round(audio_ms))} ms)"

    def _refuse(
        self, connection: ServerConnection, request: Request, status: int, reason: str, body: dict
    ) -> Response:
        loop = asyncio.get_running_loop()
        self.rejected_handshakes.append(
            RejectedHandshake(status=status, reason=reason, path=request.path, at=loop.time())
        )
        logger.debug(f"Realtime emulator: refusing handshake with {status} ({reason})")
        response = connection.respond(status, json.dumps(body) + "\n")
        response.headers["Content-Type"] = "application/json"
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshake_attempts += 1
        path = urlsplit(request.path).path
        if path != REALTIME_PATH:
            return self._refuse(
                connection,
                request,
                404,
                "unknown path",
                {"error": {"type": "invalid_request_error", "message": f"Invalid URL ({path})"}},
            )
        if self._fail_count > 0:
            self._fail_count -= 1
            return self._refuse(
                connection,
                request,
                self._fail_status,
                "injected fault",
                {"error": {"type": "server_error", "message": "The server had an error."}},
            )
        authorization = request.headers.get("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self._refuse(
                connection,
                request,
                401,
                "missing bearer token",
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": None,
                        "message": "You didn't provide an API key. You need to provide your API "
                        "key in an Authorization header using Bearer auth.",
                    }
                },
            )
        if self.api_key is not None and token != self.api_key:
            return self._refuse(
                connection,
                request,
                401,
                "wrong api key",
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                        "message": "Incorrect API key provided.",
                    }
                },
            )
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        session = EmulatedSession(self, websocket)
        self.sessions.append(session)
        logger.debug(f"Realtime emulator: {session.id} connected (model {session.model})")
        try:
            session._open()
            await session._run()
        except Exception as exc:
            logger.exception(f"Realtime emulator: {session.id} failed")
            self.internal_errors.append(exc)
        finally:
            await session._shutdown()
            logger.debug(f"Realtime emulator: {session.id} closed")
