#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A GPT-Live call's turns: μ-law both ways, utterances, barge-in, words said, transcripts.

:class:`LiveConversation` sits between the session keeping
(:class:`~pipecat_realtime_twilio.agent.live_session.LiveSession`) and
:class:`~pipecat_realtime_twilio.agent.live.LiveAgent`:

- Caller audio goes as Twilio sent it (base64 μ-law) into
  ``session.input_audio.append`` when the agent follows ``call.input()``; the
  model's μ-law goes to the phone output as it came (a
  :class:`~pipecat_realtime_twilio.frames.RealtimeAudioFrame` keeping the bytes),
  cut into utterances so the phone goes idle between them
  (:mod:`~pipecat_realtime_twilio.agent.live_ledger`). Nothing is resampled.
- Barge-in, as far as GPT-Live allows: the model decides turns and stops itself
  (no client event truncates or cancels it). When it falls quiet (for
  :data:`YIELD_QUIET_MS`) while the caller's audio holds voice, it has yielded; and
  when the caller's voice comes while the model is quiet but the phone still plays
  speech it sent (audio that came faster than real time), the caller talks over
  words the model is done with. Either way the phone is cleared at once (what is
  still queued on our side is dropped), the reply's transcript is cut to what was
  heard, and a barge-in is counted.
- Words to say (the greeting, apologies, closing lines) go as
  ``session.commentary.append`` with the instruction to say them word for word;
  the model speaks them when it sees fit, within ``first_byte_timeout_secs`` or the
  call falls back. A model that stays silent ``first_byte_timeout_secs`` after the
  caller's last words (its backend not at work) is nudged once, then the call
  falls back: no dead air.
- Transcripts come from the input and output transcript deltas, grouped into
  turns as Pipecat's service does (a turn ends after a quiet gap).
- Delegated work (Responses delegation) counts as the bot responding while the
  backend works (:mod:`~pipecat_realtime_twilio.agent.live_work` follows it).
"""

import asyncio
import base64
import time
import uuid
from typing import Any

from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.live import events

from pipecat_realtime_twilio.agent.conversation import SAY_INSTRUCTION
from pipecat_realtime_twilio.agent.events import CallEvents
from pipecat_realtime_twilio.agent.guard import Deadline
from pipecat_realtime_twilio.agent.latency import ResponseLatency
from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
from pipecat_realtime_twilio.agent.live_ledger import LiveLedger, LiveSpeech, is_quiet, is_voice
from pipecat_realtime_twilio.agent.live_session import LiveSession
from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.audio import BYTES_PER_MS, SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16
from pipecat_realtime_twilio.failures import Failure, Stage
from pipecat_realtime_twilio.frames import RealtimeAudioFrame
from pipecat_realtime_twilio.seams import PhoneCall, PhoneOutput

SETTLE_SECS = 1.0
"""Quiet after the model's last words before "everything was said" (it may go on)."""

NUDGE = "The caller has finished speaking and is waiting for your answer. Answer them now."
"""Commentary sent once when the model stays silent after the caller's turn."""

YIELD_QUIET_MS = 150
"""Quiet from the model, while the caller speaks, that means it stopped for the caller."""

VOICE_HOLD_SECS = 0.3
"""The caller counts as speaking for this long after a packet of voice."""

LATE_WORDS_SECS = 1.0
"""Words of a reply the caller cut off that still arrive within this long are dropped."""

_POLL_SECS = 0.05
_MAX_SAY_CHARS = 1800  # commentary takes at most 500 tokens


class LiveConversation(LiveSession):
    """The turns of a GPT-Live phone call: audio, utterances, barge-in, words, transcript."""

    def __init__(
        self,
        *,
        greeting: str | None,
        first_byte_timeout_secs: float,
        error_line: str,
        settle_secs: float = SETTLE_SECS,
        **kwargs,
    ):
        """Initialize the conversation.

        Args:
            greeting: What the bot says first; None: it waits for the caller.
            first_byte_timeout_secs: Most seconds for the model to start speaking
                words it was asked to say (or, nudged once, an answer it owes).
            error_line: What the bot says when delegated work fails.
            settle_secs: Quiet after the model's words before all counts as said.
            **kwargs: :class:`LiveSession` arguments.
        """
        super().__init__(**kwargs)
        self._greeting = greeting
        self._greeted = False
        self._greeting_done = False
        self.greeting_source: str | None = None
        self._call_started = False
        self.first_byte_timeout_secs = first_byte_timeout_secs
        self._error_line = error_line
        self._settle_secs = settle_secs
        self._call: PhoneCall | None = None
        self._phone: PhoneOutput | None = None
        self._phone_follows = False
        self._routes_caller_audio = False
        self._speech = LiveSpeech()
        self._ledger = LiveLedger()
        self._latency = ResponseLatency(0.0)
        self._reply: str | None = None  # the bot reply in progress (audio and words)
        self._muted = False  # the rest of the model's utterance is not played (interrupted)
        self._cut_at = 0.0  # time.monotonic() of the last barge-in that cut speech
        self._say_pending = False  # words were asked for and the model has not begun
        self._queued_says: list[tuple[str, Stage]] = []
        self._work: set[str] = set()  # delegations whose backend is at work
        self._last_activity = time.monotonic()
        self._caller_words_at = 0.0  # time.monotonic() of the caller's latest words
        self._caller_turn_at: float | None = None  # time.time() the caller's turn began
        self._caller_words_end = 0.0  # time.time() of the caller's latest words
        self._voice_at = 0.0  # time.monotonic() of the caller's latest packet of voice
        self._failed_in_a_row = 0
        self._nudge_allowed = False
        self._owed_since = 0.0  # time.monotonic() the speech owed was asked for
        self._first_speech = Deadline(self._speech_missed)
        self.caller_speaking = False
        self.barge_ins = 0
        self.call_events = CallEvents()
        self.transcript: list[TranscriptEntry] = []
        self.usage = Usage()  # the backend's tokens (the Live model bills by time)
        # No context aggregators: an empty context for Pipecat's function calling.
        self._context = LLMContext()
        self._register_event_handler("on_transcript")

    #
    # the call and its phone
    #

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
            call.route_caller_audio(self._append_caller_audio)
            self._routes_caller_audio = True

    def _unplug(self) -> None:
        if self._routes_caller_audio and self._call is not None:
            self._call.route_caller_audio(None)
            self._routes_caller_audio = False

    async def _on_heard_start(self, output: Any) -> None:
        sample = self._latency.heard()
        if sample is not None:
            self.call_events.turn_latency(sample)

    async def _send_user_audio(self, frame: InputAudioRawFrame):
        if frame.sample_rate == SAMPLE_RATE:
            ulaw = pcm16_to_ulaw(frame.audio)
        else:
            pcm = await self._resampler.resample(frame.audio, frame.sample_rate, SAMPLE_RATE)
            ulaw = pcm16_to_ulaw(pcm)
        if ulaw:
            await self._append_caller_audio(base64.b64encode(ulaw).decode("ascii"), len(ulaw))

    async def _append_caller_audio(self, payload: str, size: int) -> None:
        if is_voice(base64.b64decode(payload)):
            self._voice_at = time.monotonic()
            if self._over_finished_speech():
                # The model is done (or stopped), the phone still plays it: the caller
                # talks over audio the model already finished. Stop it, as the model did.
                await self._barge_in()
        await super()._append_caller_audio(payload, size)

    def _over_finished_speech(self) -> bool:
        """Whether the phone still plays speech the model is no longer producing."""
        if self._phone is None or self._phone.idle:
            return False
        if self._speech.item is not None and self._speech.quiet_ms < YIELD_QUIET_MS:
            return False  # the model speaks: whether it stops is its decision
        return self._ledger.speech_pending(self._phone.confirmed_bytes)

    def _sent_caller_audio(self, size: int) -> None:
        super()._sent_caller_audio(size)
        self._latency.appended(size)

    @property
    def caller_voiced(self) -> bool:
        """Whether the caller's audio held voice just now (:data:`VOICE_HOLD_SECS`)."""
        return time.monotonic() - self._voice_at <= VOICE_HOLD_SECS

    #
    # the model's audio: utterances to the phone, μ-law as it came
    #

    async def _handle_evt_audio_delta(self, evt: events.OutputAudioDeltaEvent):
        if not self._audio_ready:
            self._wrong_format_dropped += 1  # before session.started confirmed audio/pcmu
            return
        ulaw = base64.b64decode(evt.delta)
        if self._muted:  # interrupted by us: drop the rest until the model pauses
            quiet = is_quiet(ulaw)
            self._audio_arrived(quiet)
            self._muted = not quiet
            return
        step = self._speech.feed(ulaw)
        self._audio_arrived(step.quiet)
        if step.began:
            self._speech_began()
        if step.item is None:
            if step.ended is not None:
                self._last_activity = time.monotonic()
            return
        if step.quiet and self._yielded(len(ulaw)) and not self.phone_idle:
            # The model stopped for the caller: what is still queued here goes too.
            await self._barge_in()
            return
        if self._reply is None:
            self._reply = self._ledger.reply_started()
        self._ledger.audio(step.item, self._reply, len(ulaw), quiet=step.quiet)
        frame = RealtimeAudioFrame(
            audio=ulaw_to_pcm16(ulaw),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            item_id=step.item,
            response_id=self._reply,
            ulaw=ulaw,
        )
        if self._phone is not None and self._phone_follows:
            await self._phone.play(frame)
        else:
            await self.push_frame(frame)

    def _yielded(self, size: int) -> bool:
        """Whether the model's quiet just reached :data:`YIELD_QUIET_MS` over the caller's voice."""
        quiet_ms = self._speech.quiet_ms
        crossed = quiet_ms - size / BYTES_PER_MS < YIELD_QUIET_MS <= quiet_ms
        return crossed and self.caller_voiced

    def _speech_began(self) -> None:
        """The model began an utterance."""
        self._last_activity = time.monotonic()
        self._say_pending = False
        self._first_speech.disarm()
        if self._greeted:
            self._greeting_done = True
        if self._phone is None:
            self._ledger.forget_session()  # nobody asks what was heard
            return
        for item in self._ledger.prune(self._phone.confirmed_bytes):
            self._phone.forget(item)

    async def _barge_in(self) -> bool:
        """Clear the phone, end the utterance, cut the reply to what was heard.

        Returns:
            Whether speech went unheard (the bot was cut off).
        """
        self._speech.end()
        self._latency.cancel()
        if self._phone is None:
            self._ledger.forget_session()
            await self._finish_reply()
            return False
        heard = await self._phone.interrupt(self._ledger.unconfirmed)
        cut = self._ledger.cut(heard)
        if cut.interrupted:
            self.barge_ins += 1
            self.call_events.barge_in(cut.heard_ms, cut.item_id)
            self._cut_at = time.monotonic()
        await self._finish_reply()
        return cut.interrupted

    async def _finish_reply(self) -> None:
        """End the reply in progress: close its transcript turn and make its entry."""
        if self._assistant_turn.open:
            await self._close_turn("assistant")  # its end makes the entry
        elif self._reply is not None:
            reply, self._reply = self._reply, None
            entry = self._ledger.reply_done(reply)
            if entry is not None:
                await self._add_transcript(entry)

    #
    # transcripts, both sides, grouped as Pipecat does
    #

    async def _handle_evt_transcript_delta(self, evt: events.TranscriptDeltaEvent):
        if not evt.delta:
            return
        if evt.role == "user":
            await self._caller_words(evt)
        elif time.monotonic() - self._cut_at < LATE_WORDS_SECS and self._speech.item is None:
            return  # words of a reply the caller cut off, arriving late
        await super()._handle_evt_transcript_delta(evt)

    async def _caller_words(self, evt: events.TranscriptDeltaEvent) -> None:
        """The caller's words arrived: an answer is owed from their end."""
        self._caller_words_at = time.monotonic()
        self._caller_words_end = time.time()
        if not self._work:  # an answer is owed, first_byte_timeout_secs after their words
            self._expect_speech(self._response_stage(), nudge=True)
        if evt.end_ms is not None:
            self._latency.speech_stopped(self._session_base_bytes / BYTES_PER_MS + evt.end_ms)

    async def _open_turn(self, role: str):
        if role == "user":
            self.caller_speaking = True
            self._caller_turn_at = time.time()
        elif self._reply is None:
            self._reply = self._ledger.reply_started()
        await super()._open_turn(role)

    async def _append_turn(self, role: str, delta: str, accumulated: str, evt):
        if role != "user" and self._reply is not None:
            self._ledger.text(self._reply, delta)
        await super()._append_turn(role, delta, accumulated, evt)

    async def _end_turn(self, role: str):
        turn = self._user_turn if role == "user" else self._assistant_turn
        if turn.open and role == "user":
            self.caller_speaking = False
            text = turn.text.strip()
            if text:
                entry = TranscriptEntry(
                    role="caller",
                    text=text,
                    at=self._caller_words_end or time.time(),
                    started_at=self._caller_turn_at,
                )
                await self._add_transcript(entry)
        elif turn.open and self._reply is not None:
            reply, self._reply = self._reply, None
            done = self._ledger.reply_done(reply)
            if done is not None:
                await self._add_transcript(done)
        await super()._end_turn(role)

    async def _add_transcript(self, entry: TranscriptEntry) -> None:
        self.transcript.append(entry)
        await self._call_event_handler("on_transcript", entry)

    #
    # words to say, and the deadlines on the model's speech
    #

    @property
    def responding(self) -> bool:
        """Whether the model speaks, owes words it was asked for, or its backend works."""
        return (
            self._speech.item is not None
            or self._say_pending
            or bool(self._queued_says)
            or bool(self._work)
        )

    def _response_stage(self) -> Stage:
        return Stage.GREET if self._greeting and not self._greeting_done else Stage.RESPOND

    def _stage(self) -> Stage:
        return self._response_stage() if self._audio_ready else Stage.CONFIGURE

    async def say(self, text: str, *, context: str | None = None) -> None:
        """Make the bot say ``text`` (GPT-Live speaks it when it sees fit, promptly).

        Args:
            text: The words to say.
            context: A line of situation for the model, before the words.
        """
        await self._say(text, context, self._response_stage())

    async def _say(self, text: str, context: str | None, stage: Stage) -> None:
        prefix = f"{context} " if context else ""
        content = f"{prefix}{SAY_INSTRUCTION}{text}"[:_MAX_SAY_CHARS]
        if not self._audio_ready:
            self._queued_says.append((content, stage))  # sent once the session starts
            return
        await self._commentary(content)
        self._say_pending = True
        self._expect_speech(stage, nudge=False)

    async def _commentary(self, content: str) -> None:
        self._last_activity = time.monotonic()
        await self._send(
            {
                "type": "session.commentary.append",
                "event_id": f"evt_{uuid.uuid4().hex[:20]}",
                "content": content,
                "delegation_id": None,
            }
        )

    async def _session_ready(self) -> None:
        queued, self._queued_says = self._queued_says, []
        for content, stage in queued:
            await self._commentary(content)
            self._say_pending = True
            self._expect_speech(stage, nudge=False)
        await self._maybe_greet()

    async def _maybe_greet(self) -> None:
        if self._greeted or not self._greeting or not (self._call_started and self._audio_ready):
            return
        self._greeted = True
        self.greeting_source = "model"  # the record's ``greeting`` (a cache hit set "cache")
        logger.debug(f"{self} greeting the caller")
        await self._say(self._greeting, "The call has just been answered.", Stage.GREET)

    def _expect_speech(self, stage: Stage, *, nudge: bool) -> None:
        """The model owes speech: it must speak within ``first_byte_timeout_secs``.

        Args:
            stage: The stage a miss is reported as.
            nudge: Whether a miss first nudges the model (an answer owed to the caller)
                rather than falling back at once (words it was asked to say).
        """
        secs = self.first_byte_timeout_secs
        self._nudge_allowed = nudge
        self._owed_since = time.monotonic()
        self._first_speech.arm(
            Failure(stage, "no_first_byte", f"the model did not speak within {secs:g} s"), secs
        )

    async def _speech_missed(self, failure: Failure) -> None:
        if self._speech.item is not None or self._speech.last_speech_at >= self._owed_since:
            return  # it speaks, or spoke since: no silence
        if self._nudge_allowed:
            self._nudge_allowed = False
            logger.warning(f"{self} the model is silent after the caller's turn: nudging it")
            await self._commentary(NUDGE)
            self._owed_since = time.monotonic()
            self._first_speech.arm(failure, self.first_byte_timeout_secs)
            return
        await self._missed(failure)

    def _stop_deadlines(self) -> None:
        super()._stop_deadlines()
        self._first_speech.disarm()

    async def wait_heard(self, timeout: float = 60.0) -> bool:
        """Wait until the model is done (quiet, nothing owed or at work) and all was heard.

        "Done" is :data:`SETTLE_SECS` of quiet after the model's last words, with no
        words asked for and no delegated work in flight: GPT-Live decides when it
        speaks, and may go on after a pause.

        Args:
            timeout: Most seconds to wait.

        Returns:
            Whether that happened in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            quiet_for = time.monotonic() - self._last_activity
            if not self.responding and quiet_for >= self._settle_secs:
                if self._phone is None:
                    return True
                remaining = max(0.0, deadline - loop.time())
                if await self._phone.wait_played(self._ledger.unconfirmed, remaining) and not (
                    self.responding
                ):
                    return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECS)

    def _forget_session(self) -> None:
        super()._forget_session()
        self._work.clear()
        self._speech.end()
        self._ledger.forget_session()
        self._say_pending = False
        self._first_speech.disarm()
