#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The emulator's failure surface, as a real websocket client sees it.

Each fault knob of ``RealtimeEmulator`` is armed, then a plain ``websockets`` client
connects to the emulator on 127.0.0.1 and checks what arrives on the wire.
"""

import asyncio
import base64
import json
import time

import pytest
from test_emulator import Client as EmulatorClient
from test_emulator import make_emulator, scripted_audio, silence_ulaw, tone_ulaw
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.emulator.faults import duration_text

pytestmark = pytest.mark.call
# The emulator tests' client, audio and fixture: make_emulator checks, at teardown, that each
# emulator produced only valid events and logged no errors.
__all__ = ["make_emulator"]

AUTH = {"Authorization": "Bearer sk-test"}
PCMU = {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}


class Client(EmulatorClient):
    """The emulator tests' client, with a one-call ``session.update``."""

    async def update(self, session: dict) -> dict:
        """Send a ``session.update`` and return the answer (``session.updated`` or ``error``)."""
        await self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        return await self.recv()


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[dict]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


def transcript_of(events: list[dict]) -> str:
    return "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )


def body_of(refused: pytest.ExceptionInfo[InvalidStatus]) -> dict:
    response = refused.value.response
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.body)


async def open_client(emulator: RealtimeEmulator, model: str = "gpt-realtime", **kwargs) -> Client:
    ws = await connect(f"{emulator.url}?model={model}", additional_headers=AUTH, **kwargs)
    return Client(ws)


async def pcmu_client(emulator: RealtimeEmulator, **session) -> Client:
    """Connect and switch the session to G.711 mu-law both ways."""
    client = await open_client(emulator)
    await client.expect("session.created")
    updated = await client.update({"audio": PCMU, **session})
    assert updated["type"] == "session.updated", updated
    return client


# ---------------------------------------------------------------------------
# Handshakes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error_type", "error_code"),
    [
        (401, None, "invalid_request_error", "invalid_api_key"),
        (403, None, "request_forbidden", "unsupported_country_region_territory"),
        (404, None, "invalid_request_error", "model_not_found"),
        (429, None, "requests", "rate_limit_exceeded"),
        (429, "insufficient_quota", "insufficient_quota", "insufficient_quota"),
        (500, None, "server_error", "server_error"),
        (502, None, "server_error", "server_error"),
        (503, None, "server_error", "server_error"),
    ],
)
async def test_refuse_handshakes_answers_like_openai(
    make_emulator, status, code, error_type, error_code
):
    emulator = await make_emulator()
    emulator.refuse_handshakes(1, status, code)
    with pytest.raises(InvalidStatus) as refused:
        await open_client(emulator, model="gpt-realtime-mini")
    assert refused.value.response.status_code == status
    error = body_of(refused)["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert (error["type"], error["code"], error["param"]) == (error_type, error_code, None)
    assert error["message"]
    if status == 404:
        assert "gpt-realtime-mini" in error["message"]
    (rejected,) = emulator.rejected_handshakes
    assert (rejected.status, rejected.code, rejected.reason) == (
        status,
        error_code,
        "injected fault",
    )
    assert emulator.sessions == []


async def test_refusals_count_across_handshakes_and_take_a_message(make_emulator):
    emulator = await make_emulator()
    emulator.refuse_handshakes(2, 429, "rate_limit_exceeded", "Slow down.")
    for _ in range(2):
        with pytest.raises(InvalidStatus) as refused:
            await open_client(emulator)
        assert refused.value.response.status_code == 429
        assert body_of(refused)["error"]["message"] == "Slow down."
    client = await open_client(emulator)  # the third handshake is accepted
    await client.expect("session.created")
    assert [r.code for r in emulator.rejected_handshakes] == ["rate_limit_exceeded"] * 2
    assert emulator.handshake_attempts == 3
    await client.ws.close()
    # The older name still arms the same refusal.
    emulator.fail_next_connections(1, status=503)
    with pytest.raises(InvalidStatus) as refused:
        await open_client(emulator)
    assert body_of(refused)["error"]["type"] == "server_error"


async def test_hang_handshakes_until_the_client_gives_up(make_emulator):
    emulator = await make_emulator()
    emulator.hang_handshakes(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await open_client(emulator, open_timeout=1)
    assert loop.time() - started >= 0.9  # the client's open timeout ended it
    await emulator.wait_for(lambda: emulator.hung_handshakes[0].ended_at is not None)
    (hung,) = emulator.hung_handshakes
    assert (hung.outcome, hung.secs) == ("client gave up", None)
    assert hung.ended_at - hung.started_at >= 0.9
    assert emulator.sessions == [] and emulator.rejected_handshakes == []
    client = await open_client(emulator)  # only the next n hang
    await client.expect("session.created")
    await client.ws.close()


async def test_hang_handshakes_for_a_while_then_503(make_emulator):
    emulator = await make_emulator()
    emulator.hang_handshakes(1, secs=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(InvalidStatus) as refused:
        await open_client(emulator, open_timeout=20)
    assert loop.time() - started >= 0.9
    assert refused.value.response.status_code == 503
    assert body_of(refused)["error"]["type"] == "server_error"
    assert emulator.hung_handshakes[0].outcome == "refused"
    assert [(r.status, r.reason) for r in emulator.rejected_handshakes] == [(503, "hang expired")]


async def test_stop_ends_a_hanging_handshake(make_emulator):
    emulator = await make_emulator()
    emulator.hang_handshakes(1)
    attempt = asyncio.create_task(open_client(emulator, open_timeout=60))
    await emulator.wait_for(lambda: emulator.hung_handshakes)
    await asyncio.wait_for(emulator.stop(), 10)
    with pytest.raises(InvalidStatus) as refused:
        await asyncio.wait_for(attempt, 10)
    assert refused.value.response.status_code == 503
    assert emulator.hung_handshakes[0].outcome == "emulator stopped"


async def test_retired_models_are_refused_at_the_handshake_and_in_session_update(make_emulator):
    emulator = await make_emulator(retired_models={"gpt-4o-realtime-preview"})
    emulator.retired_models.add("whisper-1")
    with pytest.raises(InvalidStatus) as refused:
        await open_client(emulator, model="gpt-4o-realtime-preview")
    assert refused.value.response.status_code == 404
    error = body_of(refused)["error"]
    assert error["code"] == "model_not_found"
    assert "gpt-4o-realtime-preview" in error["message"]
    assert emulator.rejected_handshakes[0].reason == "retired model"

    client = await open_client(emulator)
    created = (await client.expect("session.created"))["session"]
    await client.send(
        {
            "type": "session.update",
            "event_id": "evt_retired",
            "session": {
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {
                    **PCMU,
                    "input": {**PCMU["input"], "transcription": {"model": "whisper-1"}},
                },
            },
        }
    )
    error = (await client.expect("error"))["error"]
    assert error["param"] == "session.audio.input.transcription.model"
    assert (error["code"], error["event_id"]) == ("invalid_value", "evt_retired")
    assert "whisper-1" in error["message"] and "no longer available" in error["message"]
    # Nothing of the update was applied.
    assert emulator.sessions[0].config == created
    updated = await client.update(
        {"audio": {"input": {"transcription": {"model": "gpt-realtime-whisper"}}}}
    )
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == "gpt-realtime-whisper"
    await client.ws.close()


# ---------------------------------------------------------------------------
# session.update
# ---------------------------------------------------------------------------


async def test_reject_session_updates_applies_nothing_across_sessions(make_emulator):
    emulator = await make_emulator()
    emulator.reject_session_updates(2, "session.audio.output.format")
    first, second = await open_client(emulator), await open_client(emulator)
    for client in (first, second):
        created = (await client.expect("session.created"))["session"]
        await client.send(
            {
                "type": "session.update",
                "event_id": "evt_pcmu",
                "session": {"type": "realtime", "audio": PCMU, "instructions": "Hi."},
            }
        )
        error = (await client.expect("error"))["error"]
        assert error == {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": "Invalid value for 'session.audio.output.format'.",
            "param": "session.audio.output.format",
            "event_id": "evt_pcmu",
        }
    for session in emulator.sessions:
        assert session.config["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session.config["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session.config["instructions"] == created["instructions"]
        assert session.sent_of_type("session.updated") == []
    # The third update goes through.
    updated = await first.update({"audio": PCMU})
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    await first.ws.close()
    await second.ws.close()


async def test_stall_session_updates_leaves_them_unanswered(make_emulator):
    emulator = await make_emulator()
    emulator.stall_session_updates(1)
    client = await open_client(emulator)
    await client.expect("session.created")
    await client.send({"type": "session.update", "session": {"type": "realtime", "audio": PCMU}})
    with pytest.raises(TimeoutError):
        await client.recv(timeout=0.5)  # no session.updated, no error
    session = emulator.sessions[0]
    assert session.config["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert (await client.update({"audio": PCMU}))["type"] == "session.updated"  # the next one
    await client.ws.close()


async def test_reject_session_updates_with_a_code_and_message(make_emulator):
    emulator = await make_emulator()
    emulator.reject_session_updates(
        1, "session.audio.input.noise_reduction", "unknown_parameter", "Not here."
    )
    client = await open_client(emulator)
    await client.expect("session.created")
    error = (await client.update({"instructions": "Hi."}))["error"]
    assert (error["param"], error["code"], error["message"]) == (
        "session.audio.input.noise_reduction",
        "unknown_parameter",
        "Not here.",
    )
    assert error["event_id"] is None  # the update carried none
    await client.ws.close()


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("insufficient_quota", "insufficient_quota"),
        ("rate_limit_exceeded", "requests"),
        ("server_error", "server_error"),
    ],
)
async def test_failed_responses_have_no_output_and_use_their_reply(make_emulator, code, error_type):
    emulator = await make_emulator(
        replies=[
            Reply("Lost.", audio=scripted_audio(300)),
            Reply("Found.", audio=scripted_audio(300)),
        ]
    )
    emulator.fail_next_responses(1, code=code)
    client = await pcmu_client(emulator)
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.done")
    assert types(events) == ["response.created", "response.done"]
    done = events[-1]["response"]
    assert done["status"] == "failed"
    assert done["output"] == []
    details = done["status_details"]
    assert details["type"] == "failed"
    assert (details["error"]["type"], details["error"]["code"]) == (error_type, code)
    assert details["error"]["message"]
    # The failed response used its scripted reply up: the next one plays the second.
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.done")
    assert events[-1]["response"]["status"] == "completed"
    assert transcript_of(events) == "Found."
    failed, played = emulator.sessions[0].responses
    assert (failed.status, failed.status_reason, failed.error["code"]) == ("failed", code, code)
    assert failed.audio == b"" and played.status == "completed"
    await client.ws.close()


async def test_a_vad_response_can_fail_too(make_emulator):
    emulator = await make_emulator()
    emulator.fail_next_responses(1, "failed", "rate_limit_exceeded")
    client = await pcmu_client(emulator)
    await client.append(silence_ulaw(200) + tone_ulaw(800) + silence_ulaw(800))
    events = await client.recv_until("response.done")
    assert "input_audio_buffer.speech_stopped" in types(events)
    done = events[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["error"]["code"] == "rate_limit_exceeded"
    assert emulator.sessions[0].responses[0].trigger == "vad"
    await client.ws.close()


@pytest.mark.parametrize("reason", ["max_output_tokens", "content_filter"])
async def test_incomplete_responses_stream_half_their_reply(make_emulator, reason):
    reply_audio = scripted_audio(1000)
    emulator = await make_emulator(
        replies=[Reply("one two three four five six", audio=reply_audio)]
    )
    emulator.fail_next_responses(1, "incomplete", reason)
    client = await pcmu_client(emulator)
    await client.send({"type": "response.create"})
    events = await client.recv_until("response.done")
    assert audio_of(events) == reply_audio[: len(reply_audio) // 2]
    assert transcript_of(events) == "one two three"
    done = events[-1]["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": reason}
    (item,) = done["output"]
    assert item["status"] == "incomplete"
    assert item["content"][0]["transcript"] == "one two three"
    (response,) = emulator.sessions[0].responses
    assert (response.status, response.status_reason) == ("incomplete", reason)
    await client.ws.close()


async def test_stalled_responses_send_nothing_then_proceed(make_emulator):
    emulator = await make_emulator(
        replies=[Reply("Sorry for the wait.", audio=scripted_audio(200))]
    )
    emulator.stall_next_responses(1, secs=1.5)
    client = await pcmu_client(emulator)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.send({"type": "response.create"})
    with pytest.raises(TimeoutError):
        await client.recv(timeout=0.5)  # no first byte
    events = await client.recv_until("response.done")
    assert loop.time() - started >= 1.4
    assert events[0]["type"] == "response.created"
    assert events[-1]["response"]["status"] == "completed"
    assert transcript_of(events) == "Sorry for the wait."
    (response,) = emulator.sessions[0].responses
    assert response.stall_secs == 1.5
    assert response.created_at - response.triggered_at >= 1.4
    await client.ws.close()


async def test_an_endless_stall_ends_only_as_a_cancelled_response(make_emulator):
    emulator = await make_emulator()
    emulator.stall_next_responses(1)
    client = await pcmu_client(emulator)
    await client.send({"type": "response.create"})
    # The stalled response is active: a second one is refused.
    await client.send({"type": "response.create", "event_id": "evt_again"})
    error = (await client.expect("error"))["error"]
    assert error["code"] == "conversation_already_has_active_response"
    with pytest.raises(TimeoutError):
        await client.recv(timeout=0.5)
    await client.send({"type": "response.cancel"})
    events = await client.recv_until("response.done")
    assert types(events) == ["response.created", "response.done"]
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "client_cancelled"
    assert done["output"] == []
    await client.ws.close()


# ---------------------------------------------------------------------------
# Session cap
# ---------------------------------------------------------------------------


async def test_sessions_expire_at_their_cap(make_emulator):
    emulator = await make_emulator(session_max_secs=2.0)
    loop = asyncio.get_running_loop()
    started, now = loop.time(), time.time()
    client = await open_client(emulator)
    created = await client.expect("session.created")
    assert now + 2 - 1 <= created["session"]["expires_at"] <= now + 2 + 1
    error = await client.recv(timeout=10)
    assert error["type"] == "error"
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "session_expired",
        "message": "Your session hit the maximum duration of 2 seconds.",
        "param": None,
        "event_id": None,
    }
    assert loop.time() - started >= 1.9
    with pytest.raises(ConnectionClosedOK):
        await client.recv()
    assert client.ws.close_code == 1000
    session = emulator.sessions[0]
    await session.wait_closed()
    assert session.expired_at is not None and session.max_secs == 2.0


async def test_the_default_cap_is_an_hour(make_emulator):
    emulator = await make_emulator()
    assert emulator.session_max_secs == 3600
    client = await open_client(emulator)
    expires_at = (await client.expect("session.created"))["session"]["expires_at"]
    assert abs(expires_at - (time.time() + 3600)) <= 5
    assert duration_text(3600) == "60 minutes"
    assert duration_text(1.5) == "1.5 seconds"
    with pytest.raises(ValueError):
        RealtimeEmulator(session_max_secs=0)
    await client.ws.close()


# ---------------------------------------------------------------------------
# Input transcription
# ---------------------------------------------------------------------------


async def test_failed_transcriptions(make_emulator):
    emulator = await make_emulator(transcripts=["Mumble.", "Second turn."])
    emulator.fail_transcriptions(1)
    client = await pcmu_client(
        emulator,
        audio={
            **PCMU,
            "input": {**PCMU["input"], "transcription": {"model": "gpt-realtime-whisper"}},
        },
        output_modalities=["text"],
    )
    turn = silence_ulaw(200) + tone_ulaw(800) + silence_ulaw(800)
    await client.append(turn)
    events = await client.recv_until("response.done")
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    (failed,) = [e for e in events if e["type"].startswith("conversation.item.input_audio_trans")]
    assert failed["type"] == "conversation.item.input_audio_transcription.failed"
    assert (failed["item_id"], failed["content_index"]) == (committed["item_id"], 0)
    assert failed["error"]["type"] == "transcription_error"
    assert failed["error"]["code"] == "audio_unintelligible"
    assert failed["error"]["message"] and failed["error"]["param"] is None
    assert emulator.sessions[0].item(committed["item_id"])["content"][0]["transcript"] is None
    # The failed turn used its script up: the next turn is transcribed as the second.
    await client.append(turn)
    events = await client.recv_until("response.done")
    (completed,) = [
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    assert completed["transcript"] == "Second turn."
    await client.ws.close()


async def test_a_transcription_failure_without_code_is_a_server_error(make_emulator):
    emulator = await make_emulator()
    emulator.fail_transcriptions(1, code=None)
    manual = {**PCMU["input"], "transcription": {"model": "gpt-transcribe"}, "turn_detection": None}
    client = await pcmu_client(emulator, audio={**PCMU, "input": manual})
    await client.append(tone_ulaw(300))
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.recv_until("conversation.item.input_audio_transcription.failed")
    error = events[-1]["error"]
    assert (error["type"], error["code"]) == ("server_error", None)
    assert events[-1]["item_id"] in error["message"]
    await client.ws.close()


# ---------------------------------------------------------------------------
# semantic_vad
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eagerness", "transcript", "wait_ms"),
    [
        ("high", "so I was wondering", 2000),
        ("low", "so I was wondering", 8000),
        ("auto", "so I was wondering", 4000),
        ("high", "That is all.", 200),
        ("low", "Is it open?", 1000),
    ],
)
async def test_semantic_vad_waits_by_eagerness_and_how_the_turn_ends(
    make_emulator, eagerness, transcript, wait_ms
):
    emulator = await make_emulator(transcripts=[transcript])
    detection = {"type": "semantic_vad", "eagerness": eagerness, "create_response": False}
    client = await pcmu_client(
        emulator, audio={**PCMU, "input": {**PCMU["input"], "turn_detection": detection}}
    )
    # The VAD runs on the audio's own timeline: 10 s of it can be sent at once.
    await client.append(tone_ulaw(1000) + silence_ulaw(9000))
    started = await client.expect("input_audio_buffer.speech_started")
    stopped = await client.expect("input_audio_buffer.speech_stopped")
    assert stopped["item_id"] == started["item_id"]
    assert stopped["audio_end_ms"] == 1000 + wait_ms
    await client.ws.close()
