#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""GPT-Live's audio as utterances, and what the caller heard of them.

GPT-Live streams its output continuously at real-time pace, silence included:
there are no responses, items or ends of audio in the protocol. A phone line
needs them: the phone output should go idle between turns (so "everything was
heard" can come true, and a call can end after its goodbye), and a barge-in
should know what the caller heard. So:

- :class:`LiveSpeech` cuts the stream into utterances. A chunk is quiet when
  every sample is within :data:`QUIET_PEAK` of zero. Quiet chunks before an
  utterance are not played; once one starts, quiet chunks are played as they
  came for up to ``hangover_ms`` (a pause inside speech keeps its exact audio),
  and a longer quiet ends the utterance: its further quiet is not played, and
  the phone goes idle. Each utterance is an item (``live_item_N``) for the
  phone output's playback clock.
- :func:`is_voice` tells a packet of the caller's audio that holds speech, so the
  agent knows, as it happens, that the caller speaks over the model (the model's
  transcripts of the caller come in late, and after the turn).
- :class:`LiveLedger` keeps, per item, the bytes played and where its speech
  ends, and per reply (a bot turn of the transcript) its text, so a barge-in
  can tell whether speech went unheard (trailing quiet does not count) and cut
  the reply's text to the share of its speech the caller heard.

Nothing here does I/O; it is tested on its own (``tests/test_live_ledger.py``).
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from pipecat_realtime_twilio.agent.ledger import TranscriptEntry, cut_words
from pipecat_realtime_twilio.audio import BYTES_PER_MS, ulaw_to_pcm16

QUIET_PEAK = 64
"""Largest sample (16-bit PCM, about -54 dBFS) in a chunk that counts as quiet."""

SPEECH_HANGOVER_MS = 300
"""Quiet after speech that is still played (a pause); a longer quiet ends the utterance."""

REPLIES_KEPT = 8
"""Done replies whose entry a late barge-in can still cut."""

VOICE_RMS = 500.0
"""RMS (16-bit PCM, about -36 dBFS) above which a packet of the caller's audio is voice."""

_SAMPLES = np.frombuffer(ulaw_to_pcm16(bytes(range(256))), dtype="<i2").astype(np.float64)
_QUIET_BYTES = bytes(code for code in range(256) if abs(_SAMPLES[code]) <= QUIET_PEAK)
_SQUARES = _SAMPLES * _SAMPLES


def is_quiet(ulaw: bytes) -> bool:
    """Whether every μ-law sample of ``ulaw`` is within :data:`QUIET_PEAK` of zero."""
    return not ulaw.translate(None, _QUIET_BYTES)


def is_voice(ulaw: bytes) -> bool:
    """Whether a packet of μ-law is loud enough to be the caller speaking (:data:`VOICE_RMS`)."""
    if not ulaw:
        return False
    codes = np.frombuffer(ulaw, dtype=np.uint8)
    return float(_SQUARES[codes].mean()) > VOICE_RMS * VOICE_RMS


@dataclass(frozen=True)
class Step:
    """What to do with one chunk of the model's audio.

    Parameters:
        item: The utterance to play the chunk in; None: do not play it.
        began: The chunk begins an utterance.
        ended: An utterance that ended with this chunk (it is not played), if any.
        quiet: The chunk is quiet.
    """

    item: str | None
    began: bool = False
    ended: str | None = None
    quiet: bool = False


class LiveSpeech:
    """Cuts the model's continuous audio into utterances (see the module docstring)."""

    def __init__(self, hangover_ms: float = SPEECH_HANGOVER_MS):
        """Initialize, between utterances.

        Args:
            hangover_ms: Quiet after speech still played before the utterance ends.
        """
        self._hangover_ms = hangover_ms
        self._item: str | None = None
        self._count = 0
        self.quiet_ms = 0.0
        """Quiet in a row so far in the utterance in progress, in ms."""
        self.last_speech_at = 0.0
        """``time.monotonic()`` of the last chunk of speech (not quiet)."""

    @property
    def item(self) -> str | None:
        """The utterance in progress, if any."""
        return self._item

    def feed(self, ulaw: bytes) -> Step:
        """Take the next chunk of the model's audio.

        Args:
            ulaw: The chunk.

        Returns:
            Whether to play it, and in which utterance.
        """
        quiet = is_quiet(ulaw)
        if not quiet:
            self.last_speech_at = time.monotonic()
            self.quiet_ms = 0.0
            if self._item is None:
                self._count += 1
                self._item = f"live_item_{self._count}"
                return Step(self._item, began=True)
            return Step(self._item)
        if self._item is None:
            return Step(None, quiet=True)
        self.quiet_ms += len(ulaw) / BYTES_PER_MS
        if self.quiet_ms <= self._hangover_ms:
            return Step(self._item, quiet=True)
        ended, self._item = self._item, None
        return Step(None, ended=ended, quiet=True)

    def end(self) -> str | None:
        """End the utterance in progress now (the caller cut in); return it, if any."""
        ended, self._item = self._item, None
        self.quiet_ms = 0.0
        return ended


@dataclass(frozen=True)
class LiveCut:
    """What a barge-in cut off.

    Parameters:
        interrupted: Speech went unheard (not only trailing quiet).
        heard_ms: Speech heard of the replies cut off, in ms.
        item_id: The first utterance cut off, if any.
    """

    interrupted: bool
    heard_ms: float = 0.0
    item_id: str | None = None


@dataclass
class _Item:
    reply: str
    received: int = 0  # bytes played of it
    speech: int = 0  # bytes up to the end of its last chunk of speech


@dataclass
class _Reply:
    texts: list[str] = field(default_factory=list)
    first_audio_at: float | None = None  # time.time()
    share: float | None = None  # of its speech heard, when cut


class LiveLedger:
    """Per utterance and reply: the audio played, the speech heard, the transcript cut."""

    def __init__(self, replies_kept: int = REPLIES_KEPT):
        """Initialize an empty ledger.

        Args:
            replies_kept: How many done replies a late cut can still reach.
        """
        self._replies_kept = replies_kept
        self._items: dict[str, _Item] = {}
        self._replies: dict[str, _Reply] = {}
        self._done: OrderedDict[str, TranscriptEntry] = OrderedDict()
        self._count = 0

    def reply_started(self) -> str:
        """A bot reply begins (its first audio or words): its id."""
        self._count += 1
        reply = f"live_reply_{self._count}"
        self._replies[reply] = _Reply()
        return reply

    def audio(self, item: str, reply: str, size: int, *, quiet: bool) -> None:
        """Audio of an utterance is being played.

        Args:
            item: The utterance.
            reply: The reply it belongs to.
            size: Bytes of μ-law.
            quiet: Whether the chunk is quiet.
        """
        entry = self._items.get(item)
        if entry is None:
            entry = self._items[item] = _Item(reply)
            state = self._replies.get(reply)
            if state is not None and state.first_audio_at is None:
                state.first_audio_at = time.time()
        entry.received += size
        if not quiet:
            entry.speech = entry.received

    def text(self, reply: str, delta: str) -> None:
        """Words of a reply arrived (``session.output_transcript.delta``)."""
        state = self._replies.get(reply)
        if state is not None:
            state.texts.append(delta)

    def reply_done(self, reply: str) -> TranscriptEntry | None:
        """A reply is over: its transcript entry, cut if the caller cut it off.

        Returns:
            The entry, or None if the reply said nothing.
        """
        state = self._replies.pop(reply, None)
        if state is None:
            return None
        text = "".join(state.texts).strip()
        if not text:
            return None
        entry = TranscriptEntry(role="bot", text=text, started_at=state.first_audio_at)
        if state.share is not None:
            entry.text, entry.interrupted = cut_words(text, state.share), True
        self._done[reply] = entry
        while len(self._done) > self._replies_kept:
            self._done.popitem(last=False)
        return entry

    @property
    def unconfirmed(self) -> dict[str, int]:
        """Utterance -> bytes played of it, for each not yet confirmed heard in full."""
        return {item: state.received for item, state in self._items.items()}

    def speech_pending(self, confirmed: Callable[[str], int]) -> bool:
        """Whether speech was played that the phone has not confirmed playing yet.

        Args:
            confirmed: Utterance -> bytes of it the phone confirmed playing.
        """
        return any(confirmed(item) < state.speech for item, state in self._items.items())

    def cut(self, heard: Mapping[str, int]) -> LiveCut:
        """The phone was cleared: what of each utterance's speech went unheard.

        Args:
            heard: Utterance -> bytes of it the caller heard (from clearing the phone).

        Returns:
            Whether speech went unheard, and how much of the cut replies was heard.
        """
        totals: dict[str, list[int]] = {}  # reply -> [speech heard, speech]
        first: str | None = None
        for item, state in self._items.items():
            played = min(heard.get(item, 0), state.received)
            total = totals.setdefault(state.reply, [0, 0])
            total[0] += min(played, state.speech)
            total[1] += state.speech
            if played < state.speech and first is None:
                first = item
        self._items.clear()
        heard_bytes = 0
        for reply, (played, speech) in totals.items():
            if played < speech:
                self._cut_reply(reply, played / speech)
                heard_bytes += played
        return LiveCut(first is not None, heard_bytes / BYTES_PER_MS, first)

    def prune(self, confirmed: Callable[[str], int]) -> list[str]:
        """Forget the utterances the phone confirmed playing in full; return them."""
        done = [i for i, state in self._items.items() if confirmed(i) >= state.received]
        for item in done:
            del self._items[item]
        return done

    def forget_session(self) -> None:
        """The session is gone: its utterances with it (their replies end as they are)."""
        self._items.clear()

    def _cut_reply(self, reply: str, share: float) -> None:
        entry = self._done.get(reply)
        if entry is not None:
            if not entry.interrupted:
                entry.text, entry.interrupted = cut_words(entry.text, share), True
            return
        state = self._replies.get(reply)
        if state is not None:
            state.share = share
