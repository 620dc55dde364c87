#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The heard ledger: what the model said, what reached the phone, what the caller heard.

A Realtime response speaks through one or more assistant items, each a stream
of audio deltas with a transcript beside it. The phone plays that audio later
than it arrives, and a barge-in (the caller starting to talk) cuts it off
somewhere. :class:`HeardLedger` keeps, per assistant item and per response,
what is needed to make the model's memory and the call's transcript match what
the caller actually heard:

- per item: its content index, its response, and how many bytes of its audio
  arrived that the phone has not yet confirmed playing;
- per response: its transcript so far, and the share of its audio that was
  heard when it was cut off;
- which responses were cut off, so their late audio is dropped.

Barge-in is "clear the phone, ask the ledger, send the truncates": the agent
clears the phone, which says how many bytes of each item were heard, and
:meth:`HeardLedger.cut` turns that into the ``conversation.item.truncate``
events to send (never beyond an item's audio) and cuts the transcripts.

The ledger does no I/O and knows nothing of Pipecat or the API; it is tested in
milliseconds on its own (``tests/test_ledger.py``).
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pipecat_realtime_twilio.audio import BYTES_PER_MS

ENTRIES_KEPT = 8
"""Bot transcript entries a late cut can still reach (the newest ones)."""


@dataclass
class TranscriptEntry:
    """One utterance of the call.

    Parameters:
        role: ``"caller"`` or ``"bot"``.
        text: What was said.
        at: Unix time the utterance was complete.
        started_at: Unix time it began, when known: the caller's speech detected, or
            the first audio of the bot's answer arriving (a recording is played from
            there).
        interrupted: The caller cut the bot off; ``text`` is cut to about what was heard.
        unrecognised: The caller spoke but their words could not be transcribed;
            ``text`` is :data:`UNRECOGNISED_SPEECH`.
    """

    role: Literal["caller", "bot"]
    text: str
    at: float = field(default_factory=time.time)
    interrupted: bool = False
    unrecognised: bool = False
    started_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The entry as call records keep it (``started_at`` and ``unrecognised`` when set)."""
        turn: dict[str, Any] = {
            "role": self.role,
            "text": self.text,
            "at": self.at,
            "interrupted": self.interrupted,
        }
        if self.started_at is not None:
            turn["started_at"] = self.started_at
        if self.unrecognised:
            turn["unrecognised"] = True
        return turn


UNRECOGNISED_SPEECH = "(unrecognised speech)"
"""The text of a caller's turn whose transcription failed (the model heard the audio)."""


@dataclass(frozen=True)
class Truncation:
    """A ``conversation.item.truncate`` to send: the item ends where the caller stopped hearing.

    Parameters:
        item_id: The assistant item.
        content_index: Its audio content part.
        audio_end_ms: What the caller heard of it, in ms (never more than it has).
    """

    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True)
class Cut:
    """What a barge-in cut off.

    Parameters:
        truncations: The truncates to send, one per item the caller did not hear in full.
        interrupted: Whether any audio went unheard (the bot was interrupted).
        heard_ms: What the caller heard of the answers cut off (every item of each
            response not heard in full), in ms.
        item_id: The first item cut off, if any.
    """

    truncations: list[Truncation]
    interrupted: bool
    heard_ms: float = 0.0
    item_id: str | None = None


@dataclass
class _Item:
    content_index: int
    response_id: str
    received: int = 0  # bytes of audio arrived


class HeardLedger:
    """Per assistant item and response: the audio received, the ms heard, the transcript cut."""

    def __init__(self, entries_kept: int = ENTRIES_KEPT):
        """Initialize an empty ledger.

        Args:
            entries_kept: How many of the newest bot entries a late cut can still reach.
        """
        self._entries_kept = entries_kept
        self._items: dict[str, _Item] = {}
        self._response_id: str | None = None
        self._cut_responses: set[str] = set()
        self._texts: dict[str, list[str]] = {}
        self._heard_shares: dict[str, float] = {}
        self._entries: OrderedDict[str, TranscriptEntry] = OrderedDict()
        self._first_audio_at: dict[str, float] = {}  # per response in progress

    #
    # what the model sends
    #

    def response_started(self, response_id: str) -> None:
        """A response began (``response.created``).

        Args:
            response_id: The response.
        """
        self._response_id = response_id
        self._texts[response_id] = []

    def audio(self, item_id: str, content_index: int, response_id: str, size: int) -> bool:
        """Audio of an item arrived (``response.output_audio.delta``).

        Args:
            item_id: The assistant item.
            content_index: Its content part.
            response_id: The response it belongs to.
            size: Bytes of μ-law in the delta.

        Returns:
            Whether to play it: False for late audio of a response that was cut off.
        """
        if response_id in self._cut_responses:
            return False
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item(content_index, response_id)
            if response_id not in self._first_audio_at:
                self._first_audio_at[response_id] = time.time()
        item.received += size
        return True

    def text(self, response_id: str, delta: str) -> None:
        """A piece of a response's transcript arrived.

        Args:
            response_id: The response.
            delta: The text.
        """
        self._texts.setdefault(response_id, []).append(delta)

    def response_done(self, response_id: str) -> TranscriptEntry | None:
        """A response ended (``response.done``): its bot entry, cut if it was cut off.

        Args:
            response_id: The response.

        Returns:
            The transcript entry, or None if the response said nothing.
        """
        if self._response_id == response_id:
            self._response_id = None
        self._cut_responses.discard(response_id)
        text = "".join(self._texts.pop(response_id, [])).strip()
        share = self._heard_shares.pop(response_id, None)
        started_at = self._first_audio_at.pop(response_id, None)
        if not text:
            return None
        entry = TranscriptEntry(role="bot", text=text, started_at=started_at)
        if share is not None:
            entry.text, entry.interrupted = cut_words(text, share), True
        self._entries[response_id] = entry
        while len(self._entries) > self._entries_kept:
            self._entries.popitem(last=False)
        return entry

    #
    # what the caller heard
    #

    @property
    def unconfirmed(self) -> dict[str, int]:
        """Item -> bytes received of it, for every item not yet confirmed heard in full."""
        return {item_id: item.received for item_id, item in self._items.items()}

    def cut(self, heard: Mapping[str, int]) -> Cut:
        """The caller cut in: what to truncate, given what the phone says was heard.

        The response in progress is marked cut off (its late audio is dropped),
        every item is truncated at what was heard of it (never beyond what
        arrived), each cut response's transcript is cut to the share heard, and
        the items are forgotten.

        Args:
            heard: Item -> bytes of it the caller heard (from clearing the phone).

        Returns:
            The truncates to send, whether anything went unheard, and how much of
            the answers cut off was heard.
        """
        if self._response_id is not None:
            self._cut_responses.add(self._response_id)
        truncations: list[Truncation] = []
        totals: dict[str, list[int]] = {}  # response -> [heard, received]
        for item_id, item in self._items.items():
            played = min(heard.get(item_id, 0), item.received)
            total = totals.setdefault(item.response_id, [0, 0])
            total[0] += played
            total[1] += item.received
            if played < item.received:
                truncations.append(Truncation(item_id, item.content_index, played // BYTES_PER_MS))
        self._items.clear()
        heard_bytes = 0
        for response_id, (played, received) in totals.items():
            if played < received:
                self._cut_response(response_id, played / received)
                heard_bytes += played
        return Cut(
            truncations=truncations,
            interrupted=bool(truncations),
            heard_ms=heard_bytes / BYTES_PER_MS,
            item_id=truncations[0].item_id if truncations else None,
        )

    def prune(self, confirmed: Callable[[str], int]) -> list[str]:
        """Forget the items the phone has confirmed playing in full.

        Args:
            confirmed: Item -> bytes of it the phone confirmed playing.

        Returns:
            The items forgotten.
        """
        done = [i for i, item in self._items.items() if confirmed(i) >= item.received]
        for item_id in done:
            del self._items[item_id]
        return done

    def forget_items(self) -> None:
        """Forget every item: without a phone, or when their session is gone."""
        self._items.clear()

    def forget_session(self) -> None:
        """The session is gone, and its items and response in progress with it."""
        self._items.clear()
        self._response_id = None
        self._first_audio_at.clear()

    def _cut_response(self, response_id: str, share: float) -> None:
        entry = self._entries.get(response_id)
        if entry is not None:
            if not entry.interrupted:
                entry.text, entry.interrupted = cut_words(entry.text, share), True
        elif response_id in self._texts:  # not done yet: cut when it is
            self._heard_shares[response_id] = share
        # Otherwise the response ended too long ago for its entry to be kept.


def cut_words(text: str, share: float) -> str:
    """The first ``share`` of ``text``'s words (about what the caller heard).

    Args:
        text: The whole text.
        share: The share heard, 0 to 1.
    """
    words = text.split()
    return " ".join(words[: round(len(words) * max(0.0, min(1.0, share)))])
