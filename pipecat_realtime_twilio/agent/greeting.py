#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The instant greeting: a cached greeting plays the moment the stream starts.

:class:`CachedGreeting` sits between
:class:`~pipecat_realtime_twilio.agent.conversation.Conversation` and
:class:`~pipecat_realtime_twilio.agent.realtime.RealtimeAgent`. Given a
:class:`~pipecat_realtime_twilio.agent.greeting_cache.GreetingCache` and the bot's
name (:meth:`CachedGreeting.use_greeting_cache`, which the runner calls when it
builds a call's pipeline):

- With the greeting in the cache, the agent plays it the moment the stream starts
  (:meth:`CachedGreeting.play_at_stream_start`, which the call runs before its
  pipeline starts; else as the agent starts), through the phone output with its
  marks, without waiting for the session. The model is told, once its session is
  configured, with a
  ``conversation.item.create`` of an *assistant* message (``output_text``: the
  greeting's words) instead of being asked to say it: no greeting response.
- A caller who cuts the cached greeting off is heard as any barge-in (the phone is
  cleared, ``barge_ins`` and the call events count it); the model's item is then
  deleted and made again at the start of the conversation with the words heard (the
  greeting's words in proportion to the audio heard; none heard: no item), and the
  transcript entry is cut the same way.
- Without it, the model greets as before, and its greeting's audio is captured and
  put in the cache, only if the response completed whole, no barge-in came before
  it was done and every byte came after ``audio/pcmu`` was confirmed.

The transcript's greeting entry is a :class:`CachedGreetingEntry` (``"cached": true``
in records); :attr:`CachedGreeting.greeting_source` says where the greeting came from.
"""

import base64
from dataclasses import dataclass, field

from loguru import logger
from pipecat.frames.frames import InterruptionFrame
from pipecat.services.openai.realtime import events

from pipecat_realtime_twilio.agent.conversation import Conversation
from pipecat_realtime_twilio.agent.greeting_audio import (
    CachedAudio,
    CachedGreetingEntry,
    GreetingSource,
    greeting_item_id,
    start_playing,
)
from pipecat_realtime_twilio.agent.greeting_cache import GreetingCache, GreetingKey, variant_of
from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.seams import PhoneCall

__all__ = ["CachedGreeting", "CachedGreetingEntry", "GreetingSource"]

ENGINE = "realtime"
"""The engine named in this agent's greeting keys."""


@dataclass
class _Capture:
    """The model's greeting being captured for the cache."""

    cache: GreetingCache
    key: GreetingKey
    response_id: str | None = None
    audio: bytearray = field(default_factory=bytearray)


class CachedGreeting(Conversation):
    """A conversation whose greeting can come from a :class:`GreetingCache`."""

    model: str  # set by the agent

    def __init__(self, **kwargs):
        """Initialize the greeting state.

        Args:
            **kwargs: :class:`~pipecat_realtime_twilio.agent.conversation.Conversation`
                arguments.
        """
        super().__init__(**kwargs)
        self.greeting_source: GreetingSource | None = None
        self._cached: CachedAudio | None = None
        self._capture: _Capture | None = None

    #
    # the cache
    #

    def greeting_key(self, bot: str) -> GreetingKey | None:
        """The key of this agent's greeting in a cache, for ``bot`` (None: no greeting).

        Its ``variant`` covers what else shapes the audio: the speed and the instructions.

        Args:
            bot: The bot's name.
        """
        if not self._greeting:
            return None
        session = getattr(self._settings, "session_properties", None)
        audio = getattr(session, "audio", None)
        output = getattr(audio, "output", None)
        voice = getattr(output, "voice", None) or ""
        speed = getattr(output, "speed", None)
        return GreetingKey(
            bot=bot,
            engine=ENGINE,
            voice=str(voice),
            model=self.model,
            text=self._greeting,
            variant=variant_of(speed, self._instructions),
        )

    def use_greeting_cache(self, cache: GreetingCache, bot: str) -> bool:
        """Greet from ``cache`` if the greeting is in it; else capture the model's for it.

        Call it before the agent starts (or is pre-warmed); the runner does, for every
        call's pipeline.

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
        self._cached = CachedAudio(text=key.text, audio=audio)
        self._capture = None
        return True

    #
    # playing it
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

    async def _play_cached_greeting(self) -> None:
        """At start: play the cached greeting now, if not yet, before any session is waited for."""
        cached = self._cached
        if cached is None or cached.entry is not None:
            return
        if self._phone is None:  # no phone to play it on: the model greets
            self._cached = None
            return
        frame = start_playing(cached)
        self.greeting_source = "cache"
        if self._phone_follows:
            await self._phone.play(frame)
        else:  # queued until the next processor has started (Pipecat starts it first)
            await self.push_frame(frame)
        await self._greeting_played(cached)

    async def _greeting_played(self, cached: CachedAudio) -> None:
        logger.debug(f"{self} greeting from the cache ({len(cached.audio) // BYTES_PER_MS} ms)")
        assert cached.entry is not None
        await self._add_transcript(cached.entry)

    async def _connect(self):
        cached = self._cached
        if cached is not None and cached.entry is None and self._phone is None:
            return  # Pipecat's connect at setup: the greeting plays first, start() connects
        await super()._connect()

    async def _greet_early(self) -> None:
        if self._cached is None:
            await super()._greet_early()
        elif not self._greeted:
            await self._tell_greeting()

    async def _maybe_greet(self) -> None:
        if self._cached is None:
            await super()._maybe_greet()
        elif not self._greeted and self._api_session_ready:
            await self._tell_greeting()

    async def _tell_greeting(self, *, again: bool = False) -> None:
        """Tell the model it said the greeting (what the caller heard of it), asking nothing.

        The item goes first in the conversation (``previous_item_id="root"``), before
        anything the caller said meanwhile.

        Args:
            again: The greeting is made again (cut by a barge-in): a fresh item id.
        """
        cached = self._cached
        assert cached is not None
        self._greeted = True
        self._greeting_done = True  # no greeting response to wait for
        if not cached.spoken:
            return  # cut off before a word was heard
        # The first time, the item takes the id its audio has on the phone.
        item_id = cached.told_id = greeting_item_id() if again else cached.item_id
        self._messages_added_manually[item_id] = True  # Pipecat: no response starts
        content = events.ItemContent(type="output_text", text=cached.spoken)
        item = events.ConversationItem(
            id=item_id, type="message", role="assistant", content=[content]
        )
        await self.send_client_event(
            events.ConversationItemCreateEvent(previous_item_id="root", item=item)
        )

    #
    # barge-in
    #

    async def _barge_in(self) -> bool:
        capture = self._capture
        if capture is not None and capture.response_id is not None:
            self._capture = None  # the model's greeting cut before it was done: not kept
        cached = self._cached
        if cached is None or not cached.live or self._phone is None:
            return await super()._barge_in()
        cached.live = False
        if self._phone.confirmed_bytes(cached.item_id) >= len(cached.audio):
            return await super()._barge_in()  # heard in full already
        # Clear the phone first (the greeting is no item of the ledger's), then the rest.
        heard = (await self._phone.interrupt([cached.item_id])).get(cached.item_id, 0)
        interrupted = await super()._barge_in()
        if heard >= len(cached.audio):
            return interrupted
        await self._cut_greeting(cached, heard)
        if not interrupted:
            await self.push_frame(InterruptionFrame())
        return True

    async def _cut_greeting(self, cached: CachedAudio, heard: int) -> None:
        """The caller cut the cached greeting off after ``heard`` bytes: keep what was heard."""
        cached.cut(heard)
        self.barge_ins += 1
        self.call_events.barge_in(heard / BYTES_PER_MS, cached.told_id or cached.item_id)
        logger.debug(f"{self} cached greeting cut after {heard // BYTES_PER_MS} ms")
        if cached.told_id is not None:
            told, cached.told_id = cached.told_id, None
            await self.send_client_event(events.ConversationItemDeleteEvent(item_id=told))
            await self._tell_greeting(again=True)

    #
    # capturing the model's greeting
    #

    def _asked_for_greeting(self) -> bool:
        """Whether the response asked for last is the greeting."""
        return (
            bool(self._greeting)
            and not self._greeting_done
            and self._last_instructions is not None
            and self._last_instructions == self._greeting_instructions()
        )

    async def _handle_evt_response_created(self, evt):
        greeting = self._asked_for_greeting()
        await super()._handle_evt_response_created(evt)
        if not greeting:
            return
        self.greeting_source = self.greeting_source or "model"
        if self._capture is not None:
            self._capture.response_id = evt.response.id
            self._capture.audio.clear()  # a response asked for again starts over

    async def _handle_evt_audio_delta(self, evt):
        capture = self._capture
        if capture is not None and capture.response_id == evt.response_id:
            if self._audio_ready:
                capture.audio += base64.b64decode(evt.delta)
            else:  # before audio/pcmu was confirmed: not the phone's audio
                self._capture = None
        await super()._handle_evt_audio_delta(evt)

    async def _handle_evt_response_done(self, evt):
        capture = self._capture
        if capture is not None and capture.response_id == evt.response.id:
            if evt.response.status == "completed":
                self._capture = None
                if capture.cache.put(capture.key, bytes(capture.audio)):
                    ms = len(capture.audio) // BYTES_PER_MS
                    logger.info(f"{self} greeting cached for bot '{capture.key.bot}' ({ms} ms)")
            elif evt.response.status != "failed":
                self._capture = None  # cancelled or incomplete: not whole
            # failed: it is asked for again once; that one may be captured
        await super()._handle_evt_response_done(evt)

    def _forget_session(self) -> None:
        super()._forget_session()
        if self._capture is not None and self._capture.response_id is not None:
            self._capture = None  # the greeting's response went with the session
        cached = self._cached
        if cached is not None and cached.entry is not None:
            # The new session is given the transcript, the greeting with it.
            cached.told_id = None
            self._greeted = self._greeting_done = True
