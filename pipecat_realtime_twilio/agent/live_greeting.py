#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The instant greeting on GPT-Live: a cached greeting plays the moment the stream starts.

:class:`LiveGreeting` gives :class:`~pipecat_realtime_twilio.agent.live.LiveAgent` the
same greeting cache as :class:`~pipecat_realtime_twilio.agent.realtime.RealtimeAgent`
(:meth:`LiveGreeting.use_greeting_cache`, which the runner calls as it builds a call's
pipeline), under keys of engine ``live``:

- With the greeting in the cache, it plays the moment the stream starts
  (:meth:`LiveGreeting.play_at_stream_start`; else as the agent starts), through the
  phone output with its marks, and the model is told it said it: the greeting is an
  assistant message of ``session.start``'s ``input`` (the transcript so far, which the
  greeting's entry opens), sent after it started playing. No commentary asks for it.
- A caller who talks over it (their voice while it plays, as over any speech the
  model has finished) clears the phone; its transcript entry is cut to the words
  heard, and the barge-in counted. GPT-Live has no item to delete or truncate: if
  the session already holds the whole greeting, ``session.thinking.append`` tells the
  model what the caller heard of it (a new session gets the cut entry as its input).
- Without it, the model greets (commentary) and its greeting is captured for the
  cache: the audio the phone played of the first reply after the greeting was asked
  for, kept only if that reply's words are the greeting's, every byte came after
  ``session.started`` confirmed ``audio/pcmu``, no barge-in or lost session cut it,
  and the phone confirmed playing all of it (marks). Trailing quiet is left out.
"""

import asyncio
import base64
import re
from dataclasses import dataclass, field

from loguru import logger
from pipecat.frames.frames import StartFrame
from pipecat.services.openai.live import events

from pipecat_realtime_twilio.agent.controls import HEARD_EXTRA_SECS
from pipecat_realtime_twilio.agent.greeting_audio import CachedAudio, start_playing
from pipecat_realtime_twilio.agent.greeting_cache import GreetingCache, GreetingKey, variant_of
from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
from pipecat_realtime_twilio.agent.live_ledger import is_quiet
from pipecat_realtime_twilio.agent.live_turns import LiveConversation
from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.seams import PhoneCall

ENGINE = "live"
"""The engine named in a Live agent's greeting keys."""


@dataclass
class _Capture:
    """The model's greeting being captured for the cache."""

    cache: GreetingCache
    key: GreetingKey
    armed: bool = False  # the greeting was asked for: its reply is the next
    reply: str | None = None  # the greeting's reply, once it began
    audio: bytearray = field(default_factory=bytearray)
    speech_end: int = 0  # bytes of it up to its last chunk of speech
    items: dict[str, int] = field(default_factory=dict)  # utterance -> bytes played
    done: bool = False  # the reply ended whole, with the greeting's words


class LiveGreeting(LiveConversation):
    """A GPT-Live conversation whose greeting can come from a :class:`GreetingCache`."""

    def __init__(self, **kwargs):
        """Initialize the greeting state.

        Args:
            **kwargs: :class:`~pipecat_realtime_twilio.agent.live_turns.LiveConversation`
                arguments.
        """
        super().__init__(**kwargs)
        self._cached: CachedAudio | None = None
        self._capture: _Capture | None = None
        self._capture_watch: asyncio.Task | None = None

    #
    # the cache
    #

    def greeting_key(self, bot: str) -> GreetingKey | None:
        """The key of this agent's greeting in a cache, for ``bot`` (None: no greeting).

        Its ``variant`` covers the instructions, which shape how the model speaks.

        Args:
            bot: The bot's name.
        """
        if not self._greeting:
            return None
        return GreetingKey(
            bot=bot,
            engine=ENGINE,
            voice=self._voice,
            model=self.model,
            text=self._greeting,
            variant=variant_of(self._instructions),
        )

    def use_greeting_cache(self, cache: GreetingCache, bot: str) -> bool:
        """Greet from ``cache`` if the greeting is in it; else capture the model's for it.

        Call it before the pipeline starts; the runner does, for every call's pipeline.

        Args:
            cache: The greeting cache.
            bot: The bot's name (part of the key).

        Returns:
            Whether the greeting will play from the cache.
        """
        key = self.greeting_key(bot)
        if key is None or self._greeted:
            return False
        audio = cache.get(key)
        if audio is None:
            self._cached, self._capture = None, _Capture(cache, key)
            return False
        self._cached, self._capture = CachedAudio(text=key.text, audio=audio), None
        return True

    #
    # playing it, telling the model
    #

    async def play_at_stream_start(self, call: PhoneCall) -> None:
        """The stream started, the pipeline not yet: play the cached greeting now.

        Only when the phone output is the next processor (else :meth:`start` plays it).

        Args:
            call: The call.
        """
        cached = self._cached
        output: object = call.output()
        if cached is not None and cached.entry is None and self.next is output:
            frame = start_playing(cached)
            self.greeting_source = "cache"
            await call.output().play(frame)
            await self._greeting_played(cached)

    async def start(self, frame: StartFrame):
        """Start; the cached greeting plays first, if the stream's start did not play it.

        Args:
            frame: The pipeline's start frame.
        """
        cached = self._cached
        if cached is not None and cached.entry is None:
            if self._phone is None:  # no phone to play it on: the model greets
                self._cached = None
            else:
                frame_out = start_playing(cached)
                self.greeting_source = "cache"
                if self._phone_follows:
                    await self._phone.play(frame_out)
                else:  # queued until the next processor has started (Pipecat starts it first)
                    await self.push_frame(frame_out)
                await self._greeting_played(cached)
        await super().start(frame)

    async def _greeting_played(self, cached: CachedAudio) -> None:
        logger.debug(f"{self} greeting from the cache ({len(cached.audio) // BYTES_PER_MS} ms)")
        assert cached.entry is not None
        await self._add_transcript(cached.entry)

    async def _connect(self):
        cached = self._cached
        if cached is not None and cached.entry is None and self._phone is None:
            return  # Pipecat's connect at setup: the greeting plays first, start() connects
        await super()._connect()

    async def _start_session(self) -> None:
        cached = self._cached
        if cached is not None and cached.entry is not None:
            cached.told_id = cached.item_id  # session.start's input holds what it says now
        await super()._start_session()

    async def _maybe_greet(self) -> None:
        cached = self._cached
        if cached is not None and cached.entry is not None:
            self._greeted = self._greeting_done = True  # said: nothing to ask for
            return
        asks = not self._greeted and bool(self._greeting) and self._call_started
        await super()._maybe_greet()
        if asks and self._greeted and self._capture is not None:
            self._capture.armed = True  # the next reply is the greeting

    #
    # barge-in over the cached greeting
    #

    def _over_finished_speech(self) -> bool:
        cached = self._cached
        if cached is not None and cached.live and self._phone is not None:
            if self._phone.confirmed_bytes(cached.item_id) < len(cached.audio):
                return True  # the caller speaks over the cached greeting
            cached.live = False  # heard in full
        return super()._over_finished_speech()

    async def _barge_in(self) -> bool:
        self._check_capture()  # a greeting heard in full is kept before the clear
        cached = self._cached
        if cached is None or not cached.live or self._phone is None:
            interrupted = await super()._barge_in()
            self._drop_capture_if_cut()
            return interrupted
        cached.live = False
        # Clear the phone first (the greeting is no utterance of the ledger's), then the rest.
        heard = (await self._phone.interrupt([cached.item_id])).get(cached.item_id, 0)
        interrupted = await super()._barge_in()
        if heard >= len(cached.audio):
            return interrupted
        cached.cut(heard)
        self.barge_ins += 1
        self.call_events.barge_in(heard / BYTES_PER_MS, cached.item_id)
        logger.debug(f"{self} cached greeting cut after {heard // BYTES_PER_MS} ms")
        if cached.told_id is not None:  # the session holds the whole greeting: say what was heard
            heard_words = f'they heard only "{cached.spoken}"' if cached.spoken else "none of it"
            await self._send(
                {
                    "type": "session.thinking.append",
                    "content": f"The caller spoke over your greeting: {heard_words}.",
                    "delegation_id": None,
                }
            )
        return True

    #
    # capturing the model's greeting
    #

    async def _handle_evt_audio_delta(self, evt: events.OutputAudioDeltaEvent):
        await super()._handle_evt_audio_delta(evt)
        capture = self._capture
        if capture is None or not capture.armed or capture.done or getattr(self, "on_hold", False):
            return
        # Played now, the chunk is in the utterance in progress (none: it was not played).
        item = self._speech.item
        if item is None or self._reply is None or not self._audio_ready:
            return
        if capture.reply is None:
            capture.reply = self._reply  # the first reply after the greeting was asked for
        elif capture.reply != self._reply:
            self._capture = None  # the greeting's reply ended with no words: not kept
            return
        ulaw = base64.b64decode(evt.delta)
        capture.audio += ulaw
        capture.items[item] = capture.items.get(item, 0) + len(ulaw)
        if not is_quiet(ulaw):
            capture.speech_end = len(capture.audio)

    async def _add_transcript(self, entry: TranscriptEntry) -> None:
        await super()._add_transcript(entry)
        capture = self._capture
        if (
            capture is None
            or capture.done
            or capture.reply is None
            or entry.role != "bot"
            or self._reply == capture.reply
        ):
            return
        # The greeting's reply is over: whole, and the greeting's words?
        if entry.interrupted or _words(entry.text) != _words(capture.key.text):
            self._capture = None
            return
        capture.done = True
        if self._phone is not None:
            timeout = len(capture.audio) / BYTES_PER_MS / 1000 + HEARD_EXTRA_SECS
            items = dict(capture.items)
            self._capture_watch = self.create_task(
                self._watch_capture(items, timeout), "greeting-capture"
            )

    async def _watch_capture(self, items: dict[str, int], timeout: float) -> None:
        """Keep the captured greeting once the phone confirmed playing all of it."""
        if self._phone is not None:
            await self._phone.wait_played(items, timeout)
        self._check_capture()
        self._capture = None  # not heard in full in time: not kept

    def _speech_began(self) -> None:
        self._check_capture()  # before the phone forgets the greeting's utterances
        super()._speech_began()

    def _check_capture(self) -> None:
        """Put the captured greeting in the cache, if done and confirmed heard in full."""
        capture = self._capture
        phone = self._phone
        if capture is None or not capture.done or phone is None:
            return
        if any(phone.confirmed_bytes(item) < size for item, size in capture.items.items()):
            return  # not (yet) heard in full
        self._capture = None
        audio = bytes(capture.audio[: capture.speech_end])
        if capture.cache.put(capture.key, audio):
            ms = len(audio) // BYTES_PER_MS
            logger.info(f"{self} greeting cached for bot '{capture.key.bot}' ({ms} ms)")

    async def cleanup(self):
        """Keep a captured greeting heard in full by now; stop waiting for one."""
        self._check_capture()
        if self._capture_watch is not None:
            await self.cancel_task(self._capture_watch)
            self._capture_watch = None
        await super().cleanup()

    def _drop_capture_if_cut(self) -> None:
        capture = self._capture
        if capture is not None and capture.reply is not None:
            self._capture = None  # the greeting cut before it was heard in full: not kept

    def _forget_session(self) -> None:
        super()._forget_session()
        capture = self._capture
        if capture is not None and capture.reply is not None and not capture.done:
            self._capture = None  # the greeting's audio went with the session


def _words(text: str) -> list[str]:
    """The words of ``text``, lower case, without punctuation."""
    return re.findall(r"[\w']+", text.lower())
