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
  header is required (401 otherwise), refusals carry OpenAI's JSON error body,
  ``session.created`` with a realistic default session whose ``expires_at`` is
  ``session_max_secs`` (an hour) away. With ``azure=True``, Azure OpenAI's v1
  endpoint instead: ``/openai/v1/realtime`` only (the deployment as ``?model=``),
  an ``api-key`` header is required (a Bearer key alone is refused 401), refusals
  carry Azure's ``{"error": {"code", "message"}}`` body.
- Strict validation of every client event against the ``openai`` package's
  ``RealtimeClientEvent`` models, plus rejection of unknown fields (the models
  allow extra keys; the real server does not). Invalid events get an ``error``
  event shaped like the real server's and the session carries on.
- ``session.update`` (deep merge, ``session.updated`` with the full session),
  input and output audio in ``audio/pcmu``, ``audio/pcma`` and ``audio/pcm``.
- An energy-based server VAD on the appended input audio: ``speech_started``,
  ``speech_stopped``, ``committed``, the user item, optional input transcription,
  an automatic response, and barge-in (cancelling the response in progress).
  ``semantic_vad`` waits by ``eagerness`` and by how the caller's next scripted
  transcript ends: one ending with ``.``, ``?`` or ``!`` ends the turn after the
  eagerness's short silence (high 200 ms, medium/auto 500 ms, low 1000 ms), any
  other after its longest (high 2 s, medium/auto 4 s, low 8 s); with no scripted
  transcript left the turn counts as finished.
- Scripted responses (``Reply``): audio with transcript, text-only, or function
  calls, streamed with the GA event sequence and paced at ``send_rate`` times
  real time, with deterministic ``usage``.
- MCP tools (``mcp_calls``): a session's ``mcp`` servers are really called (the
  ``mcp`` package, Streamable HTTP, the session's headers): their tools listed after
  ``session.update``, ``allowed_tools`` and ``require_approval`` honoured, and a
  ``Reply(mcp_call=McpCall(...))`` calls a tool with the ``mcp_call`` items and
  ``response.mcp_call*`` events (``session.mcp_listings``, ``session.mcp_calls``).
- ``response.cancel``, ``conversation.item.create/delete/retrieve/truncate``
  (truncation drops the item's transcript, as the server does: no text is kept for
  audio the caller never heard), ``input_audio_buffer.commit/clear``.
- The session cap: ``session_max_secs`` after connecting, an ``error``
  ``session_expired`` ("Your session hit the maximum duration of 60 minutes.")
  and a normal close (1000).
- Faults, each armed on ``RealtimeEmulator`` for the next ``n`` occasions across
  sessions: ``refuse_handshakes`` (HTTP 401/403/404/429/5xx with OpenAI's error
  body; ``fail_next_connections`` is the older name), ``hang_handshakes`` (no
  upgrade response: the client's open timeout ends it), ``fail_next_responses``
  (``response.done`` ``failed`` with ``insufficient_quota``,
  ``rate_limit_exceeded`` or ``server_error``, or ``incomplete`` after half the
  reply), ``stall_next_responses`` (no first byte for a while, or until
  cancelled), ``reject_session_updates`` (an ``error`` with ``param``, nothing
  applied), ``stall_session_updates`` (no answer at all), ``fail_transcriptions``
  (``...input_audio_transcription.failed``),
  and ``retired_models`` (refused at the handshake with 404 ``model_not_found``,
  rejected as ``audio.input.transcription.model``). Also abrupt disconnects
  (``drop_connections``), a configurable time to first byte (``ttfb_ms``),
  pushed ``error`` events and raw messages (``EmulatedSession.send_error``,
  ``send_raw``).

- The Responses API's ``POST /v1/responses`` on the same port (``emulator.http_url``
  is the ``base_url`` of an ``openai`` client; ``emulator.responses_api`` is a
  ``ResponsesApi``): requests checked against ``ResponseCreateParamsNonStreaming``
  (unknown parameters and non-strict "strict" schemas refused with OpenAI's 400),
  a ``Response`` whose output text is JSON matching the request's ``json_schema``
  (deterministic values, or ``responses_api.outputs`` scripted), and faults:
  ``fail_next`` (401, 429 with ``Retry-After``, 5xx) and ``stall_next``.

- GPT-Live on the same server and port: ``emulator.live_url``
  (``ws://HOST:PORT/v1/live/sessions``) speaks the Live protocol, every client event
  checked against ``openai.types.live.ClientEvent`` (invalid ones land in the same
  ``validation_errors``), driven by the same ``replies`` and ``transcripts``; see
  ``live_server`` for the whole behaviour and its knobs. Live sessions are
  ``LiveSession`` objects, in ``sessions`` and in ``live_sessions``.

Every server event the emulator sends is validated against ``RealtimeServerEvent``
(Live ones against ``openai.types.live.ServerEvent``);
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

Not emulated: semantic turn detection itself (``semantic_vad`` is the same energy
VAD, waiting as described above; it reads the script, not the audio),
the transcript of an ``idle_timeout_ms`` turn (the timeout fires: see ``input_audio``),
noise reduction, the real
error bodies' request ids and rate limit headers, and WebRTC/SIP-only events
(``output_audio_buffer.clear`` is accepted and ignored).

Times recorded by the emulator (``received_at``, ``sent_at``, ``closed_at`` ...)
are ``loop.time()`` values, i.e. ``time.monotonic()`` on the default event loop.

The package, by what each module does: ``server`` (``RealtimeEmulator``: the
websocket server, handshake checks, the fault knobs), ``session``
(``EmulatedSession``: one connection's protocol state, items and dispatch),
``input_audio`` (the input buffer, VAD and user items), ``responses`` (scripted
model responses), ``faults`` (what the knobs arm, and OpenAI-shaped error
bodies), ``session_faults`` (the faults played inside a session, the session cap),
``config`` (the default session and ``session.update``), ``validation`` (client
and server events against the ``openai`` models), ``usage`` (token counts),
``records`` (replies and what the emulator records), ``audio`` (the Realtime
audio formats and synthetic speech), ``responses_api`` (``POST /v1/responses``),
``responses_checks`` (its requests checked as the real API checks them),
``mcp_calls`` (a session's MCP servers: listing, calls, approvals), ``mcp_client``
(what OpenAI sends an MCP server) and
``plain_http`` (plain HTTP requests on the websocket port); for GPT-Live,
``live_server`` (the path, handshake and knobs), ``live_session`` (one connection),
``live_control`` (the client's session commands),
``live_input`` (caller audio and turns), ``live_output`` (model turns and the output
stream), ``live_delegation`` (tools), ``live_validation``, ``live_audio``,
``live_records`` and ``live_host``.
"""

from ...audio import ALAW_SILENCE, alaw_to_pcm16, pcm16_to_alaw
from .audio import PCM_RATE, decode_audio, encode_ulaw_as, speech_duration_ms, synthesize_speech
from .config import DEFAULT_INSTRUCTIONS, DEFAULT_MODEL
from .live_records import CallerTurn, LiveContext, LiveDelegation, LiveResponse
from .live_server import LIVE_PATH
from .live_session import LiveSession
from .live_validation import validate_live_client_event, validate_live_server_event
from .records import (
    AudioDelta,
    ClientEvent,
    ClientEventError,
    EmulatedResponse,
    FunctionCall,
    FunctionOutput,
    HungHandshake,
    McpCall,
    McpCallRecord,
    McpListing,
    RejectedHandshake,
    Reply,
    ServerEvent,
    ServerEventError,
    Truncation,
)
from .responses_api import RESPONSES_PATH, ResponsesApi, ResponsesCall
from .server import REALTIME_PATH, RealtimeEmulator, ReplySource
from .session import EmulatedSession
from .validation import validate_client_event, validate_server_event

__all__ = [
    "ALAW_SILENCE",
    "AudioDelta",
    "CallerTurn",
    "ClientEvent",
    "ClientEventError",
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_MODEL",
    "EmulatedResponse",
    "EmulatedSession",
    "FunctionCall",
    "FunctionOutput",
    "HungHandshake",
    "McpCall",
    "McpCallRecord",
    "McpListing",
    "LIVE_PATH",
    "LiveContext",
    "LiveDelegation",
    "LiveResponse",
    "LiveSession",
    "PCM_RATE",
    "REALTIME_PATH",
    "RESPONSES_PATH",
    "RealtimeEmulator",
    "RejectedHandshake",
    "Reply",
    "ReplySource",
    "ResponsesApi",
    "ResponsesCall",
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
    "validate_live_client_event",
    "validate_live_server_event",
    "validate_server_event",
]
