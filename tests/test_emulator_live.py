#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Tests for the emulator's GPT-Live side, driven by a plain websockets client.

The client builds its events as ``openai.types.live`` params and checks every server
event it receives against ``openai.types.live.ServerEvent`` itself.
"""

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import websockets
from openai.types.live import (
    CommentaryAppendEventParam,
    InputAudioAppendEventParam,
    ResponseCreateEventParam,
    ResponseItemCreateEventParam,
    ServerEvent,
    SessionCloseEventParam,
    SessionConfigParam,
    SessionStartEventParam,
    SessionUpdateEventParam,
    ThinkingAppendEventParam,
)
from pydantic import TypeAdapter
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from pipecat_realtime_twilio.agent.conversation import SAY_INSTRUCTION
from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT
from pipecat_realtime_twilio.audio import pcm16_to_alaw, ulaw_to_pcm16
from pipecat_realtime_twilio.testing.emulator import (
    LiveSession,
    RealtimeEmulator,
    Reply,
    synthesize_speech,
    validate_live_client_event,
)
from pipecat_realtime_twilio.testing.emulator.records import FunctionCall
from pipecat_realtime_twilio.testing.model import last_keypad_input, say_as_asked, words_to_say
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

AUTH = {"Authorization": "Bearer sk-test"}
SERVER_EVENT: TypeAdapter = TypeAdapter(ServerEvent)
PCMU: SessionConfigParam = {
    "model": "gpt-live-1",
    "audio": {"format": {"type": "audio/pcmu", "rate": 8000}},
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "lookup_order",
        "description": "Look an order up.",
        "parameters": {"type": "object", "properties": {"order": {"type": "integer"}}},
    }
]
RESPONSES: SessionConfigParam = {
    **PCMU,
    "delegation": {"type": "responses", "responses": {"model": "gpt-5.2", "tools": TOOLS}},
}


class LiveClient:
    """A websockets client of the emulator's Live path that keeps what it receives."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict] = []
        self.invalid: list[str] = []
        self.closed_with: Exception | None = None
        self.fed = 0
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                try:
                    SERVER_EVENT.validate_json(message)
                except ValueError as exc:
                    self.invalid.append(str(exc))
                self.events.append(json.loads(message))
        except ConnectionClosedError as exc:
            self.closed_with = exc

    async def send(self, event: Any, *, check: bool = True) -> None:
        if check:
            assert validate_live_client_event(event) is None, event
        await self.ws.send(json.dumps(event))

    async def start(self, config: SessionConfigParam = PCMU) -> dict:
        event: SessionStartEventParam = {
            "type": "session.start",
            "event_id": "evt_start",
            "session": config,
        }
        await self.send(event)
        return await self.next_of("session.started")

    async def commentary(self, content: str, delegation_id: str | None = None) -> None:
        event: CommentaryAppendEventParam = {
            "type": "session.commentary.append",
            "content": content,
            "delegation_id": delegation_id,
        }
        await self.send(event)

    async def feed(self, audio: bytes, chunk: int = 160) -> None:
        """Append audio as fast as possible (the emulator's VAD runs on the audio's clock)."""
        for i in range(0, len(audio), chunk):
            event: InputAudioAppendEventParam = {
                "type": "session.input_audio.append",
                "audio": base64.b64encode(audio[i : i + chunk]).decode(),
            }
            await self.send(event, check=False)
        self.fed += len(audio)

    async def processed(self, session: LiveSession) -> None:
        """Wait until the emulator has taken in all the audio fed so far."""
        await self.until(lambda: len(session.input_audio) == self.fed)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    def inner(self, kind: str) -> list[dict]:
        """The nested Responses events of ``response.event`` envelopes, of one type."""
        return [e["event"] for e in self.of("response.event") if e["event"]["type"] == kind]

    async def until(self, predicate: Callable[[], Any], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                kinds = [e["type"] for e in self.events if "audio.delta" not in e["type"]]
                raise TimeoutError(f"condition not met; events: {kinds}")
            await asyncio.sleep(0.005)

    async def next_of(self, kind: str, after: int = 0, timeout: float = 5.0) -> dict:
        await self.until(lambda: len(self.of(kind)) > after, timeout)
        return self.of(kind)[after]

    def audio(self) -> bytes:
        return b"".join(base64.b64decode(e["delta"]) for e in self.of("session.output_audio.delta"))

    def transcript(self, kind: str = "output") -> str:
        return "".join(e["delta"] for e in self.of(f"session.{kind}_transcript.delta"))


@pytest.fixture
async def emulator():
    emulator = RealtimeEmulator(send_rate=0)
    async with emulator:
        yield emulator
    assert emulator.server_event_errors == []
    assert emulator.internal_errors == []


async def connect(emulator: RealtimeEmulator, **kwargs: Any) -> LiveClient:
    ws = await websockets.connect(emulator.live_url, additional_headers=AUTH, **kwargs)
    return LiveClient(ws)


async def close(client: LiveClient) -> None:
    await client.ws.close()
    await asyncio.gather(client._reader, return_exceptions=True)
    assert client.invalid == []


def caller(ms: int = 600, quiet_ms: int = 700) -> bytes:
    return tone(ms) + silence(quiet_ms)


# -- handshake and session.start ---------------------------------------------------------


async def test_live_path_needs_a_bearer_key_and_no_query(emulator):
    assert emulator.live_url.endswith(f":{emulator.port}/v1/live/sessions")
    with pytest.raises(InvalidStatus) as missing:
        await websockets.connect(emulator.live_url)
    assert missing.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as query:
        await websockets.connect(emulator.live_url + "?model=gpt-live-1", additional_headers=AUTH)
    assert query.value.response.status_code == 400
    assert "session.start" in json.loads(query.value.response.body)["error"]["message"]
    assert [r.reason for r in emulator.rejected_handshakes] == [
        "missing bearer token",
        "query string",
    ]
    client = await connect(emulator)
    await client.start()
    assert isinstance(emulator.sessions[0], LiveSession)
    assert emulator.live_sessions == emulator.sessions
    await close(client)


async def test_session_start_comes_first_and_answers_the_resolved_session(emulator):
    client = await connect(emulator)
    await client.send({"type": "session.input_audio.mute", "event_id": "early"})
    error = await client.next_of("error")
    assert error["error"]["code"] == "session_not_started"
    assert error["client_event_id"] == error["error"]["client_event_id"] == "early"
    started = await client.start(
        {
            **PCMU,
            "instructions": "Be brief.",
            "input": [
                {"role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]}
            ],
        }
    )
    session = emulator.live_sessions[0]
    resource = started["session"]
    assert started["client_event_id"] == "evt_start"
    assert resource["id"] == session.id and resource["status"] == "active"
    assert resource["audio"] == {
        "format": {"type": "audio/pcmu", "rate": 8000},
        "output": {"voice": "marin"},
    }
    assert resource["delegation"]["type"] == "client"
    assert resource["input"][0]["content"][0]["text"] == "Hello!"
    assert session.model == "gpt-live-1" and session.instructions == "Be brief."
    assert session.conversation == [("assistant", "Hello!")]
    assert session.audio_format == ("audio/pcmu", 8000)
    await client.start()
    assert (await client.next_of("error", 1))["error"]["code"] == "session_already_started"
    await close(client)


async def test_default_format_is_pcm_24k(emulator):
    client = await connect(emulator)
    started = await client.start({"model": "gpt-live-1.1"})
    assert started["session"]["audio"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert emulator.live_sessions[0].audio_format == ("audio/pcm", 24000)
    await close(client)


@pytest.mark.parametrize(
    "event, code, param",
    [
        (
            {"type": "session.start", "session": {"model": "gpt-live-1", "voice": "marin"}},
            "unknown_parameter",
            "session.voice",
        ),
        (
            {
                "type": "session.start",
                "session": {
                    "model": "gpt-live-1",
                    "audio": {"format": {"type": "audio/pcm", "rate": 8000}},
                },
            },
            "invalid_value",
            "session.audio.format.rate",
        ),
        (
            {
                "type": "session.start",
                "session": {
                    "model": "gpt-live-1",
                    "input": [
                        {"role": "assistant", "content": [{"type": "input_text", "text": "Hi"}]}
                    ],
                },
            },
            "invalid_value",
            "session.input[0].content[0].type",
        ),
        (
            {"type": "session.commentary.append", "content": "Hi"},
            "missing_required_parameter",
            "delegation_id",
        ),
        ({"type": "session.audio.append", "audio": ""}, "invalid_value", "type"),
    ],
)
async def test_invalid_client_events_get_an_error_and_are_recorded(emulator, event, code, param):
    client = await connect(emulator)
    if event["type"] != "session.start":
        await client.start()
    await client.send({**event, "event_id": "bad"}, check=False)
    error = await client.next_of("error")
    assert (error["error"]["code"], error["error"].get("param")) == (code, param)
    assert error["client_event_id"] == "bad"
    assert [(e.code, e.param) for e in emulator.validation_errors] == [(code, param)]
    await close(client)


@pytest.mark.parametrize(
    "config, param",
    [
        ({"model": "gpt-realtime"}, "session.model"),
        (
            {"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcmu", "rate": 16000}}},
            "session.audio.format.rate",
        ),
        (
            {"model": "gpt-live-1", "audio": {"output": {"voice": "nobody"}}},
            "session.audio.output.voice",
        ),
    ],
)
async def test_session_start_checks_beyond_the_types(emulator, config, param):
    client = await connect(emulator)
    await client.send({"type": "session.start", "session": config})
    error = await client.next_of("error")
    assert error["error"]["param"] == param
    assert client.of("session.started") == []
    assert not emulator.live_sessions[0].started
    await close(client)


# -- audio, turns, transcripts ---------------------------------------------------------------


async def test_mulaw_round_trips_bit_exact_both_ways(emulator):
    emulator.live_silence = False
    reply_audio = bytes(range(256)) * 20  # every μ-law code, 640 ms
    emulator.replies.append(Reply("Exact.", audio=reply_audio))
    client = await connect(emulator)
    await client.start()
    await client.commentary("Say it.")
    session = emulator.live_sessions[0]
    await client.until(lambda: session.responses and session.responses[0].status == "completed")
    await client.until(lambda: len(client.audio()) == len(reply_audio))
    sent = bytes(np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8))
    await client.feed(sent, chunk=333)
    await client.processed(session)
    assert bytes(session.input_audio) == sent
    assert client.audio() == reply_audio == bytes(session.responses[0].audio)
    await close(client)


@pytest.mark.parametrize(
    "fmt", [{"type": "audio/pcma", "rate": 8000}, {"type": "audio/pcm", "rate": 16000}]
)
async def test_other_formats_are_honoured(emulator, fmt):
    emulator.live_silence = False
    emulator.replies.append(Reply("Hello."))
    emulator.transcripts.append("Hi.")
    client = await connect(emulator)
    await client.start({"model": "gpt-live-1", "audio": {"format": fmt}})
    pcm = np.frombuffer(ulaw_to_pcm16(caller()), dtype=np.int16)
    if fmt["type"] == "audio/pcma":
        await client.feed(pcm16_to_alaw(pcm.tobytes()))
    else:
        await client.feed(np.repeat(pcm, 2).astype("<i2").tobytes(), chunk=640)
    session = emulator.live_sessions[0]
    await client.until(lambda: session.responses and session.responses[0].status == "completed")
    ulaw = synthesize_speech("Hello.")
    if fmt["type"] == "audio/pcma":
        assert bytes(session.responses[0].audio) == pcm16_to_alaw(ulaw_to_pcm16(ulaw))
    else:
        assert len(session.responses[0].audio) == len(ulaw) * 2 * 2  # 16 kHz PCM16
    turn = session.caller_turns[0]
    assert (turn.start_ms, turn.end_ms) == (0, 600)
    assert client.transcript("input") == "Hi."
    await close(client)


async def test_scripted_reply_with_transcripts_and_audio(emulator):
    emulator.live_silence = False
    emulator.transcripts.append("What are your opening hours today?")
    emulator.replies.append(Reply("We open at nine."))
    client = await connect(emulator)
    await client.start()
    await client.feed(caller(1000))
    session = emulator.live_sessions[0]
    await client.until(lambda: session.responses and session.responses[0].status == "completed")
    fragments = client.of("session.input_transcript.delta")
    assert "".join(f["delta"] for f in fragments) == "What are your opening hours today?"
    assert [(f["start_ms"], f["end_ms"]) for f in fragments] == [
        (0, 200),
        (200, 400),
        (400, 600),
        (600, 800),
        (800, 1000),
    ]
    assert session.responses[0].trigger == "vad"
    await client.until(lambda: client.transcript() == "We open at nine.")
    assert bytes(session.responses[0].audio) == synthesize_speech("We open at nine.")
    assert session.conversation == [
        ("user", "What are your opening hours today?"),
        ("assistant", "We open at nine."),
    ]
    await close(client)


async def test_output_streams_silence_between_turns(emulator):
    emulator.audio_chunk_ms = 20
    client = await connect(emulator)
    await client.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await client.until(lambda: len(client.of("session.output_audio.delta")) >= 25)
    elapsed = loop.time() - began
    audio = client.audio()
    assert set(audio) == {0xFF} and client.transcript() == ""
    print(f"\n25 silence deltas of 20 ms in {elapsed * 1000:.0f} ms (real time: 500 ms)")
    await close(client)


async def test_silence_can_be_turned_off(emulator):
    emulator.live_silence = False
    emulator.replies.append(Reply("Only speech."))
    client = await connect(emulator)
    await client.start()
    await client.commentary("Go.")
    session = emulator.live_sessions[0]
    await client.until(lambda: session.responses and session.responses[0].status == "completed")
    await asyncio.sleep(0.3)
    assert client.audio() == session.speech_audio == bytes(session.output_audio)
    await close(client)


async def test_barge_in_stops_the_model_at_once(emulator):
    emulator.send_rate = 1
    emulator.audio_chunk_ms = 20
    text = "One two three four five six seven eight nine ten eleven twelve."
    emulator.replies.extend([Reply(text, duration_ms=4000), Reply("Yes?")])
    emulator.transcripts.append("Wait.")
    client = await connect(emulator)
    await client.start()
    await client.commentary("Count.")
    session = emulator.live_sessions[0]
    await client.until(lambda: session.responses and len(session.responses[0].deltas) >= 40)
    await client.feed(caller(300, 700))
    await client.processed(session)
    turn = session.responses[0]
    assert turn.status == "interrupted"
    heard = session.caller_turns[0]
    assert heard.barged_in
    assert heard.detected_ms - heard.start_ms <= 200  # the model stops within 200 ms
    assert all(d.event.queued_at <= heard.detected_at for d in turn.deltas)
    assert text.startswith(turn.transcript) and 0 < len(turn.transcript) < len(text)
    await client.until(
        lambda: len(session.responses) == 2 and session.responses[1].status == "completed"
    )
    assert session.responses[1].trigger == "vad"
    assert session.conversation == [
        ("assistant", turn.transcript),
        ("user", "Wait."),
        ("assistant", "Yes?"),
    ]
    await client.until(lambda: client.transcript() == turn.transcript + "Yes?")
    print(f"\nspoken before the barge-in: {turn.audio_ms:.0f} of 4000 ms, {turn.transcript!r}")
    await close(client)


async def test_mute_makes_the_input_silence(emulator):
    client = await connect(emulator)
    await client.start()
    await client.send({"type": "session.input_audio.mute", "event_id": "m"})
    muted = await client.next_of("session.input_audio.muted")
    assert muted["client_event_id"] == "m"
    await client.feed(caller())
    session = emulator.live_sessions[0]
    await client.processed(session)
    assert session.muted and session.caller_turns == []
    await client.send({"type": "session.input_audio.unmute"})
    await client.next_of("session.input_audio.unmuted")
    await client.feed(caller())
    await client.processed(session)
    assert len(session.caller_turns) == 1
    await close(client)


async def test_usage_is_whole_seconds_of_input_audio(emulator):
    emulator.live_usage_interval_ms = 1000
    client = await connect(emulator)
    await client.start()
    await client.feed(silence(2500))
    await client.until(lambda: len(client.of("session.usage.updated")) == 2)
    assert [e["usage"]["seconds"] for e in client.of("session.usage.updated")] == [1.0, 2.0]
    close_event: SessionCloseEventParam = {"type": "session.close", "event_id": "bye"}
    await client.send(close_event)
    closed = await client.next_of("session.closed")
    assert (closed["reason"], closed["usage"], closed["client_event_id"]) == (
        "close_requested",
        {"seconds": 2.0},
        "bye",
    )
    await client._reader
    assert client.ws.close_code == 1000
    assert emulator.live_sessions[0].close_reason == "close_requested"
    await close(client)


async def test_session_close_lets_the_turn_finish(emulator):
    emulator.send_rate = 4
    emulator.replies.append(Reply("A sentence that takes a while to say."))
    client = await connect(emulator)
    await client.start()
    await client.commentary("Talk.")
    session = emulator.live_sessions[0]
    await client.until(lambda: session.speaking is not None)
    await client.send({"type": "session.close"})
    await client.next_of("session.closed")
    assert session.responses[0].status == "completed"
    assert client.transcript() == "A sentence that takes a while to say."
    await close(client)


# -- commentary, context, session.update ------------------------------------------------


async def test_commentary_is_spoken_as_asked(emulator):
    emulator.live_silence = False
    emulator.reply_factory = say_as_asked(Reply("Anything else?"))
    client = await connect(emulator)
    await client.start()
    await client.commentary(SAY_INSTRUCTION + "Welcome to Acme.")
    thinking: ThinkingAppendEventParam = {
        "type": "session.thinking.append",
        "content": "The caller is a VIP.",
        "delegation_id": None,
    }
    await client.send(thinking)
    await client.send(
        {"type": "session.instructions.append", "content": "Be warm.", "delegation_id": None}
    )
    await client.commentary(KEYPAD_INPUT + "12#")
    session = emulator.live_sessions[0]
    await client.until(lambda: len(session.responses) == 2 and not session.responses[1].active)
    assert [r.reply.text for r in session.responses if r.reply] == [
        "Welcome to Acme.",
        "Anything else?",
    ]
    assert [r.trigger for r in session.responses] == ["commentary", "commentary"]
    assert [c.kind for c in session.contexts] == [
        "commentary",
        "thinking",
        "instructions",
        "commentary",
    ]
    for kind in ("commentary", "thinking", "instructions"):
        ack = await client.next_of(f"session.{kind}.appended")
        assert ack["start_ms"] == ack["end_ms"]
    assert last_keypad_input(session) == "12#"
    assert words_to_say(session, "commentary") is None  # the latest commentary is the keypad
    assert words_to_say(session, "vad") is None
    await client.until(lambda: client.transcript() == "Welcome to Acme.Anything else?")
    await close(client)


async def test_commentary_without_a_scripted_reply_is_spoken_itself(emulator):
    client = await connect(emulator)
    await client.start()
    await client.commentary("We are closed on Sundays.")
    await client.until(lambda: client.transcript() == "We are closed on Sundays.")
    await close(client)


async def test_session_update_changes_delegation_settings_only(emulator):
    client = await connect(emulator)
    await client.start(RESPONSES)
    update: SessionUpdateEventParam = {
        "type": "session.update",
        "event_id": "u1",
        "session": {"delegation": {"type": "responses", "responses": {"tools": []}}},
    }
    await client.send(update)
    updated = await client.next_of("session.updated")
    assert updated["client_event_id"] == "u1"
    assert updated["session"]["delegation"]["responses"] == {"model": "gpt-5.2", "tools": []}
    await client.send({"type": "session.update", "session": {"delegation": {"type": "client"}}})
    assert (await client.next_of("error"))["error"]["param"] == "session.delegation.type"
    await client.send({"type": "session.update", "session": {"audio": {}}}, check=False)
    assert (await client.next_of("error", 1))["error"]["code"] == "unknown_parameter"
    await close(client)


# -- delegation --------------------------------------------------------------------------


async def test_responses_delegation_round_trip(emulator):
    emulator.live_silence = False
    emulator.replies.extend(
        [
            Reply("Let me check.", function_call=FunctionCall("lookup_order", {"order": 42})),
            Reply("Your order ships today."),
        ]
    )
    client = await connect(emulator)
    await client.start(RESPONSES)
    await client.feed(caller())
    created = await client.next_of("session.delegation.created")
    delegation = created["delegation"]
    assert delegation["target"] == "responses" and delegation["response_id"].startswith("resp_")
    await client.until(lambda: client.inner("response.completed"))
    item = client.inner("response.output_item.done")[0]["item"]
    assert (item["type"], item["status"], item["name"], item["arguments"]) == (
        "function_call",
        "completed",
        "lookup_order",
        '{"order": 42}',
    )
    kinds = [e["event"]["type"] for e in client.of("response.event")]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert {e["delegation_id"] for e in client.of("response.event")} == {delegation["id"]}
    assert client.inner("response.completed")[0]["response"]["usage"]["output_tokens"] > 0
    create: ResponseCreateEventParam = {"type": "response.create", "event_id": "early"}
    await client.send(create)
    assert (await client.next_of("error"))["error"]["code"] == "function_call_outputs_required"
    output: ResponseItemCreateEventParam = {
        "type": "response.item.create",
        "item": {
            "type": "function_call_output",
            "call_id": item["call_id"],
            "output": '{"ships": "today"}',
        },
    }
    await client.send(output)
    await client.send({"type": "response.create"})
    await client.until(lambda: len(client.inner("response.completed")) == 2)
    assert client.inner("response.output_text.done")[0]["text"] == "Your order ships today."
    await client.until(lambda: client.transcript() == "Let me check.Your order ships today.")
    session = emulator.live_sessions[0]
    assert [(o.call_id, o.output) for o in session.function_outputs] == [
        (item["call_id"], '{"ships": "today"}')
    ]
    assert [r.trigger for r in session.responses] == ["vad", "response.create"]
    assert session.responses[0].call_id == item["call_id"]
    assert session.delegations[0].response_ids == [
        delegation["response_id"],
        session.responses[1].response_id,
    ]
    await client.send(output)
    assert (await client.next_of("error", 1))["error"]["param"] == "item.call_id"
    await close(client)


async def test_a_function_the_session_does_not_declare_is_flagged(emulator):
    emulator.replies.append(Reply("Sure.", function_call=FunctionCall("cancel_order", {})))
    client = await connect(emulator)
    await client.start(RESPONSES)
    await client.commentary("Do it.")
    await client.until(lambda: client.transcript() == "Sure.")
    assert client.of("session.delegation.created") == []
    assert [e.code for e in emulator.validation_errors] == ["unknown_tool"]
    await close(client)


async def test_client_delegation_is_answered_by_commentary(emulator):
    emulator.replies.extend(
        [
            Reply("One moment.", function_call=FunctionCall("lookup_order", {"order": 1})),
            Reply("Found it."),
        ]
    )
    client = await connect(emulator)
    await client.start()
    await client.commentary("Look it up.")
    created = await client.next_of("session.delegation.created")
    assert (
        created["delegation"]["target"] == "client" and "response_id" not in created["delegation"]
    )
    await client.commentary("Unrelated.", delegation_id="deleg_nope")
    assert (await client.next_of("error"))["error"]["param"] == "delegation_id"
    await client.send({"type": "response.create"})
    assert (await client.next_of("error", 1))["error"]["code"] == "invalid_request"
    await client.commentary("Order 1 shipped.", delegation_id=created["delegation"]["id"])
    await client.until(lambda: client.transcript() == "One moment.Found it.")
    session = emulator.live_sessions[0]
    assert session.delegations[0].answered and session.delegations[0].function == "lookup_order"
    await close(client)


# -- faults ---------------------------------------------------------------------------------


async def test_handshake_faults_count_across_both_paths(emulator):
    emulator.refuse_handshakes(2, 429)
    with pytest.raises(InvalidStatus) as realtime:
        await websockets.connect(emulator.url + "?model=gpt-realtime", additional_headers=AUTH)
    with pytest.raises(InvalidStatus) as live:
        await websockets.connect(emulator.live_url, additional_headers=AUTH)
    assert realtime.value.response.status_code == live.value.response.status_code == 429
    assert json.loads(live.value.response.body)["error"]["code"] == "rate_limit_exceeded"
    emulator.hang_handshakes(1)
    with pytest.raises(TimeoutError):
        await websockets.connect(emulator.live_url, additional_headers=AUTH, open_timeout=0.3)
    assert emulator.hung_handshakes[0].path == "/v1/live/sessions"
    client = await connect(emulator)
    await client.start()
    await close(client)


async def test_rejected_session_start(emulator):
    emulator.reject_session_starts(1, "session.model", "model_not_found", "No such model.")
    client = await connect(emulator)
    await client.send({"type": "session.start", "event_id": "s1", "session": PCMU})
    error = await client.next_of("error")
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "model_not_found",
        "message": "No such model.",
        "param": "session.model",
        "client_event_id": "s1",
    }
    await asyncio.sleep(0.1)
    assert client.of("session.started") == [] and client.of("session.output_audio.delta") == []
    await client.start()
    await close(client)


async def test_stalled_model_sends_silence_only_until_the_caller_speaks(emulator):
    emulator.replies.extend([Reply("Never said."), Reply("Hello again.")])
    emulator.stall_next_responses(1)
    client = await connect(emulator)
    await client.start()
    await client.commentary("Speak.")
    await client.next_of("session.commentary.appended")
    count = len(client.of("session.output_audio.delta"))
    await client.until(lambda: len(client.of("session.output_audio.delta")) >= count + 5)
    session = emulator.live_sessions[0]
    assert session.responses[0].status == "queued" and client.transcript() == ""
    assert set(client.audio()) == {0xFF}
    await client.feed(caller())
    await client.processed(session)
    assert session.responses[0].status == "cancelled"
    await client.until(lambda: client.transcript() == "Hello again.")
    await close(client)


async def test_a_dropped_connection_has_no_close_frame(emulator):
    client = await connect(emulator)
    await client.start()
    await emulator.drop_connections()
    await asyncio.wait_for(client._reader, 5)
    assert isinstance(client.closed_with, ConnectionClosedError)
    assert client.closed_with.rcvd is None
    assert emulator.live_sessions[0].closed and emulator.live_sessions[0].close_reason is None


async def test_session_closed_for_content_instead_of_a_turn(emulator):
    emulator.close_on_next_turns(1, "content")
    client = await connect(emulator)
    await client.start()
    await client.commentary("Say something.")
    closed = await client.next_of("session.closed")
    assert closed["reason"] == "content" and closed["session"]["status"] == "active"
    await client._reader
    assert client.ws.close_code == 1000
    assert emulator.live_sessions[0].responses[0].status == "closed"
    await close(client)


async def test_session_cap_and_server_side_end(emulator):
    emulator.session_max_secs = 0.3
    client = await connect(emulator)
    started = await client.start()
    assert started["session"]["expires_at"] > 0
    assert (await client.next_of("session.closed"))["reason"] == "expired"
    await close(client)
    emulator.session_max_secs = 3600
    other = await connect(emulator)
    await other.start()
    await emulator.end_live_sessions("remote_hangup")
    assert (await other.next_of("session.closed"))["reason"] == "remote_hangup"
    await close(other)


@pytest.mark.parametrize("code", ["server_error", "insufficient_quota"])
async def test_failed_delegated_response(emulator, code):
    emulator.replies.append(Reply("Checking.", function_call=FunctionCall("lookup_order", {})))
    emulator.fail_next_delegations(1, code)
    client = await connect(emulator)
    await client.start(RESPONSES)
    await client.commentary("Check.")
    failed = await client.next_of("response.event", 1)
    assert [e["event"]["type"] for e in client.of("response.event")] == [
        "response.created",
        "response.failed",
    ]
    response = failed["event"]["response"]
    assert response["status"] == "failed"
    if code == "server_error":
        assert response["error"]["code"] == "server_error"
        assert client.of("error") == []
    else:
        assert response["error"] is None
        error = (await client.next_of("error"))["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    session = emulator.live_sessions[0]
    await client.until(lambda: session.responses[0].status == "failed")
    assert client.transcript() == "" and session.delegations[0].failed
    await close(client)
