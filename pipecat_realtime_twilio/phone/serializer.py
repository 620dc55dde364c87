#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Twilio Media Streams serializer that passes μ-law through and survives bad packets."""

import base64
import binascii
import json
from collections.abc import Awaitable, Callable

from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    AudioRawFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
)
from pipecat.serializers.twilio import TwilioFrameSerializer

from pipecat_realtime_twilio.audio import SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16

MAX_MESSAGE_BYTES = 64 * 1024
"""Largest Media Streams message accepted; a media packet is about 300 bytes."""

_LOGGED_IN_FULL = 20
_LOG_EVERY = 1000


def media_message(stream_sid: str, payload: str) -> str:
    """The ``media`` message that plays base64 μ-law ``payload`` on the phone."""
    return f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{payload}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    """The ``mark`` message Twilio echoes once the phone has played what came before it."""
    return f'{{"event":"mark","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}'


def clear_message(stream_sid: str) -> str:
    """The ``clear`` message that empties Twilio's playback buffer (pending marks echo)."""
    return f'{{"event":"clear","streamSid":"{stream_sid}"}}'


class TwilioSerializer(TwilioFrameSerializer):
    """Twilio Media Streams serializer for an 8 kHz pipeline.

    Extends Pipecat's ``TwilioFrameSerializer``:

    - At a pipeline rate of 8000 Hz audio is only decoded from and encoded to
      μ-law, with no resampling, and the round trip is bit-exact
      (see :mod:`pipecat_realtime_twilio.audio`). Other rates fall back to
      Pipecat's resampling path.
    - A malformed message (bad JSON, invalid base64, an unknown event or digit,
      an oversized message) is logged and dropped; it never raises, so the
      transport's receive loop, and the call, go on.
    - ``mark`` echoes go to ``on_mark`` (the phone output's playback clock)
      without a trip through the pipeline, and ``stop`` calls ``on_stop``, so
      the call can end at once when the caller hangs up.
    - It never hangs up through the REST API: the runner ends a call by
      closing the stream, which is what Twilio expects.
    """

    def __init__(
        self,
        stream_sid: str,
        call_sid: str | None = None,
        *,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        on_mark: Callable[[str], Awaitable[None]] | None = None,
    ):
        """Initialize the serializer.

        Args:
            stream_sid: The Media Stream SID from the ``start`` message.
            call_sid: The Call SID from the ``start`` message.
            on_stop: Called when Twilio reports the stream stopped (the caller hung up).
            on_mark: Called with the name of every mark Twilio echoes.
        """
        super().__init__(
            stream_sid,
            call_sid,
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        self._on_stop = on_stop
        self._on_mark = on_mark
        # Set by a RealtimeAgent right after the input transport: caller audio goes
        # to it as Twilio's base64 μ-law (the API's own format), not through the pipeline.
        self.caller_audio: Callable[[str, int], Awaitable[None]] | None = None
        self._dropped = 0
        self._stopped = False

    @property
    def stream_sid(self) -> str:
        """The Media Stream SID (settable for a call built before its stream started)."""
        return self._stream_sid

    @stream_sid.setter
    def stream_sid(self, value: str) -> None:
        self._stream_sid = value

    @property
    def dropped_messages(self) -> int:
        """How many malformed messages were dropped so far."""
        return self._dropped

    @property
    def stopped(self) -> bool:
        """Whether Twilio sent ``stop`` for this stream."""
        return self._stopped

    async def serialize(self, frame: Frame) -> str | bytes | None:
        """Serialize a frame into a Twilio Media Streams message.

        Args:
            frame: The frame to serialize.

        Returns:
            The JSON message, or None for frames that have none.
        """
        if isinstance(frame, (EndFrame, CancelFrame)):
            return None
        if isinstance(frame, InterruptionFrame):
            return clear_message(self._stream_sid)
        if isinstance(frame, AudioRawFrame) and frame.sample_rate == SAMPLE_RATE:
            if not frame.audio:
                return None
            payload = base64.b64encode(pcm16_to_ulaw(frame.audio)).decode("ascii")
            return media_message(self._stream_sid, payload)
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """Turn a Twilio Media Streams message into a frame.

        Never raises: anything that is not a well-formed message is logged and
        dropped.

        Args:
            data: The raw websocket message.

        Returns:
            The frame for the message, or None.
        """
        try:
            return await self._deserialize(data)
        except Exception as e:  # one bad packet must never end the call
            self._drop(f"{type(e).__name__}: {e}", data)
            return None

    async def _deserialize(self, data: str | bytes) -> Frame | None:
        if len(data) > MAX_MESSAGE_BYTES:
            self._drop(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}", data)
            return None
        try:
            message = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._drop("not JSON", data)
            return None
        if not isinstance(message, dict):
            self._drop("not a JSON object", data)
            return None

        event = message.get("event")
        if event == "media":
            return await self._media(message, data)
        if event == "dtmf":
            digit = _field(message, "dtmf", "digit")
            try:
                return InputDTMFFrame(KeypadEntry(digit if isinstance(digit, str) else ""))
            except ValueError:
                self._drop(f"unknown DTMF digit {digit!r}", data)
                return None
        if event == "mark":
            name = _field(message, "mark", "name")
            if not isinstance(name, str):
                self._drop("mark without a name", data)
                return None
            if self._on_mark:
                await self._on_mark(name)
            return None
        if event == "stop":
            if not self._stopped:
                self._stopped = True
                logger.info(f"Twilio stopped stream {self._stream_sid} (call {self._call_sid})")
                if self._on_stop:
                    await self._on_stop()
            return None
        if event in ("connected", "start"):
            logger.debug(f"Ignoring a repeated '{event}' message on stream {self._stream_sid}")
            return None
        self._drop(f"unknown event {event!r}", data)
        return None

    async def _media(self, message: dict, data: str | bytes) -> Frame | None:
        payload = _field(message, "media", "payload")
        if not isinstance(payload, str):
            self._drop("media without a payload", data)
            return None
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._drop("media payload is not valid base64", data)
            return None
        if not ulaw:
            return None
        if self.caller_audio is not None:
            await self.caller_audio(payload, len(ulaw))
            return None
        if self._sample_rate not in (0, SAMPLE_RATE):
            return await super().deserialize(data)  # Pipecat's resampling path
        return InputAudioRawFrame(
            audio=ulaw_to_pcm16(ulaw), sample_rate=SAMPLE_RATE, num_channels=1
        )

    def _drop(self, reason: str, data: str | bytes) -> None:
        self._dropped += 1
        if self._dropped <= _LOGGED_IN_FULL or self._dropped % _LOG_EVERY == 0:
            preview = data[:120] if isinstance(data, (str, bytes)) else repr(data)[:120]
            logger.warning(
                f"Dropped a Twilio message on stream {self._stream_sid} ({reason}; "
                f"{self._dropped} dropped so far): {preview!r}"
            )


def _field(message: dict, section: str, key: str) -> object:
    part = message.get(section)
    return part.get(key) if isinstance(part, dict) else None
