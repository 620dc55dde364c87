#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A cached greeting on one call, either engine: playing it, cutting it, its transcript entry.

Both agents (Realtime's :mod:`~pipecat_realtime_twilio.agent.greeting` and
GPT-Live's :mod:`~pipecat_realtime_twilio.agent.live_greeting`) play a greeting from
the :class:`~pipecat_realtime_twilio.agent.greeting_cache.GreetingCache` the same
way: one :class:`~pipecat_realtime_twilio.frames.RealtimeAudioFrame` of the cached
μ-law, under an item id of its own, to the phone output as soon as the stream has
started (:func:`start_playing`), the words in the transcript as a
:class:`CachedGreetingEntry`; a caller who talks over it cuts the entry to the
words heard (:meth:`CachedAudio.cut`). How the model is told differs per engine.
"""

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pipecat_realtime_twilio.agent.ledger import TranscriptEntry, cut_words
from pipecat_realtime_twilio.audio import BYTES_PER_MS, SAMPLE_RATE, ulaw_to_pcm16
from pipecat_realtime_twilio.frames import RealtimeAudioFrame

GreetingSource = Literal["cache", "model"]
"""Where a call's greeting came from (the call record's ``greeting``)."""


@dataclass
class CachedGreetingEntry(TranscriptEntry):
    """The transcript entry of a greeting played from the cache (``"cached": true``)."""

    def as_dict(self) -> dict[str, Any]:
        """The entry as call records keep it, marked cached."""
        turn = super().as_dict()
        turn["cached"] = True
        return turn


def greeting_item_id() -> str:
    """A fresh id for a greeting's item (client-chosen: at most 32 characters)."""
    return f"greeting_{secrets.token_hex(8)}"


@dataclass
class CachedAudio:
    """A greeting from the cache, for one call.

    Parameters:
        text: The greeting's words.
        audio: Its 8 kHz μ-law.
        item_id: Its audio's item on the phone (and, on Realtime, the model's item).
        spoken: The words the model is told it said (cut by a barge-in).
        told_id: Realtime: the item in the model's conversation, once told.
        entry: Its transcript entry, once playing.
        live: On the phone, not yet heard in full (a barge-in may cut it).
    """

    text: str
    audio: bytes
    item_id: str = field(default_factory=greeting_item_id)
    spoken: str = ""
    told_id: str | None = None
    entry: CachedGreetingEntry | None = None
    live: bool = False

    def __post_init__(self) -> None:
        self.spoken = self.spoken or self.text

    def cut(self, heard: int) -> None:
        """The caller cut it off after ``heard`` bytes: keep the words heard.

        Args:
            heard: Bytes of it the caller heard.
        """
        self.live = False
        self.spoken = cut_words(self.text, heard / len(self.audio))
        if self.entry is not None:
            self.entry.text, self.entry.interrupted = self.spoken, True
            self.entry.at = time.time()


def start_playing(cached: CachedAudio) -> RealtimeAudioFrame:
    """A cached greeting starts playing now: its entry made, it goes live; its audio frame.

    The agent adds ``cached.entry`` to its transcript and hands the frame to the
    phone output (:meth:`~pipecat_realtime_twilio.phone.output.TwilioOutputTransport.play`)
    or down the pipeline.

    Args:
        cached: The greeting.

    Returns:
        The greeting's audio, one frame under ``cached.item_id``.
    """
    cached.live = True
    now = time.time()
    cached.entry = CachedGreetingEntry(
        role="bot",
        text=cached.spoken,
        at=now + len(cached.audio) / BYTES_PER_MS / 1000,
        started_at=now,
    )
    return RealtimeAudioFrame(
        audio=ulaw_to_pcm16(cached.audio),
        sample_rate=SAMPLE_RATE,
        num_channels=1,
        item_id=cached.item_id,
        ulaw=cached.audio,
    )
