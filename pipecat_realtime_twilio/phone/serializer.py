#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Twilio Media Streams serializer that passes μ-law through and survives bad packets."""

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

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
from pydantic import ValidationError

from pipecat_realtime_twilio.audio import SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16
from pipecat_realtime_twilio.logs import field
from pipecat_realtime_twilio.phone.inbound import InboundBudget
from pipecat_realtime_twilio.phone.messages import (
    Dtmf,
    Mark,
    Media,
    Stop,
    describe_error,
    parse_message,
)
from pipecat_realtime_twilio.phone.recording import CallRecorder

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
    - Every message is validated by type (see
      :mod:`~pipecat_realtime_twilio.phone.messages`). A malformed message (bad
      JSON, a field of the wrong type, invalid base64, an unknown event or digit,
      an oversized message) is logged and dropped; it never raises, so the
      transport's receive loop, and the call, go on.
    - Caller audio is let through at most a little faster than real time
      (:class:`~pipecat_realtime_twilio.phone.inbound.InboundBudget`); the excess
      is dropped before it goes anywhere, counted, and logged once per call.
    - With a :attr:`recorder`, every packet of caller audio is noted there as received
      (see :mod:`~pipecat_realtime_twilio.phone.recording`).
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
        inbound: InboundBudget | None = None,
    ):
        """Initialize the serializer.

        Args:
            stream_sid: The Media Stream SID from the ``start`` message.
            call_sid: The Call SID from the ``start`` message.
            on_stop: Called when Twilio reports the stream stopped (the caller hung up).
            on_mark: Called with the name of every mark Twilio echoes.
            inbound: The call's budget of caller audio (default: a little faster
                than real time, see :mod:`~pipecat_realtime_twilio.phone.inbound`).
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
        self.recorder: CallRecorder | None = None  # the call is recorded (set before it runs)
        self._inbound = inbound or InboundBudget()
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
    def caller_audio_dropped_bytes(self) -> int:
        """Bytes of caller audio dropped for arriving faster than real time."""
        return self._inbound.dropped_bytes

    @property
    def caller_audio_dropped_ms(self) -> float:
        """Milliseconds of caller audio dropped for arriving faster than real time."""
        return self._inbound.dropped_ms

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
            self._drop(f"{type(e).__name__}: {field(e, 120)}", data)
            return None

    async def _deserialize(self, data: str | bytes) -> Frame | None:
        if len(data) > MAX_MESSAGE_BYTES:
            self._drop(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}", data)
            return None
        try:
            message = parse_message(data)
        except ValidationError as e:
            self._drop(describe_error(e), data)
            return None

        if isinstance(message, Media):
            return await self._media(message.media.payload, data, message.media.timestamp)
        if isinstance(message, Dtmf):
            digit = message.dtmf.digit
            try:
                return InputDTMFFrame(KeypadEntry(digit))
            except ValueError:
                self._drop(f"unknown DTMF digit '{field(digit, 20)}'", data)
                return None
        if isinstance(message, Mark):
            if self._on_mark:
                await self._on_mark(message.mark.name)
            return None
        if isinstance(message, Stop):
            if not self._stopped:
                self._stopped = True
                logger.info(
                    f"Twilio stopped stream {field(self._stream_sid)} "
                    f"(call {field(self._call_sid)})"
                )
                if self._on_stop:
                    await self._on_stop()
            return None
        logger.debug(
            f"Ignoring a repeated '{message.event}' message on stream {field(self._stream_sid)}"
        )
        return None

    async def _media(self, payload: str, data: str | bytes, timestamp: Any) -> Frame | None:
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._drop("media payload is not valid base64", data)
            return None
        if not ulaw:
            return None
        if self.recorder is not None:  # what the caller sent, whatever the budget lets through
            now = asyncio.get_running_loop().time()
            self.recorder.caller_audio(ulaw, _milliseconds(timestamp), now)
        if not self._inbound.take(len(ulaw)):
            if self._inbound.dropped_packets == 1:
                self._first_audio_drop()
            return None
        if self.caller_audio is not None:
            await self.caller_audio(payload, len(ulaw))
            return None
        if self._sample_rate not in (0, SAMPLE_RATE):
            return await super().deserialize(data)  # Pipecat's resampling path
        return InputAudioRawFrame(
            audio=ulaw_to_pcm16(ulaw), sample_rate=SAMPLE_RATE, num_channels=1
        )

    def _first_audio_drop(self) -> None:
        budget = self._inbound
        logger.warning(
            f"Call {field(self._call_sid)}: caller audio on stream {field(self._stream_sid)} "
            f"arrives faster than real time; dropping what exceeds {budget.rate_factor:g}x "
            f"real time after a {budget.burst_ms:g} ms burst (logged once per call)"
        )

    def _drop(self, reason: str, data: str | bytes) -> None:
        self._dropped += 1
        if self._dropped <= _LOGGED_IN_FULL or self._dropped % _LOG_EVERY == 0:
            head = data[:120]
            preview = head if isinstance(head, str) else head.decode("utf-8", "replace")
            unit = "characters" if isinstance(data, str) else "bytes"
            logger.warning(
                f"Dropped a Twilio message on stream {field(self._stream_sid)} ({reason}; "
                f"{self._dropped} dropped so far): {len(data)} {unit}, '{field(preview, 120)}'"
            )


def _milliseconds(value: Any) -> int | None:
    """A ``media`` timestamp as a count of ms (Twilio sends a string), or None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
