"""A whole call over real sockets: webhook -> TwiML -> media stream -> emulator and back."""

import json
import os
from collections import deque

import httpx
import pytest
from conftest import phone_call

from pipecat_realtime_twilio.agent.models import shutdown_dates
from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.testing.caller import CallRejected
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call


def random_ulaw(ms: int) -> bytes:
    """Loud noise over every μ-law code (0x7F, the negative zero, included)."""
    return os.urandom(ms * BYTES_PER_MS)


async def test_call_end_to_end_greeting_then_answer():
    async with phone_call() as (emulator, runner, caller):
        dial = await caller.call()
        assert dial.stream_url == runner.settings.websocket_origin + "/media-stream"
        assert dial.parameters["bot"] == "default"

        await caller.wait_quiet()
        greeting = len(caller.heard)
        assert greeting > 0

        await caller.say(tone(1000) + silence(800))
        await caller.wait_quiet(after=greeting)
        assert len(caller.heard) > greeting

        session = emulator.sessions[0]
        types = [event["type"] for event in session.client_events]
        assert types[0] == "session.update"
        assert types.index("session.update") < types.index("input_audio_buffer.append")
        assert "response.create" in types
        audio = session.config["audio"]
        assert audio["input"]["format"]["type"] == "audio/pcmu"
        assert audio["output"]["format"]["type"] == "audio/pcmu"
        assert audio["input"]["turn_detection"]["type"] == "server_vad"
        assert [r.trigger for r in session.responses] == ["response.create", "vad"]
        # Every client event the project sent was valid for the openai models.
        assert emulator.validation_errors == []
        assert emulator.server_event_errors == []

        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=5)
        summary = runner.finished[0]
        assert summary.bot == "default"
        assert [e["role"] for e in summary.transcript][:1] == ["bot"]
        assert "caller" in [e["role"] for e in summary.transcript]


async def test_audio_is_bit_exact_both_ways():
    greeting, answer = random_ulaw(1200), random_ulaw(1600)
    async with phone_call(replies=[Reply(audio=greeting), Reply(audio=answer)]) as (
        emulator,
        _,
        caller,
    ):
        await caller.call()
        await caller.wait_quiet()
        assert bytes(caller.heard[: len(greeting)]) == greeting

        spoken = random_ulaw(1500)
        await caller.say(spoken + silence(800))
        await caller.wait_quiet(after=len(greeting))
        heard_answer = bytes(caller.heard[len(greeting) : len(greeting) + len(answer)])
        assert heard_answer == answer

        # The model received the caller's bytes unchanged.
        assert spoken in bytes(emulator.sessions[0].input_audio)
        assert emulator.validation_errors == []


async def test_malformed_packets_are_dropped_and_the_call_goes_on():
    async with phone_call() as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet()
        greeting = len(caller.heard)

        stream_sid = caller.stream_sid
        await caller.send_raw("{this is not json")
        await caller.send_raw(
            json.dumps(
                {"event": "media", "streamSid": stream_sid, "media": {"payload": "@@not base64@@"}}
            )
        )
        await caller.send_raw(json.dumps({"event": "surprise", "streamSid": stream_sid}))
        # (A frame over 64 KiB is refused by the server itself: tests/test_http_limits.py.)

        await caller.say(tone(1000) + silence(800))
        await caller.wait_quiet(after=greeting)
        assert len(caller.heard) > greeting
        call = runner.active[caller.call_sid]
        assert call.serializer.dropped_messages == 3
        assert len(emulator.sessions) == 1
        assert [r.trigger for r in emulator.sessions[0].responses] == ["response.create", "vad"]


async def test_caller_hang_up_closes_the_openai_socket():
    async with phone_call() as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet()
        session = emulator.sessions[0]
        assert session.closed_at is None

        await caller.hangup()
        await emulator.wait_for(lambda: session.closed_at is not None, timeout=5)
        assert session.closed_at >= caller.hung_up_at
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "caller hung up"
        assert runner.active == {}
        assert len(emulator.sessions) == 1


@pytest.mark.parametrize("path", ["/incoming", "/stream-ended"])
@pytest.mark.parametrize("signature", [None, "bm90IHRoZSBzaWduYXR1cmU="])
async def test_webhook_without_valid_signature_is_refused(runner, signature, path):
    headers = {"X-Twilio-Signature": signature} if signature else {}
    async with httpx.AsyncClient(base_url=runner.url) as client:
        response = await client.post(
            path, data={"CallSid": "CA" + "0" * 32, "From": "+1555"}, headers=headers
        )
    assert response.status_code == 403


async def test_webhook_answers_twiml_built_for_the_public_url(caller):
    dial = await caller.dial()
    assert dial.status == 200
    assert dial.stream_url.endswith("/media-stream")
    token = dial.parameters.pop("token")
    assert dial.parameters == {
        "bot": "default",
        "from": caller.from_number,
        "to": caller.to_number,
        "direction": "inbound",
        "stream_action": "1",
    }
    # A one-use stream token for this call: HMAC over the CallSid, expiring soon.
    expiry, _, signature = token.partition(".")
    assert expiry.isdigit() and len(signature) >= 40
    # When the bot closes the stream, Twilio asks the runner what to do next.
    assert dial.action_url == caller.public_url + "/stream-ended"
    assert dial.after_connect == []


async def test_other_accounts_are_refused_on_the_webhook_and_the_stream():
    ours = "AC" + "a" * 32
    settings = {"twilio_account_sid": ours, "prewarm_timeout_secs": 0.5}
    async with phone_call(settings=settings) as (emulator, runner, caller):
        caller.account_sid = "AC" + "b" * 32
        with pytest.raises(CallRejected) as refused:
            await caller.dial()
        assert refused.value.status == 403
        assert emulator.sessions == []

        caller.account_sid = ours
        await caller.dial()  # answered: its session is pre-warmed
        caller.account_sid = "AC" + "b" * 32  # a stream claiming another account
        await caller.connect()
        await caller.wait_ended(timeout=5)
        assert caller.close_code == 1008
        # The refused stream neither took the pre-warmed session nor opened one;
        # the pre-warmed one closes when no stream of the call has come in time.
        assert len(emulator.sessions) == 1 and runner.finished == deque()
        await emulator.sessions[0].wait_closed(timeout=5)


async def test_our_account_is_answered():
    ours = "AC" + "a" * 32
    async with phone_call(settings={"twilio_account_sid": ours}) as (_, _runner, caller):
        caller.account_sid = ours
        await caller.call()
        await caller.wait_heard(200, timeout=10)


async def test_the_caller_transcript_uses_a_current_model_and_keeps_unrecognised_turns():
    async with phone_call(transcripts=["Mumble.", "I would like to book a table."]) as (
        emulator,
        runner,
        caller,
    ):
        emulator.fail_transcriptions(1)
        await caller.call()
        await caller.wait_quiet()
        for _ in range(2):
            heard = len(caller.heard)
            await caller.say(tone(800) + silence(800))
            await caller.wait_quiet(after=heard)
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=5)

        # The session.update names a transcription model with no announced shutdown.
        model = emulator.sessions[0].config["audio"]["input"]["transcription"]["model"]
        assert model == "gpt-realtime-whisper" and model not in shutdown_dates()
        # The turn that could not be transcribed stays in the record, marked.
        callers = [e for e in runner.finished[0].transcript if e["role"] == "caller"]
        assert [(e["text"], e.get("unrecognised", False)) for e in callers] == [
            ("(unrecognised speech)", True),
            ("I would like to book a table.", False),
        ]
        assert emulator.validation_errors == []
