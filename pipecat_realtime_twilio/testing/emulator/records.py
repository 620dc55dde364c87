#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What the emulator plays and what it records: scripted replies, events, responses, errors."""

import uuid
from dataclasses import dataclass, field
from typing import Any

from .audio import audio_duration_ms


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
class McpCall:
    """A scripted MCP tool call: the model calls tool ``name`` of the MCP server ``server_label``.

    The emulator does what OpenAI does: it calls the server named in the session's
    tools (its URL, with its headers), asking the client's consent first if the
    server's ``require_approval`` says so. ``Reply.text`` is what the model says after
    a call that answered, with ``{output}`` replaced by the tool's output.

    Parameters:
        server_label: The server's label, as in the session's ``mcp`` tool.
        name: The tool.
        arguments: The arguments, sent as a JSON string.
        on_error: What the model says when the call failed (instead of ``Reply.text``).
        on_decline: What it says when the client declined the call.
    """

    server_label: str
    name: str
    arguments: dict = field(default_factory=dict)
    on_error: str = "Sorry, I couldn't look that up just now."
    on_decline: str = "All right, I won't do that."


@dataclass
class McpListing:
    """An MCP server's tools, as the emulator listed them after a ``session.update``.

    Parameters:
        server_label: The server's label.
        server_url: Its URL.
        item_id: The ``mcp_list_tools`` item's id.
        tools: The tool names offered to the model (after ``allowed_tools``); None
            while listing, or if it failed.
        error: Why listing failed, if it did.
    """

    server_label: str
    server_url: str
    item_id: str
    tools: list[str] | None = None
    error: str | None = None


@dataclass
class McpCallRecord:
    """An MCP tool call the emulated model made.

    Parameters:
        server_label: The server's label.
        name: The tool.
        arguments: The arguments (JSON text).
        item_id: The ``mcp_call`` item's id (or the approval request's, if it never ran).
        approval_request_id: The approval request it waited for, if any.
        approved: The client's answer to that request (None: none asked, or no answer yet).
        output: The tool's output, if it answered.
        error: The ``mcp_call`` item's error, if it failed.
        duration_ms: How long the server took.
    """

    server_label: str
    name: str
    arguments: str
    item_id: str
    approval_request_id: str | None = None
    approved: bool | None = None
    output: str | None = None
    error: dict | None = None
    duration_ms: float = 0.0


@dataclass
class Reply:
    """One scripted model response.

    Parameters:
        text: The spoken words (the audio transcript), or the text in text mode.
        audio: 8 kHz μ-law audio to speak; None synthesizes it from ``text``.
        duration_ms: Length of synthesized audio; defaults to
            ``speech_duration_ms(text)`` (about 60 ms per character, at least 400 ms).
        function_call: If set, the model calls this function: after speaking ``text``
            (a second output item in the same response), or alone if there is no text
            or audio.
        ttfb_ms: Overrides the emulator's ``ttfb_ms`` for this response.
        mcp_call: If set, the model first calls this MCP tool (OpenAI runs it), then
            says ``text`` (``{output}`` replaced by the tool's output); an empty ``text``
            ends the response after the call.
    """

    text: str = ""
    audio: bytes | None = None
    duration_ms: int | None = None
    function_call: FunctionCall | None = None
    ttfb_ms: float | None = None
    mcp_call: McpCall | None = None


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
        reason: Why (``"injected fault"``, ``"missing bearer token"``, ``"retired model"``,
            ``"hang expired"`` ...).
        path: The request path including the query.
        at: ``loop.time()`` of the refusal.
        code: The ``error.code`` of the JSON body (``"invalid_api_key"`` ...), if any.
    """

    status: int
    reason: str
    path: str
    at: float
    code: str | None = None


@dataclass
class HungHandshake:
    """A websocket handshake the emulator left unanswered (``hang_handshakes``).

    Parameters:
        path: The request path including the query.
        started_at: ``loop.time()`` when the request arrived.
        secs: How long it was to hang (None: until the client gave up).
        ended_at: ``loop.time()`` when the hang ended, None while it lasts.
        outcome: How it ended: ``"client gave up"`` (the client closed the connection),
            ``"refused"`` (``secs`` passed, answered 503) or ``"emulator stopped"``.
    """

    path: str
    started_at: float
    secs: float | None = None
    ended_at: float | None = None
    outcome: str | None = None


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
        status: ``"in_progress"``, ``"completed"``, ``"cancelled"``, ``"failed"`` or
            ``"incomplete"`` (the last two injected by ``fail_next_responses``).
        status_reason: For cancelled responses, ``"turn_detected"``, ``"client_cancelled"``
            or ``"disconnected"`` (the socket closed mid-response; no event was sent);
            for incomplete ones ``"max_output_tokens"`` or ``"content_filter"``; for
            failed ones the error code.
        error: For failed responses, the ``status_details.error`` sent.
        stall_secs: The injected stall (``stall_next_responses``) that held the response
            back before its first event (``inf``: until cancelled); None if none.
        kind: ``"audio"``, ``"text"`` or ``"function_call"``.
        item_id: The id of the last output item (None if cancelled before one was added).
        call_id: For function calls, the call id.
        arguments: For function calls, the arguments sent (JSON).
        conversation: ``"auto"`` or ``"none"`` (out-of-band).
        output_format: The audio format of ``audio``.
        instructions: The instructions in effect.
        params: The ``response`` object of the ``response.create`` event, if any.
        audio: Every audio byte sent, in ``output_format``.
        deltas: Every audio delta with its send time.
        transcript: The transcript (or text) actually sent.
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
    error: dict | None = None
    stall_secs: float | None = None
    kind: str = "audio"
    item_id: str | None = None
    call_id: str | None = None
    arguments: str = ""
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
        return audio_duration_ms(len(self.audio), self.output_format)

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
class ItemMeta:
    """What the emulator keeps about a conversation item beyond its protocol shape.

    Parameters:
        audio: The item's audio bytes (input or output format).
        audio_format: The format of ``audio``; None for items without audio.
        audio_ms: How long the audio is (after any truncation).
        full_transcript: For assistant audio, the whole scripted text.
    """

    audio: bytes = b""
    audio_format: str | None = None
    audio_ms: float = 0.0
    full_transcript: str = ""


def new_id(prefix: str) -> str:
    """Return a fresh id such as ``item_...`` with 22 random hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:22]}"
