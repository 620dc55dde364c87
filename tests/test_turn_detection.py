"""Turn detection, noise reduction and the caller's transcription, typed on openai's models.

The unit tier checks the front matter (each mistake names the nested key's line), the
agent's input audio section and the ``session.update`` it goes out in; the call tier
places calls against the emulator: semantic VAD with far-field noise reduction, server
VAD's ``idle_timeout_ms`` (the bot speaks again to a silent caller), and a refused
``noise_reduction`` dropped on the retry.
"""

import json
from unittest.mock import Mock

import pytest
from conftest import bots_check, phone_call
from openai.types.realtime.input_audio_buffer_timeout_triggered import (
    InputAudioBufferTimeoutTriggered,
)
from openai.types.realtime.session_update_event import SessionUpdateEvent
from pipecat.services.openai.realtime import events
from test_bots import build_offline

from pipecat_realtime_twilio import RealtimeAgent, SemanticVad, ServerVad
from pipecat_realtime_twilio.agent.limits import CallLimits
from pipecat_realtime_twilio.runner.bots import BotError, load_markdown_bot
from pipecat_realtime_twilio.testing.emulator.audio import audio_duration_ms
from pipecat_realtime_twilio.testing.sounds import silence, tone

BOT = """\
---
description: Tuned turns.
greeting: Hello, Acme here.
{front}
---
You are the receptionist of Acme.
"""

SEMANTIC = """\
turn_detection:            # as the Realtime API names it
  type: semantic_vad
  eagerness: low
noise_reduction: far_field
transcription:
  model: gpt-realtime-whisper
  language: en"""

IDLE = """\
turn_detection:
  idle_timeout_ms: 1500"""

PCMU = {"type": "audio/pcmu"}


def write_bot(folder, front: str, name: str = "default"):
    path = folder / f"{name}.md"
    path.write_text(BOT.format(front=front))
    return path


def offline_agent(**options) -> RealtimeAgent:
    return RealtimeAgent(
        instructions="x", api_key="sk-test", base_url="ws://127.0.0.1:1", model="m", **options
    )


async def sent_session_update(agent: RealtimeAgent) -> dict:
    """The ``session.update`` message the agent sends for its session properties."""
    sent: list[dict] = []

    async def capture(message):
        sent.append(message)

    agent._ws_send = capture  # type: ignore[method-assign]
    session = agent._settings.session_properties
    await agent.send_client_event(events.SessionUpdateEvent(session=session))
    (message,) = sent
    return message


# --- the front matter -------------------------------------------------------------------------


async def test_front_matter_sets_turn_detection_noise_reduction_and_transcription(tmp_path):
    bot = load_markdown_bot(write_bot(tmp_path, SEMANTIC))
    agent = (await build_offline(bot))[1]
    assert isinstance(agent, RealtimeAgent) and agent.audio_input is not None
    assert agent.audio_input.model_dump(mode="json", exclude_none=True) == {
        "format": PCMU,
        "turn_detection": {"type": "semantic_vad", "eagerness": "low"},
        "noise_reduction": {"type": "far_field"},
        "transcription": {"model": "gpt-realtime-whisper", "language": "en"},
    }
    # What Pipecat reads of the session agrees.
    pipecat_input = agent._settings.session_properties.audio.input
    assert isinstance(pipecat_input.turn_detection, events.SemanticTurnDetection)
    assert pipecat_input.noise_reduction.type == "far_field"
    assert pipecat_input.transcription.language == "en"
    assert agent._latency._vad_silence_ms == 0  # semantic VAD has no silence_duration_ms


async def test_server_vad_is_the_default_type_and_transcription_false_turns_it_off(tmp_path):
    front = IDLE + "\n  create_response: false\n  interrupt_response: false\ntranscription: false"
    agent = (await build_offline(load_markdown_bot(write_bot(tmp_path, front))))[1]
    assert agent.audio_input.model_dump(mode="json", exclude_none=True) == {
        "format": PCMU,
        "turn_detection": {
            "type": "server_vad",
            "idle_timeout_ms": 1500,
            "create_response": False,
            "interrupt_response": False,
        },
    }
    assert agent._creates_responses is False and agent._barge_in_enabled is False
    assert agent._latency._vad_silence_ms == 500  # the API's default silence


@pytest.mark.parametrize(
    ("front", "line", "says"),
    [
        (
            "turn_detection:\n  type: semantic_vad\n  eagerness: sometimes",
            6,
            "turn_detection.eagerness: unknown eagerness 'sometimes' "
            "(known: low, medium, high, auto)",
        ),
        (
            "turn_detection:\n  type: telepathy",
            5,
            "turn_detection.type: unknown type 'telepathy' (known: server_vad, semantic_vad)",
        ),
        (
            "turn_detection:\n  threshold: 0.4\n  eagerness: low",
            6,
            "turn_detection.eagerness: unknown key (a semantic_vad setting)",
        ),
        (
            "turn_detection:\n  type: semantic_vad\n  # a comment\n  idle_timeout_ms: 9000",
            7,
            "turn_detection.idle_timeout_ms: unknown key (a server_vad setting)",
        ),
        ("turn_detection:\n  colour: blue", 5, "turn_detection.colour: unknown key"),
        (
            "turn_detection:\n  threshold: 1.5",
            5,
            "turn_detection.threshold: must be between 0 and 1, not 1.5",
        ),
        (
            "turn_detection:\n  prefix_padding_ms: 300\n  silence_duration_ms: -5",
            6,
            "turn_detection.silence_duration_ms: must be 0 or more, not -5",
        ),
        (
            "turn_detection:\n  idle_timeout_ms: -1",
            5,
            "turn_detection.idle_timeout_ms: must be 0 or more, not -1",
        ),
        (
            "turn_detection:\n  idle_timeout_ms: 1.5",
            5,
            "turn_detection.idle_timeout_ms: Input should be a valid integer",
        ),
        (
            "turn_detection: {type: semantic_vad, eagerness: eager}",
            4,
            "turn_detection.eagerness: unknown eagerness 'eager'",
        ),
        ("turn_detection: semantic_vad", 4, "turn_detection: must be a mapping of settings"),
        (
            "noise_reduction: medium",
            4,
            "noise_reduction: unknown noise_reduction 'medium' (known: near_field, far_field)",
        ),
        (
            "transcription:\n  model: gpt-realtime-whisper\n  colour: blue",
            6,
            "transcription.colour: unknown key",
        ),
        (
            "transcription:\n  language: English",
            5,
            "transcription.language: 'English' is no ISO-639-1 code",
        ),
        ("transcription: true", 4, "transcription: must be model and/or language, or false"),
    ],
    ids=[
        "unknown eagerness",
        "unknown type",
        "semantic key on server_vad",
        "idle timeout on semantic_vad",
        "unknown key",
        "threshold over 1",
        "negative silence",
        "negative idle timeout",
        "fractional idle timeout",
        "flow mapping",
        "not a mapping",
        "unknown noise reduction",
        "unknown transcription key",
        "language not ISO-639-1",
        "transcription true",
    ],
)
def test_each_mistake_names_the_file_and_the_nested_keys_line(tmp_path, front, line, says):
    path = write_bot(tmp_path, front, name="broken")
    with pytest.raises(BotError) as error:
        load_markdown_bot(path)
    assert str(error.value).startswith(f"{path}:{line}: {says}"), str(error.value)


@pytest.mark.call
async def test_bots_check_reports_a_nested_mistake_with_its_line(tmp_path):
    write_bot(tmp_path, SEMANTIC)
    path = write_bot(tmp_path, "turn_detection:\n  type: semantic_vad\n  eagerness: sometimes", "x")
    code, out = await bots_check(tmp_path)
    assert code == 1, out
    assert f"error: {path}:6: turn_detection.eagerness: unknown eagerness 'sometimes'" in out
    assert "ok: default" in out


# --- the agent and its session.update --------------------------------------------------------


async def test_the_agent_takes_openai_models_and_still_pipecats():
    agent = offline_agent(
        turn_detection=ServerVad(
            type="server_vad", silence_duration_ms=700, idle_timeout_ms=8000, threshold=0.6
        ),
        noise_reduction="near_field",
        transcription_language="fr",
    )
    assert agent.audio_input.model_dump(mode="json", exclude_none=True) == {
        "format": PCMU,
        "turn_detection": {
            "type": "server_vad",
            "silence_duration_ms": 700,
            "idle_timeout_ms": 8000,
            "threshold": 0.6,
        },
        "noise_reduction": {"type": "near_field"},
        "transcription": {"model": "gpt-realtime-whisper", "language": "fr"},
    }
    assert agent._latency._vad_silence_ms == 700 and agent._barge_in_enabled
    pipecat_detection = agent._settings.session_properties.audio.input.turn_detection
    assert isinstance(pipecat_detection, events.TurnDetection)
    assert pipecat_detection.silence_duration_ms == 700
    assert not agent._is_turn_detection_disabled()

    # Pipecat's models still work, converted; None is server VAD with the API's defaults.
    semantic = offline_agent(turn_detection=events.SemanticTurnDetection(eagerness="high"))
    assert semantic.audio_input.turn_detection == SemanticVad(type="semantic_vad", eagerness="high")
    legacy = offline_agent(turn_detection=events.TurnDetection(silence_duration_ms=300))
    assert legacy.audio_input.turn_detection == ServerVad(
        type="server_vad", threshold=0.5, prefix_padding_ms=300, silence_duration_ms=300
    )
    assert offline_agent().audio_input.turn_detection == ServerVad(type="server_vad")
    assert offline_agent(transcribe_caller=False).audio_input.transcription is None


async def test_session_update_carries_the_typed_input_and_drops_a_refused_field():
    agent = offline_agent(
        turn_detection=ServerVad(type="server_vad", idle_timeout_ms=1500, create_response=True),
        noise_reduction="far_field",
    )
    message = await sent_session_update(agent)
    SessionUpdateEvent.model_validate(message)
    assert message["session"]["audio"]["input"] == {
        "format": PCMU,
        "turn_detection": {"type": "server_vad", "idle_timeout_ms": 1500, "create_response": True},
        "noise_reduction": {"type": "far_field"},
        "transcription": {"model": "gpt-realtime-whisper"},
    }
    assert message["session"]["audio"]["output"]["format"] == PCMU
    json.dumps(message)  # as it goes on the wire

    assert agent._drop_field("noise_reduction") is True
    assert agent._drop_field("noise_reduction") is False
    assert agent._settings.session_properties.audio.input.noise_reduction is None
    assert agent._drop_field("transcription") is True
    retry = await sent_session_update(agent)
    assert retry["session"]["audio"]["input"] == {
        "format": PCMU,
        "turn_detection": {"type": "server_vad", "idle_timeout_ms": 1500, "create_response": True},
    }


@pytest.mark.parametrize("creates", [True, False])
async def test_an_idle_timeout_is_a_turn_end_the_server_answers(creates):
    agent = offline_agent(
        turn_detection=ServerVad(type="server_vad", idle_timeout_ms=1500, create_response=creates),
        limits=CallLimits(silence_timeout_secs=20),
    )
    agent._limits = Mock()
    event = {
        "event_id": "event_1",
        "type": "input_audio_buffer.timeout_triggered",
        "item_id": "item_1",
        "audio_start_ms": 1000,
        "audio_end_ms": 2500,
    }
    assert isinstance(
        events.parse_server_event(json.dumps(event)), InputAudioBufferTimeoutTriggered
    )
    try:
        assert await agent._on_server_message(json.dumps(event)) is None
        assert agent._first_byte.armed is creates  # the response is owed, on a deadline
        assert agent._dropped_events == 0
        agent._limits.caller_spoke.assert_not_called()  # silence is no caller speech
    finally:
        agent._stop_deadlines()


# --- calls -------------------------------------------------------------------------------------


def first_session_update(session) -> dict:
    update = dict(session.events_of_type("session.update")[0])
    SessionUpdateEvent.model_validate(update)
    return update


@pytest.mark.call
async def test_a_semantic_vad_far_field_bot_configures_its_session(tmp_path):
    write_bot(tmp_path, SEMANTIC)
    async with phone_call(settings={"bots_dir": str(tmp_path)}) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet()
        greeting = len(caller.heard)
        await caller.say(tone(800) + silence(1500))  # low eagerness: a second of silence
        await caller.wait_quiet(after=greeting)
        session = emulator.sessions[0]
        audio_input = first_session_update(session)["session"]["audio"]["input"]
        assert audio_input["turn_detection"] == {"type": "semantic_vad", "eagerness": "low"}
        assert audio_input["noise_reduction"] == {"type": "far_field"}
        assert audio_input["transcription"] == {"model": "gpt-realtime-whisper", "language": "en"}
        applied = session.config["audio"]["input"]
        assert applied["turn_detection"]["eagerness"] == "low"
        assert applied["noise_reduction"] == {"type": "far_field"}
        assert [r.trigger for r in session.responses] == ["response.create", "vad"]
        assert len(caller.heard) > greeting > 0 and not caller.ended
        assert emulator.validation_errors == [] and emulator.server_event_errors == []


@pytest.mark.call
async def test_the_idle_timeout_makes_the_bot_speak_to_a_silent_caller(tmp_path):
    write_bot(tmp_path, IDLE)
    async with phone_call(settings={"bots_dir": str(tmp_path)}) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300)
        greeting = len(caller.heard)
        session = emulator.sessions[0]
        assert first_session_update(session)["session"]["audio"]["input"]["turn_detection"] == {
            "type": "server_vad",
            "idle_timeout_ms": 1500,
        }
        # The caller says nothing: the server's timeout fires and the bot speaks again.
        await caller.wait_quiet(after=greeting, quiet_ms=300, timeout=15)
        (timeout, *_) = session.sent_of_type("input_audio_buffer.timeout_triggered")
        first, second = session.responses[:2]
        assert second.trigger == "vad" and second.triggered_at >= timeout.queued_at
        playback = audio_duration_ms(len(first.audio), first.output_format) / 1000
        assert first.done_at is not None
        assert timeout.queued_at - first.done_at >= playback + 1.5 - 0.05
        assert timeout["audio_end_ms"] - timeout["audio_start_ms"] <= 1500
        assert len(caller.heard) > greeting and not caller.ended
        assert session.sent_of_type("input_audio_buffer.speech_started") == []
        assert emulator.validation_errors == [] and emulator.server_event_errors == []
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "caller hung up"


@pytest.mark.call
async def test_a_refused_noise_reduction_is_dropped_and_the_call_goes_on(tmp_path):
    write_bot(tmp_path, SEMANTIC)
    async with phone_call(settings={"bots_dir": str(tmp_path)}) as (emulator, runner, caller):
        emulator.reject_session_updates(1, "session.audio.input.noise_reduction")
        await caller.call()
        await caller.wait_quiet()
        session = emulator.sessions[0]
        first, retry = (dict(e) for e in session.events_of_type("session.update")[:2])
        SessionUpdateEvent.model_validate(retry)
        assert first["session"]["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
        assert "noise_reduction" not in retry["session"]["audio"]["input"]
        assert retry["session"]["audio"]["input"]["turn_detection"]["eagerness"] == "low"
        assert session.config["audio"]["input"]["noise_reduction"] is None
        assert len(caller.heard) > 0 and not caller.ended
        assert emulator.server_event_errors == []
