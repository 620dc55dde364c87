#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The agent's half of the hot audio path: μ-law both ways, the heard ledger, barge-in.

Caller audio: Twilio's ``media`` payload (base64 μ-law) goes into
``input_audio_buffer.append`` as it is, when the agent follows ``call.input()``
directly (:meth:`PhoneAudio._append_caller_audio`); otherwise the pipeline's
8 kHz PCM is encoded to μ-law, which is exact (:meth:`PhoneAudio._send_user_audio`).

Bot audio: every ``response.output_audio.delta`` is noted in the
:class:`~pipecat_realtime_twilio.agent.ledger.HeardLedger` and handed to the phone
output as a :class:`~pipecat_realtime_twilio.frames.RealtimeAudioFrame` that keeps
the API's own μ-law (:meth:`PhoneAudio._handle_evt_audio_delta`): straight to the
output when it is the next processor, else down the pipeline.

Barge-in (:meth:`PhoneAudio._barge_in`): clear the phone, ask the ledger what the
caller heard, send the truncates. ``docs/architecture.md`` maps every hop.
"""

import base64
import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame, InterruptionFrame, TTSStartedFrame
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import CurrentAudioResponse

from pipecat_realtime_twilio.agent.events import CallEvents
from pipecat_realtime_twilio.agent.latency import ResponseLatency
from pipecat_realtime_twilio.agent.ledger import HeardLedger
from pipecat_realtime_twilio.agent.prewarm import Prewarm
from pipecat_realtime_twilio.audio import BYTES_PER_MS, SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16
from pipecat_realtime_twilio.frames import RealtimeAudioFrame
from pipecat_realtime_twilio.seams import PhoneCall, PhoneOutput


class PhoneAudio(Prewarm):
    """Audio between the Realtime session and the phone, and what the caller heard of it."""

    # Pipecat's: its __init__ sets it to None untyped, which mypy reads as the type None.
    _current_audio_response: CurrentAudioResponse | None  # type: ignore[assignment]

    def __init__(self, *, barge_in: bool, vad_silence_ms: float, **kwargs):
        """Initialize the audio path.

        Args:
            barge_in: Whether the caller starting to speak stops the bot.
            vad_silence_ms: The silence server VAD waits for before ``speech_stopped``.
            **kwargs: :class:`~pipecat_realtime_twilio.agent.prewarm.Prewarm` arguments.
        """
        super().__init__(**kwargs)
        self._barge_in_enabled = barge_in
        self._call: PhoneCall | None = None
        self._phone: PhoneOutput | None = None
        self._routes_caller_audio = False
        self._phone_follows = False  # the phone output is the next processor
        self._ledger = HeardLedger()
        self._latency = ResponseLatency(vad_silence_ms)
        self.barge_ins = 0
        self.call_events = CallEvents()  # what happened, with times, for the call record

    @property
    def phone_idle(self) -> bool:
        """Whether the phone has played everything sent to it (True without a phone)."""
        return self._phone is None or self._phone.idle

    @property
    def response_latencies_ms(self) -> list[float]:
        """Per answer: ms from the caller's last word to the first audio heard."""
        return self._latency.samples_ms

    def _plug_in(self, call: PhoneCall) -> None:
        """Take the call's phone output, and its caller audio if nothing sits between."""
        self._call, self._phone = call, call.output()
        following: object = self.next
        self._phone_follows = following is self._phone
        self._phone.add_event_handler("on_bot_started_speaking", self._on_heard_start)
        if self.previous is call.input():
            # Nothing between the caller and the agent could see the audio frames:
            # take Twilio's payloads as they are (base64 μ-law, the API's format),
            # with no decoding, frames or queues on the way.
            call.route_caller_audio(self._append_caller_audio)
            self._routes_caller_audio = True

    def _unplug(self) -> None:
        """Give the caller audio back to the pipeline (the agent stops)."""
        if self._routes_caller_audio and self._call is not None:
            self._call.route_caller_audio(None)
            self._routes_caller_audio = False

    async def _on_heard_start(self, output: Any) -> None:
        """The phone started playing the bot: close the response-latency sample, if any."""
        sample = self._latency.heard()
        if sample is not None:
            self.call_events.turn_latency(sample)

    #
    # audio: μ-law both ways, no resampling
    #

    async def _send_user_audio(self, frame: InputAudioRawFrame):
        if frame.sample_rate == SAMPLE_RATE:
            ulaw = pcm16_to_ulaw(frame.audio)
        else:
            pcm = await self._resampler.resample(frame.audio, frame.sample_rate, SAMPLE_RATE)
            ulaw = pcm16_to_ulaw(pcm)
        if ulaw:
            await self._append_caller_audio(base64.b64encode(ulaw).decode("ascii"), len(ulaw))

    async def _append_caller_audio(self, payload: str, size: int) -> None:
        """Send caller audio: ``payload`` is ``size`` bytes of μ-law, base64-encoded."""
        if self._audio_input_paused:
            return
        if not self._audio_ready:  # not configured yet (or reconnecting): hold it
            self._hold_audio(payload, size)
            return
        # The hottest client event: a plain dict skips building a pydantic model
        # for every 20 ms packet.
        await self._ws_send({"type": "input_audio_buffer.append", "audio": payload})
        self._sent_caller_audio(payload)
        self._latency.appended(size)

    async def _handle_evt_audio_delta(self, evt):
        if not self._audio_ready:
            # Before session.updated confirmed audio/pcmu: it may be PCM; never play it.
            self._wrong_format_dropped += 1
            if self._wrong_format_dropped == 1:
                logger.warning(f"{self} dropped bot audio sent before audio/pcmu was confirmed")
            return
        self._first_byte_came()
        ulaw = base64.b64decode(evt.delta)
        if not self._ledger.audio(evt.item_id, evt.content_index, evt.response_id, len(ulaw)):
            return  # late audio of a response the caller cut off
        await self.stop_ttfb_metrics()
        current = self._current_audio_response
        if current is None:
            current = CurrentAudioResponse(
                item_id=evt.item_id,
                content_index=evt.content_index,
                start_time_ms=int(time.time() * 1000),
                response_id=evt.response_id,
            )
            self._current_audio_response = current
            await self.push_frame(TTSStartedFrame())
        elif current.item_id != evt.item_id:
            # A response may speak through several items; without a phone,
            # truncation concerns the last.
            current.item_id = evt.item_id
            current.content_index = evt.content_index
            current.response_id = evt.response_id
            current.start_time_ms = int(time.time() * 1000)
            current.total_size = 0
        current.total_size += len(ulaw)
        frame = RealtimeAudioFrame(
            audio=ulaw_to_pcm16(ulaw),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            item_id=evt.item_id,
            response_id=evt.response_id,
            ulaw=ulaw,
        )
        if self._phone is not None and self._phone_follows:
            await self._phone.play(frame)  # neighbours: no queue between them
        else:
            await self.push_frame(frame)

    def _calculate_audio_duration_ms(
        self, total_bytes: int, sample_rate: int = SAMPLE_RATE, bytes_per_sample: int = 1
    ) -> int:
        """Return the duration of ``total_bytes`` of μ-law output audio in ms."""
        return total_bytes // BYTES_PER_MS

    #
    # barge-in, on what the caller heard
    #

    async def _truncate_current_audio_response(self):
        # Reached from Pipecat's interruption handling (an InterruptionFrame from
        # upstream). With a phone, truncate at what was heard, not by the clock.
        if self._phone is None:
            await super()._truncate_current_audio_response()
        else:
            await self._barge_in()

    async def _barge_in(self) -> bool:
        """Clear the phone, ask the ledger what was heard, send the truncates.

        Returns:
            Whether any audio went unheard (the bot was interrupted).
        """
        if self._phone is None:
            await super()._truncate_current_audio_response()
            return False
        heard = await self._phone.interrupt(self._ledger.unconfirmed)
        self._latency.cancel()
        self._current_audio_response = None
        cut = self._ledger.cut(heard)
        for truncation in cut.truncations:
            # Never beyond the item's audio: heard <= sent <= received.
            await self.send_client_event(
                events.ConversationItemTruncateEvent(
                    item_id=truncation.item_id,
                    content_index=truncation.content_index,
                    audio_end_ms=truncation.audio_end_ms,
                )
            )
        if cut.interrupted:
            self.barge_ins += 1
            self.call_events.barge_in(cut.heard_ms, cut.item_id)
            await self.push_frame(InterruptionFrame())
        return cut.interrupted

    def _prune_heard(self) -> None:
        """Forget the items the phone has confirmed playing in full (a new response began)."""
        if self._phone is None:
            self._ledger.forget_items()
            return
        for item in self._ledger.prune(self._phone.confirmed_bytes):
            self._phone.forget(item)
