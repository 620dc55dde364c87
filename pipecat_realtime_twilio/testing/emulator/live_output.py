#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The model's side of a Live session: its turns, spoken from the script, and its silence.

From ``session.started`` on, the session streams output audio continuously, as the
real model does: speech while a model turn plays, digital silence otherwise
(``session.output_audio.delta`` of ``audio_chunk_ms`` each, at real-time pace;
``live_silence = False`` on the emulator turns the silence off). Speech is paced at
``send_rate`` times real time (0 or ``inf``: as fast as possible), with
``session.output_transcript.delta`` fragments just ahead of the audio they cover.

A model turn is triggered by the end of a caller turn (``"vad"``), by
``session.commentary.append`` (``"commentary"``) or, with Responses delegation, by
the backend's answer after ``response.create`` (``"response.create"``). Its scripted
reply comes from the emulator's ``replies`` (a list, in order, or the
``(session, trigger)`` callable); with none left it is the emulator's
``default_reply``, except for commentary, which the model then speaks as given.
Turns play one at a time in trigger order, never while the caller speaks, each
``ttfb_ms`` (or the reply's own ``ttfb_ms``) after its trigger. A caller turn that
starts while the model speaks stops it at once (``interrupted``; only the spoken
part's transcript was sent).

The output timeline (the ``start_ms``/``end_ms`` of output transcript fragments) is
the milliseconds of output audio sent since ``session.started``, silence included.
"""

import asyncio
import base64
import contextlib
import inspect
import math
from collections import deque
from typing import TYPE_CHECKING, Any

from loguru import logger

from .audio import synthesize_speech
from .live_audio import bytes_per_ms, encode_ulaw_live, silence
from .live_host import LiveParts
from .live_input import split_words
from .live_records import LiveResponse
from .records import AudioDelta, Reply, new_id


class LiveOutput(LiveParts):
    """Model turns and the output stream of ``LiveSession`` (a mixin)."""

    if TYPE_CHECKING:
        _caller_speaking: bool

        def _delegate_turn(self, turn: LiveResponse) -> bool: ...

    def _init_output(self) -> None:
        self.responses: list[LiveResponse] = []
        self.output_audio = bytearray()
        self._output_ms = 0.0
        self._pending: deque[LiveResponse] = deque()
        self._ready: set[str] = set()
        self._turn_closes: dict[str, str] = {}
        self._current: LiveResponse | None = None
        self._speaker: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- public --------------------------------------------------------------------

    @property
    def output_ms(self) -> float:
        """Milliseconds of output audio sent, silence included (the output timeline)."""
        return self._output_ms

    @property
    def speaking(self) -> LiveResponse | None:
        """The model turn being spoken, if any."""
        return self._current

    @property
    def output_transcript(self) -> str:
        """Every ``session.output_transcript.delta`` sent, joined."""
        return "".join(turn.transcript for turn in self.responses)

    @property
    def speech_audio(self) -> bytes:
        """The speech of every model turn, in order, without the silence between turns."""
        return b"".join(bytes(turn.audio) for turn in self.responses)

    # -- turns -----------------------------------------------------------------------

    def _queue_turn(
        self,
        trigger: str,
        *,
        reply: Any = None,
        commentary: str | None = None,
        delegation_id: str | None = None,
    ) -> LiveResponse:
        kind, rate = self.audio_format
        turn = LiveResponse(
            id=new_id("turn"),
            trigger=trigger,
            output_format=kind,
            rate=rate,
            commentary=commentary,
            delegation_id=delegation_id,
            triggered_at=self._loop.time(),
        )
        self.responses.append(turn)
        self._pending.append(turn)
        turn.stall_secs = self._emulator.faults.stalls.take()
        close = self._emulator.live_faults.turn_closes.take()
        if close is not None:
            self._turn_closes[turn.id] = close
        if reply is None:
            reply = self._emulator._next_reply(self, trigger)
        self._spawn(self._prepare_turn(turn, reply), f"live-{turn.id}")
        logger.debug(f"Live emulator {self.id}: turn {turn.id} ({trigger})")
        return turn

    async def _prepare_turn(self, turn: LiveResponse, reply: Any) -> None:
        """Pick the turn's reply, then make it ready after its time to first byte."""
        if inspect.isawaitable(reply):
            reply = await reply
        if reply is None:
            reply = (
                Reply(turn.commentary)
                if turn.commentary is not None
                else self._emulator.default_reply
            )
        turn.reply = reply
        delay = reply.ttfb_ms if reply.ttfb_ms is not None else self._emulator.ttfb_ms
        secs = max(0.0, delay or 0.0) / 1000
        if turn.stall_secs is not None:
            if math.isinf(turn.stall_secs):
                logger.debug(f"Live emulator {self.id}: {turn.id} stalls until dropped")
                return
            secs += turn.stall_secs
        if secs > 0:
            await asyncio.sleep(secs)
        self._ready.add(turn.id)
        self._wake.set()

    def _next_ready_turn(self) -> LiveResponse | None:
        while self._pending and self._pending[0].status != "queued":
            self._pending.popleft()
        if not self._pending or self._caller_speaking:
            return None
        if self._pending[0].id not in self._ready:
            return None
        return self._pending.popleft()

    def _barge_in(self) -> bool:
        """The caller started speaking: stop the turn being spoken, drop stalled ones.

        Returns:
            Whether a turn was being spoken.
        """
        for waiting in self._pending:
            if waiting.stall_secs is not None and waiting.id not in self._ready and waiting.active:
                self._end_turn(waiting, "cancelled")
        turn = self._current
        if turn is None or turn.status != "speaking":
            return False
        logger.debug(f"Live emulator {self.id}: {turn.id} interrupted by the caller")
        turn.status = "interrupted"
        if turn.transcript:
            self.conversation.append(("assistant", turn.transcript))  # what was said of it
        self._wake.set()
        return True

    def _drop_queued_turns(self) -> None:
        for turn in self._pending:
            if turn.active:
                self._end_turn(turn, "cancelled")
        self._pending.clear()

    def _end_turn(self, turn: LiveResponse, status: str) -> None:
        turn.status = status
        turn.done_at = self._loop.time()

    def _wake_speaker(self) -> None:
        self._wake.set()

    async def _speech_done(self) -> None:
        await self._idle.wait()

    # -- the output stream -------------------------------------------------------------

    def _start_output(self) -> None:
        self._speaker = asyncio.ensure_future(self._speak_loop())
        self._speaker.set_name(f"live-speaker-{self.id}")

    def _stop_speaking(self) -> None:
        speaker, self._speaker = self._speaker, None
        if speaker is not None and speaker is not asyncio.current_task():
            speaker.cancel()
        self._drop_queued_turns()
        if self._current is not None and self._current.active:
            self._end_turn(self._current, "cancelled")
        self._idle.set()

    def _output_tasks(self) -> list[asyncio.Task]:
        return [self._speaker] if self._speaker is not None else []

    async def _sleep_until(self, at: float) -> None:
        """Sleep until ``at`` (loop time), or until something wakes the speaker."""
        self._wake.clear()
        delay = at - self._loop.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _speak_loop(self) -> None:
        next_at = self._loop.time()
        while not self._closing:
            turn = self._next_ready_turn()
            if turn is not None:
                await self._play(turn)
                next_at = max(next_at, self._loop.time())
                continue
            if not self._emulator.live_silence:
                self._wake.clear()
                await self._wake.wait()
                next_at = self._loop.time()
                continue
            chunk_ms = max(1, int(self._emulator.audio_chunk_ms))
            kind, rate = self.audio_format
            self._send_audio(silence(kind, rate, chunk_ms), chunk_ms)
            next_at += chunk_ms / 1000
            await self._sleep_until(next_at)

    def _send_audio(self, chunk: bytes, ms: float) -> Any:
        record = self._emit(
            {"type": "session.output_audio.delta", "delta": base64.b64encode(chunk).decode()}
        )
        self.output_audio += chunk
        self._output_ms += ms
        return record

    async def _play(self, turn: LiveResponse) -> None:
        reply = turn.reply
        assert reply is not None  # a ready turn has its reply
        turn.status = "speaking"
        turn.started_at = self._loop.time()
        self._current = turn
        self._idle.clear()
        try:
            close = self._turn_closes.pop(turn.id, None)
            if close is not None:
                self._end_turn(turn, "closed")
                self._closing = True
                self._spawn(self.end_session(close), "live-session-end")
                return
            if not self._delegate_turn(turn):
                self._end_turn(turn, "failed")
                return
            if reply.text or reply.audio is not None:
                await self._speak(turn, reply)
            if turn.status == "speaking":
                self._end_turn(turn, "completed")
                if turn.transcript:
                    self.conversation.append(("assistant", turn.transcript))
            elif turn.done_at is None:
                turn.done_at = self._loop.time()
        finally:
            self._current = None
            self._idle.set()

    async def _speak(self, turn: LiveResponse, reply: Reply) -> None:
        kind, rate = self.audio_format
        ulaw = (
            reply.audio
            if reply.audio is not None
            else synthesize_speech(reply.text, reply.duration_ms)
        )
        audio = encode_ulaw_live(ulaw, kind, rate)
        chunk_ms = max(1, int(self._emulator.audio_chunk_ms))
        per_ms = bytes_per_ms(kind, rate)
        size = chunk_ms * per_ms
        chunks = [audio[i : i + size] for i in range(0, len(audio), size)]
        words = split_words(reply.text)
        turn.start_ms = int(self._output_ms)
        next_at = self._loop.time()
        for index, chunk in enumerate(chunks):
            if turn.status != "speaking":
                break
            ms = len(chunk) / per_ms
            # Ceiling division: the transcript runs slightly ahead of the audio.
            lo = -(-index * len(words) // len(chunks))
            hi = -(-(index + 1) * len(words) // len(chunks))
            if hi > lo:
                delta = "".join(words[lo:hi])
                turn.transcript += delta
                self._emit(
                    {
                        "type": "session.output_transcript.delta",
                        "delta": delta,
                        "start_ms": int(self._output_ms),
                        "end_ms": int(self._output_ms + ms),
                    }
                )
            record = self._send_audio(chunk, ms)
            if turn.first_audio_at is None:
                turn.first_audio_at = record.queued_at
            turn.audio += chunk
            turn.deltas.append(AudioDelta(data=bytes(chunk), event=record))
            send_rate = self._emulator.send_rate
            if send_rate and send_rate > 0 and not math.isinf(send_rate):
                next_at += ms / 1000 / send_rate
                await self._sleep_until(next_at)
            else:
                await asyncio.sleep(0)
        turn.end_ms = int(self._output_ms)
