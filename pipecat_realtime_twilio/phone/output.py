#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The phone output: bot audio to Twilio, paced and tracked by mark echoes."""

import asyncio
import base64
from collections import deque
from collections.abc import Iterable

from loguru import logger
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    BotSpeakingFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)

from pipecat_realtime_twilio.audio import BYTES_PER_MS, SAMPLE_RATE, pcm16_to_ulaw
from pipecat_realtime_twilio.frames import RealtimeAudioFrame
from pipecat_realtime_twilio.phone.output_heard import HeardQueries
from pipecat_realtime_twilio.phone.playback import PlaybackClock
from pipecat_realtime_twilio.phone.recording import CallRecorder
from pipecat_realtime_twilio.phone.serializer import (
    clear_message,
    mark_message,
    media_message,
)

CHUNK_MS = 40
"""Audio per outgoing ``media`` message; a mark follows each one."""

MAX_LEAD_MS = 300
"""Most audio kept buffered at Twilio, ahead of what the phone has played."""

_PLAYOUT_SLACK_SECS = 0.02  # the phone may start a chunk up to a frame after it arrives
_SPEAKING_FRAME_PERIOD_SECS = 0.2
_STOP_DRAIN_EXTRA_SECS = 2.0


class TwilioOutputTransport(HeardQueries, FastAPIWebsocketOutputTransport):
    """Plays the pipeline's audio on the phone, knowing what the caller has heard.

    Pipecat's websocket output paces audio by its own clock and cannot tell what
    the phone actually played. This output instead:

    - sends audio in ``chunk_ms`` pieces, each followed by a Twilio ``mark``, and
      keeps a :class:`~pipecat_realtime_twilio.phone.playback.PlaybackClock` from the
      echoes, so it knows, per assistant item, how many ms the caller has heard;
    - paces by that clock: at most ``max_lead_ms`` of audio waits at Twilio,
      enough that the phone never runs dry and little enough that a ``clear``
      discards little; the first audio for an idle phone goes out at once;
    - interrupts (``clear``, local queue dropped, late audio of the interrupted
      items discarded) in one step, returning what was heard;
    - reports the bot speaking as heard on the phone: ``BotStartedSpeakingFrame``
      when playback starts, ``BotStoppedSpeakingFrame`` when the phone has played
      everything or was cleared, ``BotSpeakingFrame`` in between (each pushed both
      ways, as Pipecat's outputs do);
    - can play before the pipeline has started (:meth:`play`: a cached greeting the
      moment the stream starts): what the lead allows goes at once, and the sender
      that paces the rest starts when the pipeline sets the output up.

    Event handlers available:

    - on_bot_started_speaking(output): the phone started playing bot audio.
    - on_bot_stopped_speaking(output, interrupted: bool): the phone went quiet.
    """

    def __init__(
        self,
        transport: FastAPIWebsocketTransport,
        client,
        params: FastAPIWebsocketParams,
        *,
        stream_sid: str,
        chunk_ms: int = CHUNK_MS,
        max_lead_ms: int = MAX_LEAD_MS,
        **kwargs,
    ):
        """Initialize the output.

        Args:
            transport: The websocket transport this output belongs to.
            client: The transport's websocket client.
            params: The transport parameters.
            stream_sid: The Media Stream SID.
            chunk_ms: Milliseconds of audio per ``media`` message (and mark).
            max_lead_ms: Most audio buffered at Twilio ahead of the phone.
            **kwargs: Further ``FastAPIWebsocketOutputTransport`` arguments.
        """
        super().__init__(transport, client, params, **kwargs)
        if chunk_ms <= 0 or max_lead_ms <= 0:
            raise ValueError("chunk_ms and max_lead_ms must be positive")
        self.clock = PlaybackClock()
        self._stream_sid = stream_sid
        self._chunk_bytes = chunk_ms * BYTES_PER_MS
        self._max_lead_ms = max_lead_ms
        self._queue: deque[tuple[bytes, str | None]] = deque()
        self._queued_bytes = 0
        self._dropped_items: set[str] = set()
        self._resampler = create_stream_resampler()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._send_lock = asyncio.Lock()  # a chunk's messages go out together, in order
        self._sender: asyncio.Task | None = None
        self._speaking = False
        self._speaking_frame_at = 0.0
        self._warned_overdue = False
        self.clears_sent = 0
        self.recorder: CallRecorder | None = None  # told what the phone was sent and played
        self._register_event_handler("on_bot_started_speaking")
        self._register_event_handler("on_bot_stopped_speaking")

    @property
    def bot_speaking(self) -> bool:
        """Whether the phone is playing bot audio right now (as far as marks tell)."""
        return self._speaking

    @property
    def queued_ms(self) -> float:
        """Milliseconds of audio waiting here, not yet sent to Twilio."""
        return self._queued_bytes / BYTES_PER_MS

    @property
    def idle(self) -> bool:
        """Whether nothing is queued here and the phone has played everything sent."""
        return not self._queue and self.clock.idle

    #
    # lifecycle
    #

    async def setup(self, setup: FrameProcessorSetup):  # type: ignore[override]  # Pipecat's
        """Set up the output; audio played before this (:meth:`play`) gets its sender now.

        Args:
            setup: The pipeline's setup.
        """
        await super().setup(setup)
        if self._queue and self._sender is None:  # not left to wait for the StartFrame
            self._sender = self.create_task(self._send_loop(), "twilio-audio-sender")

    async def start(self, frame: StartFrame):
        """Start the output and its sender.

        Args:
            frame: The start frame.
        """
        await super().start(frame)
        if self._sender is None:
            self._sender = self.create_task(self._send_loop(), "twilio-audio-sender")

    async def stop(self, frame: EndFrame):
        """Let the queued audio play out, then stop and close the stream.

        Args:
            frame: The end frame.
        """
        timeout = self.queued_ms / 1000 + self.clock.lead_ms(self._now()) / 1000
        await self.wait_idle(timeout + _STOP_DRAIN_EXTRA_SECS)
        await self._stop_sender()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame):
        """Stop at once.

        Args:
            frame: The cancel frame.
        """
        await self._stop_sender()
        await super().cancel(frame)

    async def cleanup(self):
        """Stop the sender (one started before the pipeline's start, too), then clean up."""
        await self._stop_sender()
        await super().cleanup()

    async def _stop_sender(self):
        if self._sender is not None:
            await self.cancel_task(self._sender)
            self._sender = None

    #
    # frames
    #

    async def _handle_frame(self, frame: Frame):
        if isinstance(frame, OutputAudioRawFrame):
            await self._enqueue(frame)
            await self.push_frame(frame)
            return
        if isinstance(frame, InterruptionFrame):
            await self.interrupt()
        await super()._handle_frame(frame)

    async def play(self, frame: OutputAudioRawFrame) -> None:
        """Take bot audio straight from the processor before this one, then pass it on.

        Used by a ``RealtimeAgent`` right before the phone output: the audio skips
        the pipeline's queue to this processor (the first chunk of a response can
        leave in the same event-loop turn it arrived in), and the frame still goes on
        downstream as if it had come through. It may come before the pipeline has
        started, even before it is set up (a cached greeting, the moment the stream
        starts): the first ``max_lead_ms`` go out at once, the rest once set up.

        Args:
            frame: The audio.
        """
        if self._sender is None and self._task_manager is not None:
            self._sender = self.create_task(self._send_loop(), "twilio-audio-sender")
        await self._enqueue(frame)
        await self.push_frame(frame)

    async def _write_frame(self, frame: Frame) -> bool:
        if isinstance(frame, InterruptionFrame):
            return True  # interrupt() sent the clear, if one was needed
        return await super()._write_frame(frame)

    async def _enqueue(self, frame: OutputAudioRawFrame) -> None:
        item: str | None = None
        ulaw: bytes | None = None
        if isinstance(frame, RealtimeAudioFrame):
            item = frame.item_id
            if item is not None and item in self._dropped_items:
                return
            # The Realtime API's own μ-law, unless a processor changed the audio on the way.
            ulaw = frame.original_ulaw()
        if ulaw is None:
            pcm = frame.audio
            if frame.sample_rate != SAMPLE_RATE:
                pcm = await self._resampler.resample(pcm, frame.sample_rate, SAMPLE_RATE)
            ulaw = pcm16_to_ulaw(pcm)
        if not ulaw:
            return
        self._queue.append((ulaw, item))
        self._queued_bytes += len(ulaw)
        self._wake.set()
        if self._sender is None:  # not set up yet: nothing paces, send what the lead allows
            await self._send_ahead()
        elif self.clock.idle:
            # The phone has nothing to play: send the first chunk now rather than a
            # loop turn later from the sender (which paces the rest).
            await self._send_chunk(min(self._chunk_bytes, len(self._queue[0][0])), self._now())

    #
    # sending, paced by the playback clock
    #

    async def _send_loop(self):
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self._now()
            size = min(self._chunk_bytes, len(self._queue[0][0]))
            excess_ms = self._excess_ms(size, now)
            if excess_ms > 0 and not self.clock.idle:
                self._warn_if_marks_overdue()
                await self._settle()
                await self._sleep(min(excess_ms, 100.0) / 1000)
                continue
            await self._send_chunk(size, now)

    def _excess_ms(self, size: int, now: float) -> float:
        """How far past ``max_lead_ms`` sending ``size`` more bytes now takes the lead."""
        # A conservative lead: the phone may start a chunk a frame after it arrives.
        lead_ms = self.clock.lead_ms(now - _PLAYOUT_SLACK_SECS)
        return lead_ms + size / BYTES_PER_MS - self._max_lead_ms

    async def _send_ahead(self):
        """Send queued audio now, as far as ``max_lead_ms`` allows (no sender runs yet)."""
        while self._queue:
            now = self._now()
            size = min(self._chunk_bytes, len(self._queue[0][0]))
            if self._excess_ms(size, now) > 0 and not self.clock.idle:
                return
            await self._send_chunk(size, now)

    async def _sleep(self, secs: float):
        """Sleep up to ``secs``; an echo or a clear wakes the sender earlier."""
        self._wake.clear()
        handle = asyncio.get_running_loop().call_later(secs, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()

    async def _send_chunk(self, size: int, now: float):
        data, item = self._queue[0]
        chunk = data[:size]
        if size < len(data):
            self._queue[0] = (data[size:], item)
        else:
            self._queue.popleft()
        self._queued_bytes -= size
        messages = []
        start = self.clock.start_mark(now) if self.clock.idle else None
        if start is not None:
            messages.append(mark_message(self._stream_sid, start))
        messages.append(media_message(self._stream_sid, base64.b64encode(chunk).decode("ascii")))
        mark = self.clock.sent(size, item, now)
        messages.append(mark_message(self._stream_sid, mark))
        if self.recorder is not None:  # as the clock counts it: before a clear can come
            self.recorder.bot_sent(chunk, mark, now, start_mark=start)
        async with self._send_lock:
            for message in messages:
                await self._client.send(message)

    def _warn_if_marks_overdue(self):
        if self.clock.marks_overdue and not self._warned_overdue:
            self._warned_overdue = True
            logger.warning(
                f"{self}: Twilio has echoed no mark for a while; pacing by the wall clock"
            )

    #
    # echoes and interruptions
    #

    async def mark_echoed(self, name: str) -> None:
        """Handle Twilio's echo of a mark (called by the input side).

        Args:
            name: The mark's name.
        """
        now = self._now()
        if not self.clock.echoed(name, now):
            return
        if self.recorder is not None:
            self.recorder.bot_echoed(name, now)
        self._wake.set()
        self._progress.set()
        if not self._speaking and not self.clock.idle:
            await self._set_speaking(True, interrupted=False)
        elif self.idle and self._speaking:
            await self._set_speaking(False, interrupted=False)
        elif self._speaking and now - self._speaking_frame_at >= _SPEAKING_FRAME_PERIOD_SECS:
            self._speaking_frame_at = now
            await self.broadcast_frame(BotSpeakingFrame)

    async def interrupt(self, items: Iterable[str] = ()) -> dict[str, int]:
        """Stop the bot on the phone at once: ``clear``, drop what is queued here.

        The ``clear`` is the first thing written, before this coroutine yields.
        Audio of the interrupted items that arrives later is discarded.

        Args:
            items: Further items to discard (e.g. audio still on its way here).

        Returns:
            For each interrupted item, how many bytes of it the caller heard.
        """
        now = self._now()
        needs_clear = not self.clock.idle
        if needs_clear and self.recorder is not None:
            unplayed = round(self.clock.lead_ms(self.clock.clear_lands(now)) * BYTES_PER_MS)
            self.recorder.bot_cleared(unplayed, now)
        heard = self.clock.clear(now)
        for _, item in self._queue:
            if item is not None and item not in heard:
                heard[item] = self.clock.heard_bytes(item, now)
        for item in items:
            if item not in heard:
                heard[item] = self.clock.heard_bytes(item, now)
        self._queue.clear()
        self._queued_bytes = 0
        self._dropped_items.update(heard)
        if needs_clear:
            self.clears_sent += 1
            await self._client.send(clear_message(self._stream_sid))
        self._wake.set()
        self._progress.set()
        if self._speaking:
            await self._set_speaking(False, interrupted=True)
        return heard

    def attach(self, stream_sid: str) -> None:
        """Play on the stream ``stream_sid`` (for an output built before its stream started).

        Args:
            stream_sid: The Media Stream SID.
        """
        self._stream_sid = stream_sid

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until the phone has played everything sent or queued here.

        Args:
            timeout: Most seconds to wait.

        Returns:
            Whether it went idle in time.
        """
        return await self._wait_for(lambda: self.idle, timeout)

    async def wait_played(self, item_bytes: dict[str, int], timeout: float) -> bool:
        """Wait until the phone has played the given bytes of each item (mark-confirmed).

        An item that was interrupted counts as done.

        Args:
            item_bytes: Item id -> bytes of it that must have been played.
            timeout: Most seconds to wait.

        Returns:
            Whether all of it was played (or interrupted) in time.
        """

        def done() -> bool:
            return all(
                item in self._dropped_items or self.clock.confirmed_bytes(item) >= size
                for item, size in item_bytes.items()
            )

        return await self._wait_for(done, timeout)

    async def _wait_for(self, predicate, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._progress.clear()
            # Marks that never come back still end the wait: poll the clock too.
            handle = loop.call_later(min(remaining, 0.25), self._progress.set)
            try:
                await self._progress.wait()
            finally:
                handle.cancel()
            await self._settle()
        return True

    async def _settle(self):
        """Let the wall clock stand in for marks that stopped coming back."""
        if self.clock.marks_overdue and not self.clock.idle:
            self.clock.settle(self._now())
            if self.idle and self._speaking:
                await self._set_speaking(False, interrupted=False)

    async def _set_speaking(self, speaking: bool, *, interrupted: bool):
        self._speaking = speaking
        if speaking:
            self._speaking_frame_at = self._now()
            logger.debug(f"{self}: bot started speaking (heard on the phone)")
            await self.broadcast_frame(BotStartedSpeakingFrame)
            await self._call_event_handler("on_bot_started_speaking")
        else:
            how = "interrupted" if interrupted else "played out"
            logger.debug(f"{self}: bot stopped speaking ({how})")
            await self.broadcast_frame(BotStoppedSpeakingFrame)
            await self._call_event_handler("on_bot_stopped_speaking", interrupted)

    async def broadcast_frame(self, frame_cls: type[Frame], **kwargs):
        """Push a frame both ways (downstream first), as Pipecat's outputs do.

        Args:
            frame_cls: The frame class.
            **kwargs: Frame arguments.
        """
        downstream = frame_cls(**kwargs)
        upstream = frame_cls(**kwargs)
        downstream.broadcast_sibling_id = upstream.id
        upstream.broadcast_sibling_id = downstream.id
        await self.push_frame(downstream)
        await self.push_frame(upstream, FrameDirection.UPSTREAM)
