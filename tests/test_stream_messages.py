"""Twilio Media Streams messages are validated by type before use.

The models parse Twilio's own examples (and the playground's and the test caller's), refuse
every odd shape, and an odd ``start`` closes the stream with 1008, opens no OpenAI session and
logs one warning line, never a traceback, over real sockets.
"""

import asyncio
import base64
import json
import logging
import secrets
import uuid

import pytest
from conftest import AUTH_TOKEN, phone_call
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger
from pydantic import ValidationError
from websockets.asyncio.client import connect as ws_connect

from pipecat_realtime_twilio.phone.messages import (
    MAX_PARAMETER_CHARS,
    MAX_PARAMETERS,
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    describe_error,
    parse_message,
)
from pipecat_realtime_twilio.phone.serializer import MAX_MESSAGE_BYTES, TwilioSerializer
from pipecat_realtime_twilio.phone.stream import StreamRejected, read_stream_start
from pipecat_realtime_twilio.testing.caller import TwilioCaller, make_sid

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA" + "2" * 32
ACCOUNT_SID = "AC" + "a" * 32
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_message(
    call_sid: str = CALL_SID,
    account_sid: str = ACCOUNT_SID,
    stream_sid: str = STREAM_SID,
    parameters: dict | None = None,
) -> dict:
    """A ``start`` message as Twilio sends it (its documentation's example, our SIDs)."""
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"FirstName": "Jane", "LastName": "Doe"}
            if parameters is None
            else parameters,
        },
        "streamSid": stream_sid,
    }


def changed(path: str, value) -> str:
    """The JSON of a ``start`` message with the value at ``path`` (``a.b.c``) replaced."""
    message = start_message()
    *parents, last = path.split(".")
    part = message
    for key in parents:
        part = part[key]
    part[last] = value
    return json.dumps(message)


HUGE_NUMBER = "9" * 5000  # Python's json cannot even write it; it is raw JSON here
ODD_STARTS = {
    "non-numeric sampleRate": changed("start.mediaFormat.sampleRate", "abc"),
    "sampleRate as a string": changed("start.mediaFormat.sampleRate", "8000"),
    "sampleRate a 5,000-digit number": changed("start.mediaFormat.sampleRate", 0).replace(
        '"sampleRate": 0', f'"sampleRate": {HUGE_NUMBER}'
    ),
    "start is a list": changed("start", []),
    "mediaFormat is a list": changed("start.mediaFormat", []),
    "customParameters is a list": changed("start.customParameters", []),
    "5,000-digit token": changed("start.customParameters", {"token": HUGE_NUMBER}),
    "5,000-digit number as the token": changed("start.customParameters", {"token": 0}).replace(
        '"token": 0', f'"token": {HUGE_NUMBER}'
    ),
    "newline in callSid": changed(
        "start.callSid", CALL_SID + "\nERROR | forged line: transferring to +15550000000"
    ),
    "callSid is a number": changed("start.callSid", 12345),
    "streamSid is an object": changed("start.streamSid", {"sid": STREAM_SID}),
    "streamSid not a stream SID": changed("start.streamSid", "MZ123"),
    "accountSid missing": json.dumps(
        {**start_message(), "start": {**start_message()["start"], "accountSid": None}}
    ),
    "huge parameter value": changed("start.customParameters", {"note": "x" * 60_000}),
    "too many parameters": changed(
        "start.customParameters", {f"p{i}": "v" for i in range(MAX_PARAMETERS + 1)}
    ),
    "message over 64 KB": changed(
        "start.customParameters", {f"p{i}": "v" * 1000 for i in range(MAX_PARAMETERS)}
    )
    + " " * MAX_MESSAGE_BYTES,
    "8 kHz is not its rate": changed("start.mediaFormat.sampleRate", 16000),
    "not JSON": "{start",
    "a media message instead": json.dumps(
        {"event": "media", "streamSid": STREAM_SID, "media": {"payload": "//8="}}
    ),
}


class FakeSocket:
    """What read_stream_start uses of a websocket: receive(), from a list of messages."""

    def __init__(self, *messages: str | bytes | None):
        self.messages = list(messages)

    async def receive(self) -> dict:
        if not self.messages:
            await asyncio.sleep(3600)
        message = self.messages.pop(0)
        if message is None:
            return {"type": "websocket.disconnect", "code": 1000}
        key = "bytes" if isinstance(message, bytes) else "text"
        return {"type": "websocket.receive", key: message}


def read_start(*messages: str | bytes | None, timeout: float = 5.0):
    return asyncio.run(read_stream_start(FakeSocket(*messages), timeout))  # type: ignore[arg-type]


# --- the models ------------------------------------------------------------------------------


def test_twilios_examples_parse_and_unknown_fields_are_ignored():
    connected = parse_message(json.dumps({**CONNECTED, "somethingNew": [1, 2]}))
    assert isinstance(connected, Connected)

    start = parse_message(json.dumps({**start_message(), "futureField": {"x": 1}}))
    assert isinstance(start, Start)
    assert (start.sid, start.start.call_sid, start.start.account_sid) == (
        STREAM_SID,
        CALL_SID,
        ACCOUNT_SID,
    )
    assert start.start.custom_parameters == {"FirstName": "Jane", "LastName": "Doe"}
    media_format = start.start.media_format
    assert (media_format.encoding, media_format.sample_rate, media_format.channels) == (
        "audio/x-mulaw",
        8000,
        1,
    )

    payload = base64.b64encode(b"\xff" * 160).decode()
    media = parse_message(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "3",
                "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": payload},
                "streamSid": STREAM_SID,
            }
        ).encode()  # binary frames parse too
    )
    assert isinstance(media, Media) and media.media.payload == payload

    dtmf = parse_message(
        json.dumps(
            {
                "event": "dtmf",
                "streamSid": STREAM_SID,
                "sequenceNumber": "5",
                "dtmf": {"track": "inbound_track", "digit": "1"},
            }
        )
    )
    assert isinstance(dtmf, Dtmf) and dtmf.dtmf.digit == "1"

    mark = parse_message(
        json.dumps(
            {
                "event": "mark",
                "sequenceNumber": "4",
                "streamSid": STREAM_SID,
                "mark": {"name": "my label"},
            }
        )
    )
    assert isinstance(mark, Mark) and mark.mark.name == "my label"

    stop = parse_message(
        json.dumps(
            {
                "event": "stop",
                "sequenceNumber": "5",
                "streamSid": STREAM_SID,
                "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
            }
        )
    )
    assert isinstance(stop, Stop)


def test_a_start_without_parameters_or_format_takes_twilios_defaults():
    message = start_message()
    del message["start"]["customParameters"], message["start"]["mediaFormat"]
    start = read_start(json.dumps(message))
    assert start.parameters == {}
    assert start.media_format == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


def test_the_test_callers_and_the_playgrounds_starts_are_valid():
    # What TwilioCaller.connect sends (make_sid) ...
    caller = start_message(make_sid("CA"), make_sid("AC"), make_sid("MZ"), {"token": "1.ab"})
    start = read_start(json.dumps(CONNECTED), json.dumps(caller))
    assert start.call_sid == caller["start"]["callSid"] and start.parameters == {"token": "1.ab"}
    # ... and what the playground page sends: "MZ" + crypto.randomUUID() without dashes,
    # the runner's "CA" + token_hex(16) and its placeholder account.
    page = start_message(
        "CA" + secrets.token_hex(16),
        "AC" + "0" * 32,
        "MZ" + str(uuid.uuid4()).replace("-", ""),
        {"bot": "default", "from": "playground", "to": "playground", "token": "x" * 80},
    )
    start = read_start(json.dumps(CONNECTED), json.dumps(page))
    assert start.stream_sid == page["streamSid"]
    # The top-level streamSid stands in for a missing start.streamSid.
    del page["start"]["streamSid"]
    assert read_start(json.dumps(page)).stream_sid == page["streamSid"]


def test_parameters_at_their_limits_are_accepted():
    parameters = {f"{i:0{MAX_PARAMETER_CHARS}d}": "v" * MAX_PARAMETER_CHARS for i in range(16)}
    start = read_start(json.dumps(start_message(parameters=parameters)))
    assert start.parameters == parameters
    many = {f"p{i}": str(i) for i in range(MAX_PARAMETERS)}
    assert read_start(json.dumps(start_message(parameters=many))).parameters == many


BAD_MESSAGES = {
    "not JSON": "{",
    "not an object": "[1, 2]",
    "no event": json.dumps({"streamSid": STREAM_SID}),
    "unknown event with a newline": json.dumps({"event": "surprise\nERROR | forged"}),
    "media without its object": json.dumps({"event": "media", "media": "AAAA"}),
    "payload a number": json.dumps({"event": "media", "media": {"payload": 42}}),
    "mark name a list": json.dumps({"event": "mark", "mark": {"name": ["m1"]}}),
    "mark name huge": json.dumps({"event": "mark", "mark": {"name": "m" * 10_000}}),
    "dtmf digit a number": json.dumps({"event": "dtmf", "dtmf": {"digit": 5}}),
    "stop a list": json.dumps({"event": "stop", "stop": []}),
    "start key with a newline": changed("start.customParameters", {"a\nERROR | forged": 1}),
    **{
        f"start: {name}": raw
        for name, raw in ODD_STARTS.items()
        # valid messages (refused only as a stream's first), and one refused on its size
        if name not in ("8 kHz is not its rate", "a media message instead", "message over 64 KB")
    },
}


@pytest.mark.parametrize("raw", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_odd_messages_are_refused_with_a_short_log_safe_reason(raw):
    with pytest.raises(ValidationError) as refused:
        parse_message(raw)
    reason = describe_error(refused.value)
    assert reason and len(reason) < 400
    assert not any(ord(ch) < 0x20 for ch in reason)  # one line, whatever the message held


@pytest.mark.parametrize(
    "raw",
    [
        BAD_MESSAGES["unknown event with a newline"],
        BAD_MESSAGES["start key with a newline"],
        json.dumps({"event": "dtmf", "dtmf": {"digit": "\nERROR | forged"}}),
        "\nERROR | forged " + "x" * 5000,
    ],
    ids=["event", "parameter name", "dtmf digit", "not JSON"],
)
async def test_a_malformed_message_mid_call_is_dropped_with_one_bounded_line(raw):
    serializer = TwilioSerializer(STREAM_SID, CALL_SID)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        assert await serializer.deserialize(raw) is None
    finally:
        logger.remove(sink)
    assert serializer.dropped_messages == 1
    assert len(lines) == 1 and lines[0].startswith("Dropped a Twilio message")
    assert "\n" not in lines[0] and len(lines[0]) < 700


# --- read_stream_start ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ODD_STARTS.values(), ids=ODD_STARTS.keys())
def test_an_odd_start_is_rejected_with_a_one_line_reason(raw):
    with pytest.raises(StreamRejected) as rejected:
        read_start(json.dumps(CONNECTED), raw)
    reason = str(rejected.value)
    assert reason and len(reason) < 400
    assert not any(ord(ch) < 0x20 for ch in reason)


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([json.dumps(CONNECTED), json.dumps(CONNECTED)], "expected 'start', got 'connected'"),
        ([json.dumps(CONNECTED), None], "the stream closed before 'start'"),
        ([json.dumps(CONNECTED)], "no 'start' message within 0.2 s"),
        ([b"\xff\xfe"], "not JSON"),
    ],
    ids=["connected twice", "closed", "silent", "binary junk"],
)
def test_anything_but_connected_then_start_is_rejected(messages, reason):
    with pytest.raises(StreamRejected, match=reason):
        read_start(*messages, timeout=0.2)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["start", "connected", "media", STREAM_SID, CALL_SID, ACCOUNT_SID]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
START_PATHS = [
    "event",
    "streamSid",
    "start",
    "start.streamSid",
    "start.callSid",
    "start.accountSid",
    "start.mediaFormat",
    "start.mediaFormat.sampleRate",
    "start.mediaFormat.encoding",
    "start.mediaFormat.channels",
    "start.customParameters",
    "start.customParameters.FirstName",
]
odd_starts = st.one_of(
    st.tuples(st.sampled_from(START_PATHS), json_values).map(lambda pv: changed(*pv)),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
)


@settings(max_examples=300, deadline=None)
@given(odd_starts)
def test_no_start_message_raises_anything_but_stream_rejected(raw):
    try:
        start = read_start(json.dumps(CONNECTED), raw, timeout=0.05)
    except StreamRejected as e:
        assert "\n" not in str(e)
    else:  # it was a valid start after all: then it says so exactly
        assert start.call_sid == CALL_SID and start.account_sid == ACCOUNT_SID


# --- over real sockets: the runner closes odd streams with 1008, quietly ----------------------


class LogCapture:
    """Loguru's lines (WARNING and up), and the stdlib records of uvicorn, while active."""

    def __init__(self):
        self.lines: list[str] = []
        self.exceptions: list = []
        self.stdlib: list[logging.LogRecord] = []
        self._sink: int | None = None
        self._handler = logging.Handler()
        self._handler.emit = self.stdlib.append  # type: ignore[method-assign]

    def _add(self, message) -> None:
        record = message.record
        self.lines.append(f"{record['level'].name} | {record['message']}")
        if record["exception"] is not None:
            self.exceptions.append(record["exception"])

    def __enter__(self) -> "LogCapture":
        self._sink = logger.add(self._add, level="WARNING")
        for name in ("uvicorn", "uvicorn.error", ""):
            logging.getLogger(name).addHandler(self._handler)
        return self

    def __exit__(self, *exc) -> None:
        assert self._sink is not None
        logger.remove(self._sink)
        for name in ("uvicorn", "uvicorn.error", ""):
            logging.getLogger(name).removeHandler(self._handler)


async def send_stream(url: str, path: str, messages: list[str], *, sign: bool = True) -> int:
    """Open a media stream as Twilio does (signed), send ``messages``; the close code."""
    signer = TwilioCaller(server_url=url, public_url=url, auth_token=AUTH_TOKEN)
    public = url.replace("http://", "ws://", 1) + path
    headers = signer.signed_headers(public.split("?")[0]) if sign else {}
    async with ws_connect(
        signer.local_url(public, websocket=True),
        additional_headers=headers,
        max_size=None,
        open_timeout=10,
    ) as ws:
        for message in messages:
            await ws.send(message)
        await asyncio.wait_for(ws.wait_closed(), timeout=10)
        assert ws.close_code is not None
        return ws.close_code


# Over 64 KiB, uvicorn itself closes the stream (1009, runner/server.py's ws_max_size).
OVER_SOCKETS = {name: raw for name, raw in ODD_STARTS.items() if name != "message over 64 KB"}


@pytest.mark.call
@pytest.mark.parametrize("raw", OVER_SOCKETS.values(), ids=OVER_SOCKETS.keys())
async def test_an_odd_start_closes_the_stream_with_1008_and_one_warning(raw):
    async with phone_call() as (emulator, runner, caller):
        with LogCapture() as logs:
            code = await send_stream(
                caller.server_url, "/media-stream", [json.dumps(CONNECTED), raw]
            )
        assert code == 1008
        assert emulator.sessions == [] and runner.active == {} and not runner.finished
        assert len(logs.lines) == 1, logs.lines
        assert logs.lines[0].startswith("WARNING | Refused a media stream: ")
        assert "\n" not in logs.lines[0] and "Traceback" not in logs.lines[0]
        assert logs.exceptions == []
        assert [r for r in logs.stdlib if r.levelno >= logging.WARNING or r.exc_info] == []


@pytest.mark.call
@pytest.mark.parametrize(
    "raw",
    [ODD_STARTS["newline in callSid"], ODD_STARTS["non-numeric sampleRate"]],
    ids=["newline in callSid", "non-numeric sampleRate"],
)
async def test_an_odd_start_on_the_playground_stream_is_refused_the_same_way(raw):
    async with phone_call(settings={"playground_token": "pg-secret"}) as (emulator, runner, caller):
        with LogCapture() as logs:
            code = await send_stream(
                caller.server_url,
                "/playground/media-stream?token=pg-secret",
                [json.dumps(CONNECTED), raw],
                sign=False,
            )
        assert code == 1008
        assert emulator.sessions == [] and runner.active == {}
        assert len(logs.lines) == 1, logs.lines
        assert logs.lines[0].startswith("WARNING | Refused a playground stream: ")
        assert logs.exceptions == []
        assert [r for r in logs.stdlib if r.levelno >= logging.WARNING or r.exc_info] == []


@pytest.mark.call
async def test_a_valid_start_over_the_same_socket_is_not_refused_for_its_shape():
    """The control: the helper's well-formed start passes validation (admission then decides)."""
    async with phone_call() as (emulator, runner, caller):
        with LogCapture() as logs:
            code = await send_stream(
                caller.server_url,
                "/media-stream",
                [json.dumps(CONNECTED), json.dumps(start_message())],
            )
        assert code == 1008  # no stream token: refused by admission, not by the parser
        assert not any("Refused a media stream" in line for line in logs.lines), logs.lines
        assert any(CALL_SID in line for line in logs.lines), logs.lines
        assert emulator.sessions == []


@pytest.mark.call
async def test_a_stream_closed_before_its_start_logs_no_traceback():
    async with phone_call() as (emulator, runner, caller):
        with LogCapture() as logs:
            over = ODD_STARTS["message over 64 KB"]
            code = await send_stream(caller.server_url, "/media-stream", [over])
        assert code == 1009  # uvicorn's limit: the runner never reads it
        assert emulator.sessions == []
        assert [r for r in logs.stdlib if r.levelno >= logging.WARNING or r.exc_info] == []
