import base64
import json

import pytest
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    EndFrame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
)

from pipecat_realtime_twilio.audio import ulaw_to_pcm16
from pipecat_realtime_twilio.phone.serializer import MAX_MESSAGE_BYTES, TwilioSerializer


class _Setup:
    audio_in_sample_rate = 8000


@pytest.fixture
async def serializer():
    stops = []
    marks = []

    async def on_stop():
        stops.append(True)

    async def on_mark(name):
        marks.append(name)

    s = TwilioSerializer("MZ123", "CA123", on_stop=on_stop, on_mark=on_mark)
    await s.setup(_Setup())  # type: ignore[arg-type]
    s.stops = stops
    s.marks = marks
    return s


def media(payload: str) -> str:
    return json.dumps({"event": "media", "streamSid": "MZ123", "media": {"payload": payload}})


async def test_media_decodes_ulaw_exactly(serializer):
    ulaw = bytes(range(256))
    frame = await serializer.deserialize(media(base64.b64encode(ulaw).decode()))
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.sample_rate == 8000
    assert frame.audio == ulaw_to_pcm16(ulaw)


async def test_output_audio_encodes_back_to_the_same_ulaw(serializer):
    ulaw = bytes(range(256))
    frame = OutputAudioRawFrame(audio=ulaw_to_pcm16(ulaw), sample_rate=8000, num_channels=1)
    message = json.loads(await serializer.serialize(frame))
    assert message["event"] == "media" and message["streamSid"] == "MZ123"
    assert base64.b64decode(message["media"]["payload"]) == ulaw


async def test_interruption_becomes_clear_and_end_sends_nothing(serializer):
    assert json.loads(await serializer.serialize(InterruptionFrame())) == {
        "event": "clear",
        "streamSid": "MZ123",
    }
    assert await serializer.serialize(EndFrame()) is None


async def test_dtmf_mark_and_stop(serializer):
    dtmf = json.dumps({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "5"}})
    frame = await serializer.deserialize(dtmf)
    assert isinstance(frame, InputDTMFFrame) and frame.button == KeypadEntry.FIVE
    mark = await serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": "m1"}}))
    assert mark is None and serializer.marks == ["m1"]
    assert await serializer.deserialize(json.dumps({"event": "stop", "stop": {}})) is None
    assert serializer.stopped and serializer.stops == [True]


@pytest.mark.parametrize(
    "message",
    [
        "not json {",
        b"\xff\xfe\x00binary",
        "[1, 2, 3]",
        "null",
        json.dumps({"event": "unknown-event"}),
        json.dumps({"no": "event"}),
        media("!!!not-base64!!!"),
        json.dumps({"event": "media", "media": "not an object"}),
        json.dumps({"event": "media", "media": {"payload": 42}}),
        json.dumps({"event": "dtmf", "dtmf": {"digit": "X"}}),
        json.dumps({"event": "dtmf"}),
        json.dumps({"event": "mark", "mark": {}}),
        "x" * (MAX_MESSAGE_BYTES + 1),
        media(base64.b64encode(b"\x00" * MAX_MESSAGE_BYTES).decode()),
    ],
)
async def test_malformed_messages_are_dropped_never_raised(serializer, message):
    assert await serializer.deserialize(message) is None
    assert serializer.dropped_messages == 1
