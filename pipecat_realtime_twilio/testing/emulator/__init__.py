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

The package, by what each module does: ``server`` (``RealtimeEmulator``: the
websocket server, handshake checks, faults), ``session`` (``EmulatedSession``:
one connection's protocol state, items and dispatch), ``input_audio`` (the input
buffer, VAD and user items), ``responses`` (scripted model responses),
``config`` (the default session and ``session.update``), ``validation`` (client
and server events against the ``openai`` models), ``usage`` (token counts),
``records`` (replies and what the emulator records) and ``audio`` (the Realtime
audio formats and synthetic speech).
"""

from ...audio import ALAW_SILENCE, alaw_to_pcm16, pcm16_to_alaw
from .audio import PCM_RATE, decode_audio, encode_ulaw_as, speech_duration_ms, synthesize_speech
from .config import DEFAULT_INSTRUCTIONS, DEFAULT_MODEL
from .records import (
    AudioDelta,
    ClientEvent,
    ClientEventError,
    EmulatedResponse,
    FunctionCall,
    FunctionOutput,
    RejectedHandshake,
    Reply,
    ServerEvent,
    ServerEventError,
    Truncation,
)
from .server import REALTIME_PATH, RealtimeEmulator, ReplySource
from .session import EmulatedSession
from .validation import validate_client_event, validate_server_event

__all__ = [
    "ALAW_SILENCE",
    "AudioDelta",
    "ClientEvent",
    "ClientEventError",
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_MODEL",
    "EmulatedResponse",
    "EmulatedSession",
    "FunctionCall",
    "FunctionOutput",
    "PCM_RATE",
    "REALTIME_PATH",
    "RealtimeEmulator",
    "RejectedHandshake",
    "Reply",
    "ReplySource",
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
