#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Tests for the OpenAI Realtime API emulator, driven by a plain websockets client."""

import asyncio
import base64
import json
import logging
import math

import numpy as np
import pytest
import pytest_asyncio
import websockets
from loguru import logger
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from pipecat_realtime_twilio.audio import (
    BYTES_PER_MS,
    SAMPLE_RATE,
    ULAW_SILENCE,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from pipecat_realtime_twilio.testing.emulator import (
    ALAW_SILENCE,
    FunctionCall,
    RealtimeEmulator,
    Reply,
    alaw_to_pcm16,
    encode_ulaw_as,
    pcm16_to_alaw,
    synthesize_speech,
    validate_client_event,
)

pytestmark = pytest.mark.asyncio

AUTH = {"Authorization": "Bearer sk-test"}
SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
PCMU_SESSION = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}},
        },
    },
}


def tone_pcm(ms: int, rate: int = SAMPLE_RATE, freq: float = 440, amplitude: int = 8000) -> bytes:
    """PCM16 sine tone."""
    t = np.arange(ms * rate // 1000) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def tone_ulaw(ms: int) -> bytes:
    """8 kHz mu-law 440 Hz tone at amplitude 8000."""
    return pcm16_to_ulaw(tone_pcm(ms))


def silence_ulaw(ms: int) -> bytes:
    return bytes([ULAW_SILENCE]) * (ms * BYTES_PER_MS)


def scripted_audio(ms: int) -> bytes:
    """Distinctive mu-law bytes (not a pure tone), so a bit-exact comparison means something."""
    return bytes((i * 7 + (i >> 8)) % 256 for i in range(ms * BYTES_PER_MS))


class Client:
    """A minimal Realtime API client over a websockets connection."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict] = []
        self.rate_limits: list[dict] = []  # rate_limits.updated events, set aside

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps(event))

    async def append(self, audio: bytes, chunk: int = 160) -> None:
        for i in range(0, len(audio), chunk):
            piece = base64.b64encode(audio[i : i + chunk]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": piece})

    async def recv(self, timeout: float = 3.0) -> dict:
        """Receive the next event, setting ``rate_limits.updated`` aside."""
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await self.ws.recv())
                SERVER_EVENT.validate_python(event)  # the client's view: every event parses
                self.received.append(event)
                if event["type"] != "rate_limits.updated":
                    return event
                self.rate_limits.append(event)

    async def recv_until(self, event_type: str, timeout: float = 3.0) -> list[dict]:
        """Receive events up to and including the first of ``event_type``."""
        events = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv(timeout)
                events.append(event)
                if event["type"] == event_type:
                    return events

    async def expect(self, event_type: str) -> dict:
        event = await self.recv()
        assert event["type"] == event_type, event
        return event


@pytest_asyncio.fixture
async def make_emulator(caplog):
    """Start emulators; at teardown stop them and check nothing went wrong inside.

    Every emulator must have produced only valid server events, raised nothing, and
    logged no errors (loguru or the websockets library), whatever the clients did.
    """
    emulators: list[RealtimeEmulator] = []
    loguru_errors: list[str] = []
    sink = logger.add(loguru_errors.append, level="ERROR")

    async def factory(**kwargs) -> RealtimeEmulator:
        emulator = RealtimeEmulator(**kwargs)
        await emulator.start()
        emulators.append(emulator)
        return emulator

    try:
        yield factory
        for emulator in emulators:
            await emulator.stop()
            assert emulator.server_event_errors == []
            assert emulator.internal_errors == []
            for session in emulator.sessions:
                assert session.closed_at is not None
    finally:
        logger.remove(sink)
    assert loguru_errors == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def connect(emulator: RealtimeEmulator, **kwargs) -> Client:
    headers = kwargs.pop("headers", AUTH)
    ws = await websockets.connect(
        emulator.url + "?model=gpt-realtime", additional_headers=headers, **kwargs
    )
    client = Client(ws)
    await client.expect("session.created")
    return client


async def connect_pcmu(emulator: RealtimeEmulator, **session) -> Client:
    client = await connect(emulator)
    update = json.loads(json.dumps(PCMU_SESSION))
    update["session"].update(session)
    await client.send(update)
    await client.expect("session.updated")
    return client


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[dict]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


# ---------------------------------------------------------------------------
# Handshake
# ---------------------------------------------------------------------------


@pytest.mark.call
async def test_handshake_and_default_session(make_emulator):
    emulator = await make_emulator()
    assert emulator.url.startswith("ws://127.0.0.1:") and emulator.url.endswith("/v1/realtime")
    async with websockets.connect(
        emulator.url + "?model=gpt-realtime-mini", additional_headers=AUTH
    ) as ws:
        created = json.loads(await ws.recv())
    assert created["type"] == "session.created"
    assert created["event_id"].startswith("event_")
    session = created["session"]
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime-mini"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["voice"]
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }
    await emulator.wait_for(lambda: emulator.sessions and emulator.sessions[0].closed)
    (emulated,) = emulator.sessions
    assert emulated.model == "gpt-realtime-mini"
    assert emulated.authorization == "Bearer sk-test"
    assert emulated.closed_at >= emulated.opened_at


@pytest.mark.call
async def test_handshake_requires_bearer_token(make_emulator):
    emulator = await make_emulator(api_key="sk-right")
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer sk-wrong"}):
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(emulator.url + "?model=m", additional_headers=headers)
        assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as not_found:
        await websockets.connect(
            emulator.url.replace("/v1/realtime", "/nope"), additional_headers=AUTH
        )
    assert not_found.value.response.status_code == 404
    assert emulator.sessions == []
    assert [r.status for r in emulator.rejected_handshakes] == [401, 401, 401, 404]

    client = await connect(emulator, headers={"Authorization": "Bearer sk-right"})
    await client.ws.close()


@pytest.mark.call
async def test_fail_next_connections(make_emulator):
    emulator = await make_emulator()
    emulator.fail_next_connections(2, status=503)
    for _ in range(2):
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(emulator.url, additional_headers=AUTH)
        assert refused.value.response.status_code == 503
    client = await connect(emulator)
    assert len(emulator.sessions) == 1
    assert [r.reason for r in emulator.rejected_handshakes] == ["injected fault"] * 2
    await client.ws.close()


@pytest.mark.call
async def test_drop_connections_sets_closed_at(make_emulator):
    emulator = await make_emulator()
    client = await connect(emulator)
    session = await emulator.wait_for_session(0)
    assert session.closed_at is None
    await emulator.drop_connections()
    assert session.closed_at is not None
    with pytest.raises(ConnectionClosedError):
        await client.recv()
    # The emulator keeps accepting new connections.
    again = await connect(emulator)
    assert len(emulator.open_sessions) == 1
    await again.ws.close()


@pytest.mark.call
async def test_session_close_and_send_error(make_emulator):
    emulator = await make_emulator()
    client = await connect(emulator)
    session = await emulator.wait_for_session(0)
    await session.send_error("server_error", None, "The server had an error.")
    error = await client.expect("error")
    assert error["error"]["type"] == "server_error"
    assert error["error"]["message"] == "The server had an error."
    await session.close(1011, "bye")
    assert session.closed_at is not None
    with pytest.raises(websockets.ConnectionClosed):
        await client.recv()
    assert client.ws.close_code == 1011


# ---------------------------------------------------------------------------
# Session configuration and validation
# ---------------------------------------------------------------------------


@pytest.mark.call
async def test_session_update_to_pcmu(make_emulator):
    emulator = await make_emulator()
    client = await connect(emulator)
    await client.send(
        {
            **PCMU_SESSION,
            "session": {
                **PCMU_SESSION["session"],
                "instructions": "Be brief.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
                    },
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"},
                },
            },
        }
    )
    updated = await client.expect("session.updated")
    session = updated["session"]
    assert session["instructions"] == "Be brief."
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["voice"] == "cedar"
    detection = session["audio"]["input"]["turn_detection"]
    assert detection["silence_duration_ms"] == 700
    assert detection["prefix_padding_ms"] == 300  # merged, not replaced
    emulated = emulator.sessions[0]
    assert emulated.config == session
    assert (emulated.input_format, emulated.output_format) == ("audio/pcmu", "audio/pcmu")
    await client.ws.close()


@pytest.mark.call
async def test_invalid_client_events_get_errors_and_session_continues(make_emulator):
    emulator = await make_emulator()
    client = await connect(emulator)
    bad_events = [
        ({"type": "session.upgrade", "event_id": "e1"}, "invalid_value", "type"),
        (
            {"type": "input_audio_buffer.append", "event_id": "e2"},
            "missing_required_parameter",
            "audio",
        ),
        (
            {"type": "input_audio_buffer.append", "audio": "", "extra": 1, "event_id": "e3"},
            "unknown_parameter",
            "extra",
        ),
        (
            {
                "type": "session.update",
                "event_id": "e4",
                "session": {"type": "realtime", "audio": {"input": {"formatt": {}}}},
            },
            "unknown_parameter",
            "session.audio.input.formatt",
        ),
        (
            {
                "type": "conversation.item.truncate",
                "event_id": "e5",
                "item_id": "item_x",
                "content_index": 0,
                "audio_end_ms": "100",
            },
            "invalid_type",
            "audio_end_ms",
        ),
        (
            {
                "type": "conversation.item.create",
                "event_id": "e6",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_txt"}]},
            },
            "invalid_value",
            "item.content[0].type",
        ),
        (
            {"type": "input_audio_buffer.append", "audio": "not base64!", "event_id": "e7"},
            "invalid_value",
            "audio",
        ),
    ]
    for event, code, param in bad_events:
        await client.send(event)
        error = await client.expect("error")
        assert error["error"]["type"] == "invalid_request_error"
        assert (error["error"]["code"], error["error"]["param"]) == (code, param), error
        assert error["error"]["event_id"] == event["event_id"]
        assert error["error"]["message"]
    await client.ws.send("{not json")
    error = await client.expect("error")
    assert error["error"]["code"] == "invalid_json"

    assert len(emulator.validation_errors) == len(bad_events) + 1
    assert emulator.validation_errors[0].event == bad_events[0][0]
    assert "extra" in emulator.validation_errors[2].reason
    # The session carries on.
    await client.send(PCMU_SESSION)
    await client.expect("session.updated")
    session = emulator.sessions[0]
    assert len(session.client_events) == len(bad_events) + 2
    assert [e.error is None for e in session.client_events][-2:] == [False, True]
    assert session.input_audio == b""
    await client.ws.close()


async def test_validate_client_event_helper():
    assert validate_client_event(PCMU_SESSION) is None
    assert validate_client_event(json.dumps({"type": "response.create"})) is None
    assert "Unknown parameter: 'response.foo'" in validate_client_event(
        {"type": "response.create", "response": {"foo": 1}}
    )
    assert "Missing required parameter: 'item_id'" in validate_client_event(
        {"type": "conversation.item.delete"}
    )


async def test_audio_codecs():
    codes = bytes(range(256))
    assert pcm16_to_alaw(alaw_to_pcm16(codes)) == codes
    assert pcm16_to_alaw(np.zeros(4, dtype=np.int16).tobytes()) == bytes([ALAW_SILENCE]) * 4
    pcm = np.frombuffer(tone_pcm(100), dtype=np.int16)
    alaw_round = np.frombuffer(alaw_to_pcm16(pcm16_to_alaw(pcm.tobytes())), dtype=np.int16)
    assert np.max(np.abs(alaw_round.astype(int) - pcm)) <= 256
    ulaw = tone_ulaw(100)
    assert encode_ulaw_as(ulaw, "audio/pcmu") == ulaw
    upsampled = np.frombuffer(encode_ulaw_as(ulaw, "audio/pcm"), dtype="<i2")
    assert len(upsampled) == 3 * len(ulaw)
    assert np.array_equal(upsampled[::3], np.frombuffer(ulaw_to_pcm16(ulaw), dtype=np.int16))
    speech = np.frombuffer(ulaw_to_pcm16(synthesize_speech("hello there")), dtype=np.int16)
    assert len(speech) == 660 * BYTES_PER_MS
    windows = speech[: len(speech) // 160 * 160].astype(float).reshape(-1, 160)
    assert np.sqrt(np.mean(windows**2, axis=1)).min() > 500  # energy throughout
    assert synthesize_speech("hello there") == synthesize_speech("hello there")


# ---------------------------------------------------------------------------
# Server VAD and responses
# ---------------------------------------------------------------------------


@pytest.mark.call
async def test_speech_turn_transcription_and_bit_exact_audio(make_emulator):
    reply_audio = scripted_audio(740)
    emulator = await make_emulator(
        replies=[Reply("Hi, thanks for calling.", audio=reply_audio)], transcripts=["Hello?"]
    )
    client = await connect_pcmu(emulator, audio={**PCMU_SESSION["session"]["audio"]})
    await client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
            },
        }
    )
    await client.expect("session.updated")
    caller = silence_ulaw(500) + tone_ulaw(1000) + silence_ulaw(1000)
    await client.append(caller)
    events = await client.recv_until("response.done")

    streamed = {"response.output_audio_transcript.delta", "response.output_audio.delta"}
    first = next(i for i, e in enumerate(events) if e["type"] in streamed)
    last = max(i for i, e in enumerate(events) if e["type"] in streamed)
    assert types(events[:first]) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert set(types(events[first : last + 1])) == streamed
    assert events[first]["type"] == "response.output_audio_transcript.delta"  # text leads
    assert types(events[last + 1 :]) == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    started, stopped, committed, user_added = events[:4]
    assert started["audio_start_ms"] == 500 - 300  # speech onset minus prefix padding
    assert stopped["audio_end_ms"] == 1500 + 500  # end of speech plus silence duration
    user_item_id = started["item_id"]
    assert stopped["item_id"] == committed["item_id"] == user_added["item"]["id"] == user_item_id
    assert user_added["item"]["role"] == "user"
    assert user_added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    transcription = events[6]
    assert transcription["item_id"] == user_item_id
    assert transcription["transcript"] == "Hello?"

    # The response's audio is exactly the scripted audio, in 100 ms chunks.
    assert audio_of(events) == reply_audio
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert [len(base64.b64decode(d["delta"])) for d in deltas] == [800] * 7 + [320]
    transcript = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    assert transcript == "Hi, thanks for calling."
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [
        {"type": "output_audio", "transcript": "Hi, thanks for calling."}
    ]

    session = emulator.sessions[0]
    assert session.input_audio == caller
    assert [i["role"] for i in session.items] == ["user", "assistant"]
    assert session.items[0]["content"][0]["transcript"] == "Hello?"
    (response,) = session.responses
    assert response.trigger == "vad"
    assert response.status == "completed"
    assert response.item_id == session.items[1]["id"]
    assert bytes(response.audio) == reply_audio
    assert len(response.deltas) == 8
    assert all(d.sent_at is not None for d in response.deltas)
    assert response.transcript == "Hi, thanks for calling."
    # Like the real server, the emulator follows response.done with rate_limits.updated.
    async with asyncio.timeout(3):
        rate_limits = json.loads(await client.ws.recv())
    assert rate_limits["type"] == "rate_limits.updated"
    assert {r["name"] for r in rate_limits["rate_limits"]} == {"requests", "tokens"}
    await client.ws.close()


@pytest.mark.call
@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma", "audio/pcm"])
async def test_input_and_output_formats(make_emulator, fmt):
    reply_audio = scripted_audio(300)
    emulator = await make_emulator(replies=[Reply("Okay.", audio=reply_audio)])
    client = await connect(emulator)
    audio_format = {"type": fmt, "rate": 24000} if fmt == "audio/pcm" else {"type": fmt}
    await client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": audio_format}, "output": {"format": audio_format}},
            },
        }
    )
    await client.expect("session.updated")
    if fmt == "audio/pcm":
        speech, quiet = tone_pcm(600, 24000), bytes(2 * 24 * 700)
    elif fmt == "audio/pcma":
        speech, quiet = pcm16_to_alaw(tone_pcm(600)), bytes([ALAW_SILENCE]) * 8 * 700
    else:
        speech, quiet = tone_ulaw(600), silence_ulaw(700)
    await client.append(speech + quiet, chunk=960)
    events = await client.recv_until("response.done")
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (0, 1100)
    assert audio_of(events) == encode_ulaw_as(reply_audio, fmt)
    created = next(e for e in events if e["type"] == "response.created")
    assert created["response"]["audio"]["output"]["format"]["type"] == fmt
    await client.ws.close()


@pytest.mark.call
async def test_barge_in_cancels_the_response(make_emulator):
    emulator = await make_emulator(
        replies=[
            Reply("This is a very long answer that goes on and on.", duration_ms=3000),
            Reply("Sure.", audio=scripted_audio(200)),
        ],
        send_rate=1.0,
    )
    client = await connect_pcmu(emulator)
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.output_audio.delta")
    response_id = events[0]["response"]["id"]
    item_id = events[1]["item"]["id"]

    await client.append(tone_ulaw(200))  # the caller talks over the bot
    events = await client.recv_until("response.done")
    barge_in = types(events).index("input_audio_buffer.speech_started")
    # Audio already on its way may precede speech_started; after it, no more deltas.
    assert set(types(events[:barge_in])) <= {
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
    }
    assert types(events[barge_in + 1 :]) == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    done = events[-1]["response"]
    assert done["id"] == response_id
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["status"] == "incomplete"
    partial = done["output"][0]["content"][0]["transcript"]
    full = "This is a very long answer that goes on and on."
    assert full.startswith(partial) and len(partial) < len(full)
    assert done["usage"]["output_token_details"]["audio_tokens"] < 60  # less than 3 s sent

    # After the cancellation, no more audio for that response; the next turn gets a new reply.
    await client.append(silence_ulaw(600))
    events = await client.recv_until("response.done")
    assert all(
        e.get("response_id") != response_id
        for e in events
        if e["type"] == "response.output_audio.delta"
    )
    assert events[-1]["response"]["status"] == "completed"
    assert audio_of(events) == scripted_audio(200)

    session = emulator.sessions[0]
    first, second = session.responses
    assert (first.status, first.status_reason, first.trigger) == (
        "cancelled",
        "turn_detected",
        "response.create",
    )
    assert first.item_id == item_id
    assert all(d.event.queued_at <= first.done_at for d in first.deltas)
    assert 0 < first.audio_ms < 3000
    assert (second.status, second.trigger) == ("completed", "vad")
    assert session.item(item_id)["status"] == "incomplete"
    await client.ws.close()


@pytest.mark.call
async def test_response_cancel_and_active_response_errors(make_emulator):
    emulator = await make_emulator(replies=[Reply("A long one.", duration_ms=2000)], send_rate=1.0)
    client = await connect_pcmu(emulator)
    await client.send({"type": "response.cancel", "event_id": "c1"})
    error = await client.expect("error")
    assert error["error"]["code"] == "response_cancel_not_active"
    assert error["error"]["event_id"] == "c1"

    await client.send({"type": "response.create"})
    await client.send({"type": "response.create", "event_id": "c2"})
    events = await client.recv_until("error")
    assert events[-1]["error"]["code"] == "conversation_already_has_active_response"
    await client.recv_until("response.output_audio.delta")
    await client.send({"type": "response.cancel"})
    events = await client.recv_until("response.done")
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "client_cancelled"
    (response,) = emulator.sessions[0].responses
    assert response.status == "cancelled"
    assert emulator.sessions[0].active_response is None
    await client.ws.close()


@pytest.mark.call
async def test_truncate(make_emulator):
    emulator = await make_emulator(
        replies=[Reply("one two three four five six seven eight", audio=scripted_audio(1000))]
    )
    client = await connect_pcmu(emulator)
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.done")
    item_id = events[-1]["response"]["output"][0]["id"]

    await client.send(
        {
            "type": "conversation.item.truncate",
            "event_id": "t1",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 1500,
        }
    )
    error = await client.expect("error")
    assert error["error"]["code"] == "invalid_value"
    assert error["error"]["event_id"] == "t1"
    assert "shorter" in error["error"]["message"]

    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 500,
        }
    )
    truncated = await client.expect("conversation.item.truncated")
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 500)

    session = emulator.sessions[0]
    assert [(t.audio_end_ms, t.accepted) for t in session.truncations] == [
        (1500, False),
        (500, True),
    ]
    assert session.truncations[0].audio_sent_ms == 1000
    # Like the real server, truncation drops the transcript: no text for unheard audio.
    assert session.item(item_id)["content"][0]["transcript"] is None
    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = (await client.expect("conversation.item.retrieved"))["item"]
    assert retrieved["content"][0]["transcript"] is None
    # Only the heard half second of audio is left.
    assert len(base64.b64decode(retrieved["content"][0]["audio"])) == 500 * BYTES_PER_MS

    # Truncating a user item is refused.
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    assert (await client.expect("error"))["error"]["param"] == "item_id"
    await client.ws.close()


@pytest.mark.call
async def test_function_call_flow(make_emulator):
    emulator = await make_emulator(
        replies=[
            Reply(function_call=FunctionCall("get_weather", {"city": "Paris"}, call_id="call_1")),
            Reply("It is sunny in Paris.", audio=scripted_audio(200)),
        ]
    )
    client = await connect_pcmu(emulator)
    await client.send(
        {
            **PCMU_SESSION,
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    await client.expect("session.updated")
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Weather in Paris?"}],
            },
        }
    )
    await client.recv_until("conversation.item.done")
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.done")
    assert types(events)[:8] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    added = events[1]["item"]
    assert added["type"] == "function_call" and added["arguments"] == ""
    assert added["status"] == "in_progress"
    args_done = events[4]
    assert args_done["call_id"] == "call_1"
    assert args_done["name"] == "get_weather"
    assert args_done["item_id"] == added["id"]
    assert json.loads(args_done["arguments"]) == {"city": "Paris"}
    assert events[-1]["response"]["output"][0]["arguments"] == args_done["arguments"]

    # An output for an unknown call is refused.
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_x", "output": "{}"},
        }
    )
    assert (await client.expect("error"))["error"]["param"] == "item.call_id"

    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"sky": "clear"}',
            },
        }
    )
    added = await client.expect("conversation.item.added")
    assert added["previous_item_id"] == args_done["item_id"]
    await client.expect("conversation.item.done")
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.done")
    assert audio_of(events) == scripted_audio(200)

    session = emulator.sessions[0]
    assert [(o.call_id, o.output) for o in session.function_outputs] == [
        ("call_1", '{"sky": "clear"}')
    ]
    assert [i["type"] for i in session.items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert [r.kind for r in session.responses] == ["function_call", "audio"]
    await client.ws.close()


@pytest.mark.call
async def test_a_reply_can_speak_then_call_a_function_in_one_response(make_emulator):
    emulator = await make_emulator(
        replies=[
            Reply(
                "Goodbye!",
                audio=scripted_audio(200),
                function_call=FunctionCall("end_call", {}, call_id="call_9"),
            )
        ]
    )
    client = await connect_pcmu(
        emulator,
        audio={
            **PCMU_SESSION["session"]["audio"],
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        },
    )
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.done")
    names = types(events)
    # The message item is finished before the function call item starts.
    assert names.index("response.output_audio.done") < names.index(
        "response.function_call_arguments.done"
    )
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "message"),
        (1, "function_call"),
    ]
    call_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert call_done["output_index"] == 1 and call_done["call_id"] == "call_9"
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert [item["type"] for item in done["output"]] == ["message", "function_call"]
    assert [item["status"] for item in done["output"]] == ["completed", "completed"]
    assert audio_of(events) == scripted_audio(200)
    assert done["usage"]["output_token_details"]["text_tokens"] == 2 + 1  # "Goodbye!", "{}"
    assert emulator.server_event_errors == []
    await client.ws.close()


@pytest.mark.call
async def test_manual_turns_without_vad_and_deterministic_usage(make_emulator):
    emulator = await make_emulator(
        replies=[Reply("abcdefghij", audio=scripted_audio(500))], send_rate_limits=False
    )
    client = await connect_pcmu(
        emulator,
        instructions="Be brief.",
        audio={
            **PCMU_SESSION["session"]["audio"],
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        },
    )
    await client.send({"type": "input_audio_buffer.commit"})
    assert (await client.expect("error"))["error"]["code"] == "input_audio_buffer_commit_empty"
    await client.append(tone_ulaw(300))
    await client.send({"type": "input_audio_buffer.clear"})
    await client.expect("input_audio_buffer.cleared")
    await client.append(tone_ulaw(1000) + silence_ulaw(1000))  # no VAD: nothing happens
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.recv_until("conversation.item.done")
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.done")
    usage = events[-1]["response"]["usage"]
    assert usage == {
        "total_tokens": 20 + 3 + 10 + 3,
        "input_tokens": 20 + 3,
        "output_tokens": 10 + 3,
        "input_token_details": {
            "text_tokens": math.ceil(len("Be brief.") / 4),
            "audio_tokens": 20,  # 2 s of user audio
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": 3, "audio_tokens": 10},  # 0.5 s, 10 chars
    }
    session = emulator.sessions[0]
    assert session.responses[0].usage == usage
    assert len(session.input_audio) == 300 * 8 + 2000 * 8
    await client.ws.close()


@pytest.mark.call
async def test_ttfb_delay_is_observed_and_settable(make_emulator):
    emulator = await make_emulator(ttfb_ms=250)
    client = await connect_pcmu(emulator)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await client.send({"type": "response.create"})
    await client.expect("response.created")
    assert loop.time() - start >= 0.25
    await client.recv_until("response.done")

    emulator.ttfb_ms = 0
    start = loop.time()
    await client.send({"type": "response.create"})
    await client.expect("response.created")
    assert loop.time() - start < 0.2  # well under the old 250 ms
    await client.recv_until("response.done")
    first, second = emulator.sessions[0].responses
    assert first.created_at - first.triggered_at >= 0.25
    assert first.reply.text == "I heard you."  # the default reply
    await client.ws.close()


@pytest.mark.call
async def test_send_rate_paces_audio(make_emulator):
    emulator = await make_emulator(
        replies=[Reply("Pace.", audio=scripted_audio(800))], send_rate=4.0
    )
    client = await connect_pcmu(emulator)
    await client.send({"type": "response.create"})
    await client.recv_until("response.done")
    (response,) = emulator.sessions[0].responses
    elapsed = response.done_at - response.created_at
    assert 0.19 <= elapsed < 1.0  # 800 ms of audio at 4x real time: ~0.2 s


@pytest.mark.call
async def test_text_responses_and_callable_replies(make_emulator):
    calls = []

    def script(session, trigger):
        calls.append((session, trigger))
        return Reply(f"Reply number {len(calls)}.")

    emulator = await make_emulator(replies=script)
    client = await connect_pcmu(emulator)
    await client.send(
        {
            "type": "response.create",
            "response": {"output_modalities": ["text"], "instructions": "Answer in text."},
        }
    )
    events = await client.recv_until("response.done")
    assert "response.output_audio.delta" not in types(events)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Reply number 1."
    assert next(e for e in events if e["type"] == "response.output_text.done")["text"] == text
    assert events[-1]["response"]["output_modalities"] == ["text"]
    assert calls == [(emulator.sessions[0], "response.create")]
    await client.ws.close()


@pytest.mark.call
async def test_conversation_item_create_delete_retrieve(make_emulator):
    emulator = await make_emulator()
    client = await connect_pcmu(emulator)

    def text_item(item_id: str, text: str) -> dict:
        return {
            "type": "message",
            "id": item_id,
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }

    await client.send({"type": "conversation.item.create", "item": text_item("item_a", "A")})
    added = await client.expect("conversation.item.added")
    assert added["previous_item_id"] is None
    await client.expect("conversation.item.done")
    await client.send(
        {
            "type": "conversation.item.create",
            "previous_item_id": "root",
            "item": text_item("item_b", "B"),
        }
    )
    await client.recv_until("conversation.item.done")
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Context."}],
            },
        }
    )
    await client.recv_until("conversation.item.done")
    session = emulator.sessions[0]
    assert [i["id"] for i in session.items][:2] == ["item_b", "item_a"]

    await client.send({"type": "conversation.item.retrieve", "item_id": "item_a"})
    retrieved = await client.expect("conversation.item.retrieved")
    assert retrieved["item"]["content"][0]["text"] == "A"
    await client.send({"type": "conversation.item.delete", "item_id": "item_a"})
    assert (await client.expect("conversation.item.deleted"))["item_id"] == "item_a"
    await client.send({"type": "conversation.item.delete", "item_id": "item_a"})
    assert (await client.expect("error"))["error"]["code"] == "item_delete_invalid_item_id"
    assert [i["id"] for i in session.items][0] == "item_b"
    assert len(session.items) == 2
    await client.ws.close()


@pytest.mark.call
async def test_stop_during_a_response_leaves_nothing_running(make_emulator):
    emulator = await make_emulator(replies=[Reply("Long.", duration_ms=5000)], send_rate=1.0)
    client = await connect_pcmu(emulator)
    await client.send({"type": "response.create"})
    await client.recv_until("response.output_audio.delta")
    await emulator.stop()
    session = emulator.sessions[0]
    assert session.closed_at is not None
    assert session.active_response is None
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert [t for t in others if "emulator" in t.get_name()] == []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await client.recv()


@pytest.mark.call
async def test_client_disconnecting_abruptly_mid_response(make_emulator):
    emulator = await make_emulator(replies=[Reply("Long.", duration_ms=5000)], send_rate=1.0)
    client = await connect_pcmu(emulator)
    await client.send({"type": "response.create"})
    await client.recv_until("response.output_audio.delta")
    client.ws.transport.abort()  # no close frame
    session = emulator.sessions[0]
    await emulator.wait_for(lambda: session.closed, description="session closed")
    (response,) = session.responses
    assert (response.status, response.status_reason) == ("cancelled", "disconnected")
    assert session.active_response is None
    # The emulator still serves new sessions; the fixture checks nothing was logged as an error.
    again = await connect(emulator)
    await again.ws.close()


@pytest.mark.call
async def test_vad_without_create_response(make_emulator):
    emulator = await make_emulator(transcripts=["First.", "Second."])
    client = await connect_pcmu(emulator)
    await client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "model": "gpt-realtime-other",  # ignored: the URL fixes the model
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {
                            "type": "server_vad",
                            "create_response": False,
                            "silence_duration_ms": 200,
                            "prefix_padding_ms": 0,
                        },
                    }
                },
            },
        }
    )
    updated = await client.expect("session.updated")
    assert updated["session"]["model"] == "gpt-realtime"
    for _ in range(2):
        await client.append(tone_ulaw(400) + silence_ulaw(300))
    events = await client.recv_until("conversation.item.input_audio_transcription.completed")
    events += await client.recv_until("conversation.item.input_audio_transcription.completed")
    starts = [e["audio_start_ms"] for e in events if e["type"].endswith("speech_started")]
    stops = [e["audio_end_ms"] for e in events if e["type"].endswith("speech_stopped")]
    assert (starts, stops) == ([0, 700], [600, 1300])
    transcripts = [e["transcript"] for e in events if e["type"].endswith("transcription.completed")]
    assert transcripts == ["First.", "Second."]
    assert "response.created" not in types(events)
    session = emulator.sessions[0]
    assert session.responses == []
    assert [i["content"][0]["transcript"] for i in session.items] == ["First.", "Second."]
    await client.ws.close()
