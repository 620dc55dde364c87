"""Tests for the Twilio caller simulator against a tiny bot server defined here."""

import asyncio
import base64
import json
import struct
import wave
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import (
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, VoiceResponse
from websockets.exceptions import InvalidStatus

from pipecat_realtime_twilio.audio import ulaw_to_pcm16
from pipecat_realtime_twilio.testing.caller import CallRejected, TwilioCaller
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.server import LocalServer
from pipecat_realtime_twilio.testing.sounds import load_wav_as_ulaw, silence, tone, write_ulaw_wav
from pipecat_realtime_twilio.testing.twiml import parse_twiml

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://bot.example.com"
STREAM_URL = "wss://bot.example.com/media-stream?room=7"
PATTERN = bytes((i * 37 + i // 160) % 256 for i in range(4000))  # 500 ms, non-periodic per frame


class Bot:
    """A minimal bot server that checks signatures and runs a per-test websocket scenario."""

    def __init__(self):
        self.validator = RequestValidator(AUTH_TOKEN)
        self.webhooks: list[dict] = []
        self.connected: dict | None = None
        self.start: dict | None = None
        self.inbox: list[tuple[float, dict]] = []
        self.disconnected_at: float | None = None
        self.scenario: Callable[[Bot], Awaitable[None]] = Bot.wait_for_hangup
        self.ws: WebSocket | None = None
        self.app = self._build_app()

    @property
    def stream_sid(self) -> str:
        assert self.start is not None
        return self.start["streamSid"]

    def events(self, event: str) -> list[dict]:
        return [msg for _, msg in self.inbox if msg.get("event") == event]

    async def send(self, message: dict) -> None:
        assert self.ws is not None
        await self.ws.send_text(json.dumps(message))

    async def send_audio(self, ulaw: bytes) -> None:
        payload = base64.b64encode(ulaw).decode()
        await self.send(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
        )

    async def send_mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_clear(self) -> None:
        await self.send({"event": "clear", "streamSid": self.stream_sid})

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)

    async def wait_for_hangup(self) -> None:
        await self.wait(lambda: self.disconnected_at is not None, timeout=10)

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        async def check(request: Request, url: str) -> dict[str, str] | None:
            params = dict(parse_qsl((await request.body()).decode()))
            signature = request.headers.get("X-Twilio-Signature", "")
            return params if self.validator.validate(url, params, signature) else None

        @app.post("/incoming")
        async def incoming(request: Request) -> Response:
            params = await check(request, PUBLIC + "/incoming")
            if params is None:
                return Response("bad signature", status_code=403)
            self.webhooks.append(params)
            response = VoiceResponse()
            connect = Connect(action="/after")
            stream = connect.stream(url=STREAM_URL)
            stream.parameter(name="caller", value=params["From"])
            stream.parameter(name="mode", value="test")
            response.append(connect)
            response.say("Goodbye")
            response.hangup()
            return Response(str(response), media_type="text/xml")

        @app.post("/after")
        async def after(request: Request) -> Response:
            params = await check(request, PUBLIC + "/after")
            if params is None:
                return Response("bad signature", status_code=403)
            self.webhooks.append(params)
            return Response("<Response><Hangup/></Response>", media_type="text/xml")

        @app.websocket("/media-stream")
        async def media_stream(ws: WebSocket) -> None:
            signature = ws.headers.get("x-twilio-signature", "")
            if not self.validator.validate(STREAM_URL, {}, signature):
                await ws.close(code=1008)
                return
            await ws.accept()
            self.ws = ws
            self.connected = json.loads(await ws.receive_text())
            self.start = json.loads(await ws.receive_text())
            reader = asyncio.create_task(self._read(ws))
            try:
                await self.scenario(self)
            finally:
                reader.cancel()

        return app

    async def _read(self, ws: WebSocket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self.inbox.append((loop.time(), json.loads(await ws.receive_text())))
        except WebSocketDisconnect:
            self.disconnected_at = loop.time()


@pytest.fixture
async def bot():
    bot = Bot()
    async with LocalServer(bot.app) as server:
        bot.url = server.url
        yield bot


def make_caller(bot: Bot, **kwargs) -> TwilioCaller:
    options = {"server_url": bot.url, "public_url": PUBLIC, "auth_token": AUTH_TOKEN}
    return TwilioCaller(**(options | kwargs))


# --------------------------------------------------------------------------------------------
# Webhook, TwiML and signatures
# --------------------------------------------------------------------------------------------


@pytest.mark.call
async def test_dial_posts_signed_webhook_and_parses_twiml(bot):
    async with make_caller(bot, from_number="+15557654321") as caller:
        result = await caller.dial()

    assert result.status == 200
    assert result.content_type.startswith("text/xml")
    assert result.stream_url == STREAM_URL
    assert result.parameters == {"caller": "+15557654321", "mode": "test"}
    assert result.connect_action == "/after"
    assert result.action_url == PUBLIC + "/after"
    assert result.verb_names == ["Connect", "Say", "Hangup"]
    assert [verb.name for verb in result.after_connect] == ["Say", "Hangup"]
    assert result.after_connect[0].text == "Goodbye"
    assert "<Connect" in result.twiml

    (params,) = bot.webhooks
    assert params["CallSid"] == caller.call_sid and len(caller.call_sid) == 34
    assert params["AccountSid"].startswith("AC") and len(params["AccountSid"]) == 34
    assert params["CallStatus"] == "ringing"
    assert params["Direction"] == "inbound"
    assert params["ApiVersion"] == "2010-04-01"
    assert params["From"] == params["Caller"] == "+15557654321"
    assert params["To"] == params["Called"] == "+15550002222"


@pytest.mark.call
async def test_wrong_token_is_rejected_by_webhook_and_websocket(bot):
    async with make_caller(bot, auth_token="not-the-token") as caller:
        with pytest.raises(CallRejected) as rejected:
            await caller.dial()
        assert rejected.value.status == 403
        assert "bad signature" in rejected.value.body

        # The websocket upgrade is signed over the wss URL from the TwiML.
        caller.load_twiml(f'<Response><Connect><Stream url="{STREAM_URL}"/></Connect></Response>')
        with pytest.raises(InvalidStatus) as refused:
            await caller.connect()
        assert refused.value.response.status_code == 403

    async with make_caller(bot, sign=False) as caller:
        with pytest.raises(CallRejected):
            await caller.dial()


def test_parse_twiml_without_stream():
    result = parse_twiml("<Response><Say>Busy</Say><Reject reason='busy'/></Response>")
    assert result.stream_url is None
    assert result.verb_names == ["Say", "Reject"]
    assert result.verbs[1].attributes == {"reason": "busy"}


# --------------------------------------------------------------------------------------------
# What the caller sends
# --------------------------------------------------------------------------------------------


@pytest.mark.call
async def test_start_message_and_realtime_media_packets(bot):
    async def scenario(bot: Bot) -> None:
        await bot.wait(lambda: len(bot.events("media")) >= 30)
        await bot.ws.close()

    bot.scenario = scenario
    speech = tone(100, freq=700)
    async with make_caller(bot) as caller:
        await caller.call()
        said = caller.say(speech)
        await asyncio.wait_for(said, timeout=2)
        await caller.wait_ended()

    assert bot.connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = bot.start
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["streamSid"] == caller.stream_sid and caller.stream_sid.startswith("MZ")
    assert start["start"] == {
        "accountSid": caller.account_sid,
        "streamSid": caller.stream_sid,
        "callSid": caller.call_sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"caller": "+15550001111", "mode": "test"},
    }

    media = [(when, msg) for when, msg in bot.inbox if msg["event"] == "media"]
    assert len(media) >= 30
    payloads = bytearray()
    for index, (_, msg) in enumerate(media):
        assert msg["streamSid"] == caller.stream_sid
        assert msg["sequenceNumber"] == str(index + 2)
        assert msg["media"]["track"] == "inbound"
        assert msg["media"]["chunk"] == str(index + 1)
        assert msg["media"]["timestamp"] == str(index * 20)
        payload = base64.b64decode(msg["media"]["payload"])
        assert len(payload) == 160
        payloads += payload
    # Real time: 30 packets span about 580 ms (generous bounds, no performance claim).
    span = media[29][0] - media[0][0]
    assert 0.4 < span < 1.5
    assert bytes(payloads) == bytes(caller.sent_audio[: len(payloads)])
    assert speech in payloads  # the tone went out contiguously, the rest is silence
    assert set(payloads.replace(speech, b"")) == {0xFF}


@pytest.mark.call
async def test_dtmf_events(bot):
    async with make_caller(bot) as caller:
        await caller.call()
        await caller.press("12#", gap_ms=10)
        with pytest.raises(ValueError):
            await caller.press("5x")
        await bot.wait(lambda: len(bot.events("dtmf")) == 3)
    dtmf = bot.events("dtmf")
    assert [msg["dtmf"] for msg in dtmf] == [
        {"track": "inbound_track", "digit": digit} for digit in "12#"
    ]
    assert all(msg["streamSid"] == caller.stream_sid for msg in dtmf)
    numbers = [int(msg["sequenceNumber"]) for _, msg in bot.inbox]
    assert numbers == list(range(2, 2 + len(numbers)))


@pytest.mark.call
async def test_hangup_sends_stop_and_closes(bot):
    async with make_caller(bot) as caller:
        await caller.call()
        await bot.wait(lambda: len(bot.events("media")) >= 3)
        await caller.hangup()
        await bot.wait(lambda: bot.disconnected_at is not None)

    last = bot.inbox[-1][1]
    assert last == {
        "event": "stop",
        "sequenceNumber": last["sequenceNumber"],
        "streamSid": caller.stream_sid,
        "stop": {"accountSid": caller.account_sid, "callSid": caller.call_sid},
    }
    assert int(last["sequenceNumber"]) == len(bot.inbox) + 1
    assert caller.hung_up_at is not None and caller.stream_ended_at is None
    assert caller.ended
    with pytest.raises(RuntimeError):
        caller.say(silence(20))


# --------------------------------------------------------------------------------------------
# Twilio's side: SharedKey signing, stream status callbacks, the debugger, REST updates
# --------------------------------------------------------------------------------------------

SHARED_KEY = "shared-key-secret-0123456789"


class StatusBot:
    """A bot server whose TwiML asks for status callbacks; it checks either signature."""

    def __init__(self, *, shared_key: str | None = None, close_stream: bool = False):
        self.shared_key = shared_key
        self.close_stream = close_stream
        self.requests: list[tuple[str, dict, dict]] = []  # (path, params, signing headers)
        self.refused: list[str] = []
        self.stream_done = asyncio.Event()
        self.app = FastAPI()
        self.app.post("/incoming")(self.incoming)
        self.app.post("/status")(self.status)
        self.app.websocket("/media-stream")(self.media_stream)

    def valid(self, url: str, params: dict, headers) -> bool:
        settings = headers.get(SIGNATURE_SETTINGS_HEADER)
        secret = self.shared_key if settings else AUTH_TOKEN
        if secret is None:
            return False
        algorithm = get_signature_algorithm(settings)
        signature = headers.get("X-Twilio-Signature", "")
        return RequestValidator(secret).validate(url, params, signature, algorithm)

    async def _checked(self, request: Request, path: str) -> dict | None:
        params = dict(parse_qsl((await request.body()).decode()))
        if not self.valid(PUBLIC + path, params, request.headers):
            self.refused.append(path)
            return None
        signing = {k: v for k, v in request.headers.items() if k.startswith("x-twilio")}
        self.requests.append((path, params, signing))
        return params

    async def incoming(self, request: Request) -> Response:
        if await self._checked(request, "/incoming") is None:
            return Response(status_code=403)
        response = VoiceResponse()
        connect = Connect(action="/after")
        connect.stream(url=STREAM_URL, status_callback="/status", status_callback_method="POST")
        response.append(connect)
        return Response(str(response), media_type="text/xml")

    async def status(self, request: Request) -> Response:
        ok = await self._checked(request, "/status") is not None
        return Response(status_code=204 if ok else 403)

    async def media_stream(self, ws: WebSocket) -> None:
        if not self.valid(STREAM_URL, {}, ws.headers):
            self.refused.append("/media-stream")
            await ws.close(code=1008)
            return
        await ws.accept()
        try:
            await ws.receive_text()  # connected
            await ws.receive_text()  # start
            if self.close_stream:
                await ws.close(code=1000)
                return
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            self.stream_done.set()

    def events(self) -> list[str]:
        return [params["StreamEvent"] for path, params, _ in self.requests if path == "/status"]


@pytest.mark.call
async def test_a_shared_key_signs_every_request_with_hmac_sha256():
    status_bot = StatusBot(shared_key=SHARED_KEY)
    async with LocalServer(status_bot.app) as server:
        options = {"server_url": server.url, "public_url": PUBLIC, "auth_token": "unused"}
        async with TwilioCaller(**options, shared_key_secret=SHARED_KEY) as caller:
            await caller.call()
            await caller.wait_until(lambda: status_bot.events() == ["stream-started"])
            await caller.hangup()
            await caller.wait_until(lambda: len(caller.stream_callbacks) == 2)
        assert status_bot.refused == []
        assert status_bot.events() == ["stream-started", "stream-stopped"]
        settings = "key=webhooks_sharedkey_test,algorithm=HMAC_SHA256"
        for _, _, signing in status_bot.requests:
            assert signing["x-twilio-webhooks-signature-settings"] == settings
        # Signed with the auth token instead, the shared-key server refuses it all.
        status_bot.shared_key = None
        async with TwilioCaller(**options, shared_key_secret=SHARED_KEY) as caller:
            with pytest.raises(CallRejected):
                await caller.dial()


@pytest.mark.call
async def test_status_callbacks_and_the_debugger_when_the_server_closes_the_stream():
    status_bot = StatusBot(close_stream=True)
    async with LocalServer(status_bot.app) as server:
        options = {"server_url": server.url, "public_url": PUBLIC, "auth_token": AUTH_TOKEN}
        async with TwilioCaller(**options) as caller:
            await caller.call()
            await caller.wait_ended()
            await caller.wait_until(lambda: len(caller.stream_callbacks) == 2)
            assert [code for _, code, _ in caller.debugger_errors] == [31921]
            assert [(e, s) for _, e, s in caller.stream_callbacks] == [
                ("stream-started", 204),
                ("stream-stopped", 204),
            ]
            assert await caller.report_stream_error("31920 Handshake") == 204
        [*_, (_, error, _)] = status_bot.requests
        assert error["StreamEvent"] == "stream-error" and error["StreamError"] == "31920 Handshake"
        assert {p["StreamSid"] for path, p, _ in status_bot.requests if path == "/status"} == {
            caller.stream_sid
        }
        assert status_bot.refused == []

        # A stream the caller (Twilio) ends is no error; a refused upgrade is 31920.
        status_bot.close_stream = False
        async with TwilioCaller(**options) as caller:
            await caller.call()
            await caller.hangup()
            assert caller.debugger_errors == []
        async with TwilioCaller(**(options | {"auth_token": "wrong"})) as caller:
            caller.load_twiml(
                f'<Response><Connect><Stream url="{STREAM_URL}"/></Connect></Response>'
            )
            with pytest.raises(InvalidStatus):
                await caller.connect()
            assert [code for _, code, _ in caller.debugger_errors] == [31920]


@pytest.mark.call
async def test_a_rest_update_ends_the_stream_from_twilios_side():
    status_bot = StatusBot()
    async with LocalServer(status_bot.app) as server, FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        options = {"server_url": server.url, "public_url": PUBLIC, "auth_token": AUTH_TOKEN}
        async with TwilioCaller(**options, account_sid=rest.account_sid) as caller:
            assert rest.attach(caller)["status"] == "in-progress"
            await caller.call()
            twiml = "<Response><Dial><Sip>sip:alice@example.com</Sip></Dial></Response>"
            client = Client(rest.account_sid, AUTH_TOKEN, http_client=AsyncTwilioHttpClient())
            client.api.base_url = rest.url
            try:
                await client.calls(caller.call_sid).update_async(twiml=twiml)
            finally:
                await client.http_client.close()
            await caller.wait_ended()
            await asyncio.wait_for(status_bot.stream_done.wait(), 5)
            assert caller.ended_by_twilio_at is not None and caller.hung_up_at is None
            assert caller.stream_ended_at is None and caller.debugger_errors == []
            [dial] = caller.redirect_result.verbs
            assert (dial.name, dial.children[0].name) == ("Dial", "Sip")
            assert caller.sent[-1][1]["event"] == "stop"
            await caller.wait_until(lambda: len(caller.stream_callbacks) == 2)
        assert status_bot.events() == ["stream-started", "stream-stopped"]
        assert rest.hook_errors == []


# --------------------------------------------------------------------------------------------
# The phone's playback
# --------------------------------------------------------------------------------------------


@pytest.mark.call
async def test_playback_is_bit_exact_and_mark_waits_for_its_audio(bot):
    async def scenario(bot: Bot) -> None:
        # Uneven chunk sizes, all at once: the phone buffers and plays 160 bytes per tick.
        for start, end in ((0, 1000), (1000, 1333), (1333, 4000)):
            await bot.send_audio(PATTERN[start:end])
        await bot.send_mark("after-pattern")
        await bot.wait(lambda: bot.events("mark"))
        await bot.wait_for_hangup()

    bot.scenario = scenario
    async with make_caller(bot) as caller:
        await caller.call()
        await caller.wait_until(lambda: caller.marks_echoed, message="the mark echo")
        await bot.wait(lambda: bot.events("mark"))
        await caller.hangup()

    assert bytes(caller.heard) == PATTERN
    ((echo_time, name),) = caller.marks_echoed
    assert name == "after-pattern"
    last_byte_played = caller.play_time_of(len(PATTERN) - 1)
    first_byte_played = caller.play_time_of(0)
    assert echo_time >= last_byte_played
    assert echo_time - first_byte_played >= 0.5 - 1e-6  # the whole 500 ms played first
    ((mark_received, _),) = caller.marks_received
    assert mark_received < first_byte_played + 0.1  # the mark arrived long before its echo

    (echo,) = bot.events("mark")
    assert echo["mark"] == {"name": "after-pattern"}
    assert echo["streamSid"] == caller.stream_sid
    assert int(echo["sequenceNumber"]) > 1

    played = [entry for entry in caller.playback if entry[1]]
    assert [count for _, count, _ in played] == [160] * 25
    assert [offset for _, _, offset in played] == list(range(0, 4000, 160))
    assert caller.gaps() == []


@pytest.mark.call
async def test_mark_with_nothing_queued_is_echoed_at_once(bot):
    async def scenario(bot: Bot) -> None:
        await bot.send_mark("now")
        await bot.wait_for_hangup()

    bot.scenario = scenario
    async with make_caller(bot) as caller:
        await caller.call()
        await caller.wait_until(lambda: caller.marks_echoed)
        await bot.wait(lambda: bot.events("mark"))
    ((received, _),) = caller.marks_received
    ((echoed, name),) = caller.marks_echoed
    assert name == "now"
    assert echoed - received < 0.01


@pytest.mark.call
async def test_clear_drops_unplayed_audio_and_echoes_pending_marks(bot):
    long_audio = PATTERN * 4  # 2 s

    async def scenario(bot: Bot) -> None:
        await bot.send_audio(long_audio)
        await bot.send_mark("one")
        await bot.send_audio(long_audio)
        await bot.send_mark("two")
        await bot.wait(lambda: len(bot.events("mark")) == 2)
        await bot.send_audio(tone(100))
        await bot.wait_for_hangup()

    bot.scenario = scenario
    async with make_caller(bot) as caller:
        await caller.call()
        await caller.wait_heard(200)
        assert caller.marks_echoed == []
        await bot.send_clear()
        await caller.wait_until(lambda: len(caller.marks_echoed) == 2)
        heard_at_clear = len(caller.heard)
        await caller.wait_heard(heard_at_clear / 8 + 100)
        await caller.hangup()

    (clear_time,) = caller.clears
    assert [name for _, name in caller.marks_echoed] == ["one", "two"]
    assert all(0 <= when - clear_time < 0.01 for when, _ in caller.marks_echoed)
    assert [msg["mark"]["name"] for msg in bot.events("mark")] == ["one", "two"]
    # Only what had been played before the clear was heard, then the new audio.
    assert 200 * 8 <= heard_at_clear < 1000 * 8
    assert bytes(caller.heard[:heard_at_clear]) == long_audio[:heard_at_clear]
    assert bytes(caller.heard[heard_at_clear:]) == tone(100)


@pytest.mark.call
async def test_gaps_detects_an_underrun(bot):
    async def scenario(bot: Bot) -> None:
        await bot.send_audio(PATTERN[:1600])  # 200 ms
        await bot.wait(lambda: len(caller.heard) >= 1600)
        await asyncio.sleep(0.15)
        await bot.send_audio(PATTERN[1600:3200])
        await bot.wait_for_hangup()

    bot.scenario = scenario
    async with make_caller(bot) as caller:
        await caller.call()
        await caller.wait_heard(400)
        await caller.hangup()

    assert bytes(caller.heard) == PATTERN[:3200]
    ((gap_start, gap_ms),) = caller.gaps()
    assert 100 <= gap_ms < 600
    assert gap_start >= caller.play_time_of(1599)
    assert caller.gaps(min_ms=1000) == []


@pytest.mark.call
async def test_server_close_ends_stream_and_exposes_action(bot):
    async def scenario(bot: Bot) -> None:
        await bot.ws.close(code=1000)

    bot.scenario = scenario
    async with make_caller(bot) as caller:
        await caller.call()
        await caller.wait_ended()
        assert caller.stream_ended_at is not None and caller.hung_up_at is None
        assert caller.close_code == 1000
        assert caller.action_url == PUBLIC + "/after"
        follow = await caller.follow_action()
    assert follow.verb_names == ["Hangup"]
    assert bot.webhooks[-1]["CallStatus"] == "in-progress"
    assert bot.webhooks[-1]["CallSid"] == caller.call_sid


@pytest.mark.call
async def test_malformed_server_messages_are_recorded_not_fatal(bot):
    async def scenario(bot: Bot) -> None:
        sid = bot.stream_sid
        await bot.ws.send_text("this is not json")
        await bot.ws.send_bytes(b"\x00\x01")
        await bot.send({"event": "bogus", "streamSid": sid})
        await bot.send({"event": "media", "streamSid": sid, "media": {"payload": "@@@"}})
        await bot.send({"event": "media", "streamSid": "MZwrong", "media": {"payload": "AAAA"}})
        await bot.send({"event": "mark", "streamSid": sid})
        await bot.send_audio(PATTERN[:800])
        await bot.wait_for_hangup()

    bot.scenario = scenario
    async with make_caller(bot) as caller:
        await caller.call()
        await caller.wait_heard(100)
        await caller.hangup()
    assert len(caller.received) == 7
    assert len(caller.errors) == 6
    assert bytes(caller.heard) == PATTERN[:800]


# --------------------------------------------------------------------------------------------
# Audio helpers
# --------------------------------------------------------------------------------------------


def test_tone_and_silence():
    assert silence(20) == b"\xff" * 160
    sound = tone(250, freq=1000, amplitude=12000)
    assert len(sound) == 2000
    pcm = struct.unpack(f"<{len(sound)}h", ulaw_to_pcm16(sound))
    assert 11000 < max(pcm) <= 12500 and min(pcm) < -11000


def test_wav_round_trip_and_conversion(tmp_path):
    audio = tone(300, freq=500)
    path = tmp_path / "heard.wav"
    write_ulaw_wav(path, audio)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
    assert load_wav_as_ulaw(path) == audio

    # Stereo 16 kHz PCM: averaged to mono and resampled to 8 kHz.
    mono = struct.unpack(f"<{len(audio)}h", ulaw_to_pcm16(audio))
    upsampled = [mono[i // 2] for i in range(2 * len(mono))]
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(
            struct.pack(f"<{2 * len(upsampled)}h", *[s for s in upsampled for _ in "LR"])
        )
    converted = load_wav_as_ulaw(stereo)
    assert converted == audio  # sample-exact: every output position lands on an input sample

    # A μ-law WAV (format tag 7), which the stdlib wave module cannot read.
    ulaw_path = tmp_path / "ulaw.wav"
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(audio)) + audio
    ulaw_path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert load_wav_as_ulaw(ulaw_path) == audio
