#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Warm transfer: the caller on hold, a human dialled into a conference, then bridged.

One :class:`WarmTransfer` per attempt (``CallSession.warm_transfer``):

1. Hold audio starts on the caller's stream (:mod:`.hold_audio`); the bot stays on
   the stream (its tool does not let it hear the caller meanwhile).
2. The human's call is placed through the REST API: Twilio says the summary in its
   own voice, then puts the human into the call's conference room (:mod:`.conference`).
3. Every ``poll_secs`` the runner asks Twilio how the human's call goes, from the
   instance that holds the caller's stream (no callback, no shared state).
4. Once the human is in the room the hold audio stops and the caller's call is
   updated to join the room: Twilio ends the stream, the bot leaves, the two talk.
   The call ends as ``warm transferred to NUMBER``
   (:class:`WarmTransferEnd`: a transfer, for metrics and ``CallRecord.transfers``).
5. Busy, failed, no answer within ``ring_secs`` (the runner cancels the call), or the
   human hanging up before joining: the hold audio stops and the outcome goes back
   (the bot tells the caller and carries on).

The caller hanging up at any point ends the human's call (canceled while it rings,
hung up once answered), even when the call's task is being cancelled.
:attr:`WarmTransfer.record` is what the call record keeps (``CallRecord.warm_transfer``).
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from loguru import logger

from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.logs import masked_number
from pipecat_realtime_twilio.phone.conference import (
    RINGING,
    SUMMARY_INTRO,
    ConferenceRest,
    caller_leg_twiml,
    human_leg_twiml,
    room_name,
)
from pipecat_realtime_twilio.phone.ending import CallEnd, EndKind
from pipecat_realtime_twilio.phone.hold_audio import HoldAudio
from pipecat_realtime_twilio.phone.output import TwilioOutputTransport
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.targets import check_transfer_target

DEFAULT_RING_SECS = 25.0
"""How long the human's phone rings before the caller is back with the bot."""

POLL_SECS = 0.5
"""How often Twilio is asked how the human's call goes."""

BRIDGE_WAIT_SECS = 2.0
"""Most seconds the bridge waits for the hold audio's clear to land before the update."""

JOIN_EXTRA_SECS = 15.0
"""After the human answered: the summary's time plus this, for the human to join the room."""

SUMMARY_MAX_CHARS = 600
"""Longest summary said to the human (a longer one is cut at a word)."""

POLL_ERRORS_TOLERATED = 5
"""REST errors in a row while polling before the transfer counts as failed."""

_SPEECH_SECS_PER_CHAR = 0.08  # Twilio's <Say>, generously


class Outcome(StrEnum):
    """How a warm transfer attempt ended."""

    BRIDGED = "bridged"
    """The human joined the room and the caller was moved there: the bot left."""
    NO_ANSWER = "no_answer"
    """Nobody answered within ``ring_secs``."""
    BUSY = "busy"
    """The human's line was busy."""
    FAILED = "failed"
    """The call could not be placed, or the bridge could not be made."""
    DECLINED = "declined"
    """The human answered, then hung up before joining the room."""
    CALLER_HUNG_UP = "caller_hung_up"
    """The caller hung up while on hold: the human's call was ended."""


_FINAL_STATUSES = {
    "busy": Outcome.BUSY,
    "no-answer": Outcome.NO_ANSWER,
    "failed": Outcome.FAILED,
    "canceled": Outcome.NO_ANSWER,
    "completed": Outcome.DECLINED,  # Twilio's "completed" is a call that was answered
}


@dataclass(frozen=True)
class WarmTransferEnd(CallEnd):
    """The end of a call whose caller was bridged with a human (a kind of transfer).

    ``kind`` is :attr:`EndKind.TRANSFERRED` (metrics count it as ``transferred``;
    the REST update is a transfer's); ``detail`` is the human's number.
    """

    @property
    def reason(self) -> str:
        """``warm transferred to NUMBER``."""
        return f"warm transferred to {self.detail}"

    def transfer(self) -> dict[str, Any] | None:
        """The transfer as ``CallRecord.transfers`` keeps it, ``kind`` ``warm_transfer``."""
        return {"target": self.detail, "at": self.at, "kind": "warm_transfer"}


class TransferringCall(Protocol):
    """What a warm transfer uses of the call (a ``CallSession``)."""

    rest: TwilioRest | None

    @property
    def call_sid(self) -> str:
        """The caller's call."""

    @property
    def parameters(self) -> dict[str, str]:
        """The stream's parameters (``from``, ``to``, ``direction``)."""

    def output(self) -> TwilioOutputTransport:
        """The phone output."""


class WarmTransfer:
    """One warm transfer attempt of a call (see the module doc)."""

    def __init__(
        self,
        call: TransferringCall,
        number: str,
        summary: str,
        *,
        gone: asyncio.Event,
        finish: Callable[..., Awaitable[None]],
        ring_secs: float = DEFAULT_RING_SECS,
        caller_id: str | None = None,
        hold_audio: bytes | None = None,
        intro: str = SUMMARY_INTRO,
        poll_secs: float = POLL_SECS,
        before_bridge: Callable[[], Awaitable[None]] | None = None,
    ):
        """Initialize the attempt.

        Args:
            call: The caller's call.
            number: The human's phone number (E.164) or SIP address.
            summary: What the human hears about the call before joining.
            gone: Set when the caller hung up.
            finish: The call's ending path, ``finish(end, timeout=secs)``: once the
                caller heard everything (up to ``secs``), the REST update with the
                end's TwiML, else the ``<Connect action>``; raises ``CallControlError``
                if neither way works.
            ring_secs: How long the human's phone may ring.
            caller_id: The human sees this number; by default the call's number of
                the account (``To`` of an inbound call, ``From`` of an outbound one).
            hold_audio: 8 kHz μ-law the caller hears on hold; the bundled chime by default.
            intro: Said to the human before the summary.
            poll_secs: How often Twilio is asked about the human's call.
            before_bridge: Awaited once the human is in the room, right before the
                caller is moved there (e.g. a tool reporting its result while it can:
                the call's pipeline ends with the bridge).

        Raises:
            InvalidTransferTarget: If ``number`` is neither a number nor a SIP address.
            ValueError: If ``ring_secs`` or ``poll_secs`` is not positive.
        """
        if ring_secs <= 0 or poll_secs <= 0:
            raise ValueError("ring_secs and poll_secs must be positive")
        self._call = call
        self._number = check_transfer_target(number)
        self._summary = _cut(summary.strip(), SUMMARY_MAX_CHARS)
        self._gone = gone
        self._finish = finish
        self._ring_secs = ring_secs
        self._caller_id = caller_id
        self._hold_audio = hold_audio
        self._intro = intro
        self._poll_secs = poll_secs
        self._before_bridge = before_bridge
        self._room = room_name(call.call_sid)
        self._human: str | None = None
        self._creating: asyncio.Future[str] | None = None
        self._hanging_up: asyncio.Future[None] | None = None
        self._answered = False
        self._started = time.monotonic()
        self.record: dict[str, Any] = {
            "number": self._number,
            "outcome": None,
            "human_call_sid": None,
            "conference": self._room,
            "summary": self._summary,
            "rang_secs": None,
            "held_secs": None,
            "at": time.time(),
            "error": None,
        }

    async def run(self) -> Outcome:
        """Hold the caller, dial the human, then bridge them or come back.

        Returns:
            The outcome (also in :attr:`record`). Problems (no REST credentials, no
            caller ID, Twilio refusing) are :attr:`Outcome.FAILED`, with ``error`` set.
        """
        rest = self._call.rest
        caller_id = self._caller_id or self._own_number()
        if rest is None:
            return self._fail("a warm transfer needs Twilio REST credentials")
        if not caller_id:
            return self._fail("no caller ID for the human's call: set the transfer's caller_id")
        dialer = ConferenceRest(rest)
        hold = HoldAudio(self._call.output(), self._hold_audio, item=f"hold-{self._room}")
        hold.start()
        try:
            try:
                joined = await self._ring(dialer, caller_id)
            finally:
                await hold.stop()
                self.record["held_secs"] = round(time.monotonic() - self._started, 3)
            if joined:
                await self._bridge_now(dialer)
        except asyncio.CancelledError:  # the call's task is ending: never leave the human ringing
            self._settle(Outcome.CALLER_HUNG_UP if self._gone.is_set() else Outcome.FAILED)
            if self.record["outcome"] != Outcome.BRIDGED:
                self._end_human_later(dialer)
            raise
        return self._outcome()

    #
    # the human's call
    #

    async def _ring(self, dialer: ConferenceRest, caller_id: str) -> bool:
        """Place the human's call and follow it; whether the human joined the room."""
        twiml = human_leg_twiml(self._summary, self._room, intro=self._intro)
        # Shielded: a caller hanging up meanwhile must still learn the call's SID to end it.
        self._creating = asyncio.ensure_future(
            dialer.dial(self._number, caller_id, twiml, self._ring_secs)
        )
        try:
            self._human = await asyncio.shield(self._creating)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # TwilioRestException (a bad number...), timeouts
            self._fail(f"the human's call could not be placed: {e}")
            return False
        self.record["human_call_sid"] = self._human
        logger.info(
            f"Warm transfer of call {self._call.call_sid}: {masked_number(self._number)} "
            f"is call {self._human}"
        )
        loop = asyncio.get_running_loop()
        dialled = answered_at = loop.time()
        errors = 0
        while True:
            if loop.time() - dialled > self._ring_secs + self._join_secs():
                self._fail("no answer from Twilio about the human's call in time")
                await self._hang_up(dialer, answered=self._answered)
                return False
            if await self._caller_gone_within(self._poll_secs):
                self._settle(Outcome.CALLER_HUNG_UP)
                await self._hang_up(dialer, answered=self._answered)
                return False
            try:
                status = await dialer.status(self._human)
                joined = status == "in-progress" and await dialer.in_room(self._room, self._human)
                errors = 0
            except Exception as e:  # Twilio unreachable for a moment: ask again
                errors += 1
                logger.warning(f"Warm transfer: asking Twilio about {self._human} failed: {e!r}")
                if errors >= POLL_ERRORS_TOLERATED:
                    self._fail(f"Twilio could not be asked about the human's call: {e}")
                    await self._hang_up(dialer, answered=self._answered)
                    return False
                continue
            now = loop.time()
            if status == "in-progress" and not self._answered:
                self._answered, answered_at = True, now
                self.record["rang_secs"] = round(now - dialled, 3)
            if joined:
                return True
            if status in RINGING:
                if now - dialled >= self._ring_secs:
                    self.record["rang_secs"] = round(now - dialled, 3)
                    self._settle(Outcome.NO_ANSWER)
                    await self._hang_up(dialer, answered=False)
                    return False
            elif status == "in-progress":
                if now - answered_at >= self._join_secs():
                    self._fail("the human answered but did not join the room in time")
                    await self._hang_up(dialer, answered=True)
                    return False
            else:  # it ended before joining
                if self.record["rang_secs"] is None:
                    self.record["rang_secs"] = round(now - dialled, 3)
                self._settle(_FINAL_STATUSES.get(status, Outcome.NO_ANSWER))
                return False

    def _join_secs(self) -> float:
        spoken = len(self._intro) + len(self._summary)
        return spoken * _SPEECH_SECS_PER_CHAR + JOIN_EXTRA_SECS

    async def _caller_gone_within(self, secs: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._gone.wait(), secs)
        return self._gone.is_set()

    async def _bridge_now(self, dialer: ConferenceRest) -> None:
        """Move the caller into the room where the human waits."""
        assert self._human is not None
        if self._gone.is_set():  # the caller hung up as the human joined
            self._settle(Outcome.CALLER_HUNG_UP)
            await self._hang_up(dialer, answered=True)
            return
        end = WarmTransferEnd(
            EndKind.TRANSFERRED, self._number, next_twiml=caller_leg_twiml(self._room)
        )
        # Settled first: once Twilio takes the update it ends the stream, and the call's
        # task (this one) may be cancelled before the update's answer is read.
        self._settle(Outcome.BRIDGED)
        if self._before_bridge is not None:
            try:
                await self._before_bridge()
            except Exception as e:
                logger.opt(exception=e).warning(f"Warm transfer: before_bridge failed: {e}")
        try:
            await self._finish(end, timeout=BRIDGE_WAIT_SECS)
        except CallControlError as e:
            self.record["outcome"] = None
            self._fail(f"the caller could not be moved to the room: {e}")
            await self._hang_up(dialer, answered=True)
            return
        logger.info(f"Warm transfer of call {self._call.call_sid}: bridged with {self._human}")

    async def _hang_up(self, dialer: ConferenceRest, *, answered: bool) -> None:
        """End the human's call, once: shielded, so the call's task ending does not stop it."""
        assert self._human is not None
        if self._hanging_up is None:
            self._hanging_up = asyncio.ensure_future(dialer.hang_up(self._human, answered=answered))
        await asyncio.shield(self._hanging_up)

    def _end_human_later(self, dialer: ConferenceRest) -> None:
        """End the human's call from a task of its own (this one is being cancelled)."""
        creating = self._creating
        if self._hanging_up is not None or (self._human is None and creating is None):
            return  # already being ended (the shielded request goes on), or never placed

        async def end() -> None:
            human = self._human
            if human is None and creating is not None:
                try:
                    human = self._human = self.record["human_call_sid"] = await creating
                except Exception:  # it was never placed
                    return
            if human is not None:
                await dialer.hang_up(human, answered=self._answered)

        task = asyncio.get_running_loop().create_task(end(), name="warm-transfer-hang-up")
        _CLEAN_UPS.add(task)
        task.add_done_callback(_CLEAN_UPS.discard)

    #
    # the record
    #

    def _own_number(self) -> str | None:
        parameters = self._call.parameters
        outbound = parameters.get("direction") == "outbound"
        return (parameters.get("from") if outbound else parameters.get("to")) or None

    def _settle(self, outcome: Outcome) -> None:
        """Keep the outcome: the first word counts."""
        if self.record["outcome"] is None:
            self.record["outcome"] = str(outcome)
            logger.info(f"Warm transfer of call {self._call.call_sid}: {outcome}")

    def _fail(self, error: str) -> Outcome:
        if self.record["outcome"] is None:
            self.record["error"] = error
            logger.error(f"Warm transfer of call {self._call.call_sid} failed: {error}")
        self._settle(Outcome.FAILED)
        return self._outcome()

    def _outcome(self) -> Outcome:
        return Outcome(self.record["outcome"])


_CLEAN_UPS: set[asyncio.Task] = set()  # hang-ups outliving the call's task


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + "…"


def warm_transfer_record(attempts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What ``CallRecord.warm_transfer`` keeps of a call's attempts: the last one.

    Args:
        attempts: The call's attempts' records, in order (``CallSession.warm_transfers``).

    Returns:
        The last attempt's record with ``attempts`` (how many there were), or None.
    """
    if not attempts:
        return None
    return {**attempts[-1], "attempts": len(attempts)}
