"""What a GPT-Live session is opened with, and every client event the agent sends (no I/O).

Each event LiveAgent can send is captured before the socket and checked the way the
emulator (and the real server) check them: strictly, against ``openai.types.live``.
"""

import base64

import pytest
from loguru import logger
from openai.types.live import SessionConfig

from pipecat_realtime_twilio.agent import live_session
from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
from pipecat_realtime_twilio.agent.live import LiveAgent
from pipecat_realtime_twilio.agent.live_config import (
    LIVE_VOICES,
    MAX_INPUT_ITEMS,
    backend_tools,
    checked_event,
    initial_items,
    is_phone_format,
    live_connection,
    session_config,
    started_format,
)
from pipecat_realtime_twilio.agent.tools import end_call, realtime_tool, split_tools, transfer_call
from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.settings import Settings, settings_in_effect
from pipecat_realtime_twilio.testing.emulator.live_validation import validate_live_client_event
from pipecat_realtime_twilio.testing.sounds import tone


@realtime_tool
def opening_hours(day: str) -> str:
    """Say when the hotel's restaurant is open.

    Args:
        day: The day of the week.
    """
    return f"{day}: 7 to 22"


TOOLS = [end_call(), transfer_call("+15551230000"), opening_hours]


def test_backend_tools_are_the_bots_tools_as_responses_function_tools():
    _, schema = split_tools(TOOLS)
    tools = backend_tools(schema)
    assert [t["name"] for t in tools] == ["end_call", "transfer_call", "opening_hours"]
    hours = tools[2]
    assert hours["type"] == "function"
    assert hours["parameters"]["required"] == ["day"]
    assert hours["parameters"]["properties"]["day"]["type"] == "string"
    assert "restaurant" in hours["description"]
    assert backend_tools(None) == []


def test_the_session_asks_for_8khz_pcmu_and_responses_delegation():
    _, schema = split_tools(TOOLS)
    session = session_config(
        model="gpt-live-1.1",
        instructions="Be brief.",
        voice="cedar",
        backend_model="gpt-5.4-mini",
        backend_instructions="Rules.",
        tools=backend_tools(schema),
        history=[],
    )
    assert session["audio"] == {
        "format": {"type": "audio/pcmu", "rate": 8000},
        "output": {"voice": "cedar"},
    }
    assert session["delegation"]["type"] == "responses"
    assert session["delegation"]["responses"]["model"] == "gpt-5.4-mini"
    assert "input" not in session
    SessionConfig.model_validate(session)
    assert "cedar" in LIVE_VOICES and "quartz" in LIVE_VOICES


def test_a_new_session_gets_the_conversation_so_far_newest_first_kept():
    transcript = [
        TranscriptEntry(role="bot", text="Hello."),
        TranscriptEntry(role="caller", text="(unrecognised speech)", unrecognised=True),
        TranscriptEntry(role="caller", text="When is breakfast?"),
        TranscriptEntry(role="bot", text="From seven."),
    ]
    items = initial_items(transcript)
    assert [(i["role"], i["content"][0]["text"]) for i in items] == [
        ("assistant", "Hello."),
        ("user", "When is breakfast?"),
        ("assistant", "From seven."),
    ]
    assert items[0]["content"][0]["type"] == "output_text"
    assert items[1]["content"][0]["type"] == "input_text"
    many = [TranscriptEntry(role="caller", text=f"turn {n}") for n in range(300)]
    kept = initial_items(many)
    assert len(kept) == MAX_INPUT_ITEMS and kept[-1]["content"][0]["text"] == "turn 299"


def test_started_format_is_read_and_only_8khz_pcmu_is_the_phones():
    assert started_format({"audio": {"format": {"type": "audio/pcmu", "rate": 8000}}}) == {
        "type": "audio/pcmu",
        "rate": 8000,
    }
    assert started_format({"audio": {}}) is None and started_format(None) is None
    assert is_phone_format({"type": "audio/pcmu", "rate": 8000})
    assert not is_phone_format({"type": "audio/pcm", "rate": 24000})
    assert not is_phone_format({"type": "audio/pcmu", "rate": 16000})
    assert not is_phone_format(None)


def test_a_key_is_needed_for_openais_own_live_url_only():
    with settings_in_effect(Settings(_env_file=None)):
        with pytest.raises(SettingsError, match="OPENAI_API_KEY"):
            live_connection(None, None, None, None)
        key, url, model, backend = live_connection(
            None, "ws://127.0.0.1:9/v1/live/sessions", None, None
        )
        assert (url, model, backend) == (
            "ws://127.0.0.1:9/v1/live/sessions",
            "gpt-live-1.1",
            "gpt-5.4-mini",
        )
        assert key
    local = Settings(_env_file=None, openai_realtime_url="ws://127.0.0.1:9/v1/realtime")
    assert local.openai_live_sessions_url == "ws://127.0.0.1:9/v1/live/sessions"
    own = Settings(_env_file=None, openai_live_url="wss://gateway.example/live/")
    assert own.openai_live_sessions_url == "wss://gateway.example/live"


def test_a_mistaken_event_is_logged_not_dropped():
    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")
    try:
        wrong = {"type": "session.commentary.append", "content": 5}
        assert checked_event(wrong) is wrong
        right = {"type": "session.close"}
        assert checked_event(right) is right
    finally:
        logger.remove(sink)
    assert len(errors) == 1 and "session.commentary.append" in errors[0]


async def test_every_event_the_agent_sends_validates_strictly(monkeypatch):
    agent = LiveAgent(
        instructions="You are a test bot.",
        greeting="Hello.",
        api_key="sk-test",
        base_url="ws://127.0.0.1:9/v1/live/sessions",
        model="gpt-live-1.1",
        backend_model="gpt-5.4-mini",
        tools=TOOLS,
    )
    sent: list[dict] = []

    async def capture(message):
        sent.append(message)

    monkeypatch.setattr(agent, "_ws_send", capture)
    monkeypatch.setattr(live_session, "CLOSE_WAIT_SECS", 0.01)
    agent.transcript = [
        TranscriptEntry(role="bot", text="Hello."),
        TranscriptEntry(role="caller", text="Hi."),
    ]
    await agent._start_session()  # session.start, with the conversation so far
    agent._audio_ready = True
    await agent._append_caller_audio(base64.b64encode(tone(20)).decode(), 160)
    await agent.say("One moment, please.", context="The caller asked to wait.")
    await agent._send_keys("12#")
    agent._speech.feed(tone(100))  # the model speaks: interrupt() tells it what was cut
    await agent.interrupt()
    agent._open_function_calls["call_1"] = "deleg_1"
    await agent._handle_evt_response(
        live_session.events.ResponseEventEnvelope(
            type="response.event", delegation_id="deleg_1", event={"type": "response.created"}
        )
    )
    agent._pending_responses["deleg_1"].call_ids.add("call_1")
    agent._pending_responses["deleg_1"].had_calls = True
    agent._pending_responses["deleg_1"].finished = True
    await agent._send_function_call_output("call_1", '{"ok": true}')
    agent._websocket = object()  # type: ignore[assignment]
    agent._session_started = True
    await agent._close_session()
    agent._stop_deadlines()

    types = [event["type"] for event in sent]
    assert types == [
        "session.start",
        "session.input_audio.append",
        "session.commentary.append",
        "session.commentary.append",
        "session.thinking.append",
        "response.item.create",
        "response.create",
        "session.close",
    ]
    for event in sent:
        assert validate_live_client_event(event) is None, event
    start = sent[0]["session"]
    assert [m["role"] for m in start["input"]] == ["assistant", "user"]
    assert [t["name"] for t in start["delegation"]["responses"]["tools"]] == [
        "end_call",
        "transfer_call",
        "opening_hours",
    ]
    assert sent[3]["content"].endswith("12#")
    assert sent[5]["item"] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"ok": true}',
    }
