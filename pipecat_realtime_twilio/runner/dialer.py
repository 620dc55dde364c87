#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The campaign dialer every instance runs: claim a due number, place its call, follow it.

:class:`CampaignDialer` claims numbers from the shared queue
(:class:`~pipecat_realtime_twilio.runner.campaign_store.CampaignStore`: the pace, the
calling hours and the calls ringing hold across instances) while this instance has a
free line and is not draining (``CAMPAIGN_DIALER=false`` turns it off here), and places
each call at its slot through Twilio's REST API with status callbacks and async
answering-machine detection (``DetectMessageEnd``). The callbacks' URLs name the campaign,
the number and the try (``?campaign=ID&number=N&attempt=K``), so any instance can take
any of them and a late one of an earlier try changes nothing. What Twilio then tells the
runner is handled here too (:mod:`~pipecat_realtime_twilio.runner.campaign_routes` holds
the routes):

- the answered call waits in silence for AMD (``<Pause>``, then ``<Redirect>`` to the bot);
- AMD ``human``/``unknown``: the call is redirected to ``/incoming?bot=NAME``, the bot greets;
- ``machine_end_*``: the bot's voicemail text is said after the beep (``<Say>``, ``<Hangup/>``);
  without one, and for ``fax``/``machine_start``, the call is hung up. A machine never gets a
  Realtime session;
- status callbacks move the number on: a final ``busy``/``no-answer``/``failed`` is retried
  after ``retry_secs * 2**(try-1)`` (then its next calling hours), up to ``max_attempts``.

A number left ``dialing`` with no final callback (an instance died, a callback lost) is
reconciled by fetching its call from Twilio once it is older than its ring time plus a
call's longest life.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from loguru import logger

from pipecat_realtime_twilio.logs import field, masked_number
from pipecat_realtime_twilio.phone.rest import TwilioRest, TwilioRestException
from pipecat_realtime_twilio.phone.twiml import hangup_twiml, pause_then_redirect_twiml, say_twiml
from pipecat_realtime_twilio.runner.bots import Bot
from pipecat_realtime_twilio.runner.campaign_model import (
    AMD_WAIT_SECS,
    FINAL_STATUSES,
    HUMAN,
    Claim,
)
from pipecat_realtime_twilio.runner.campaign_store import CampaignStore
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.settings import Settings

INVALID_NUMBER_CODES = (21211, 21614, 21217)
"""Twilio errors that say the number itself cannot be called (``invalid``, not retried)."""

CALL_LIFE_SECS = 4 * 3600
"""A Twilio call's longest life: a number dialing longer than this and its ring is stale."""

UNPLACED_SECS = 120
"""A claimed number with no call after this long was never placed (its instance died)."""

MAX_RING_SECS = 600
"""The longest ring a campaign may ask for (``ring_secs``)."""

RECONCILE_EVERY_SECS = 30.0
"""How often stale numbers are looked for."""

Busy = Callable[[], "Awaitable[str | None] | str | None"]
"""Why this instance takes no more calls now (draining, full), or None."""


class CampaignDialer:
    """Places and follows campaign calls (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: CampaignStore,
        rest: TwilioRest | None,
        metrics: RunnerMetrics,
        bots: Callable[[], dict[str, Bot]],
        busy: Busy,
        *,
        instance: str,
        prefix: str = "",
        lines: Callable[[], int] | None = None,
    ):
        """Initialize the dialer (`start` starts it).

        Args:
            settings: The runner's settings (``CAMPAIGN_*``, ``PUBLIC_URL``).
            store: The campaigns.
            rest: Twilio's REST API; None: nothing is dialed.
            metrics: Where dials, AMD results and outcomes are counted.
            bots: The bots now (they reload).
            busy: Why this instance takes no more calls now, or None (``Admission.busy_reason``).
            instance: This instance's id, as the shared state knows it
                (``SharedState.instance_id``).
            prefix: Where the runner's routes are mounted.
            lines: This instance's free lines now (``Admission.capacity_left``): the
                calls it placed that ring or wait for AMD stay fewer, so that the people
                who answer find a line. None: ``MAX_CALLS``.
        """
        self.settings = settings
        self.store = store
        self.rest = rest
        self.metrics = metrics
        self._bots = bots
        self._busy = busy
        self._prefix = prefix
        self._lines = lines
        self.instance = instance
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    #
    # lifecycle
    #

    @property
    def enabled(self) -> bool:
        """Whether this instance dials: ``CAMPAIGN_DIALER``, REST credentials, ``PUBLIC_URL``."""
        return (
            self.settings.campaign_dialer
            and self.rest is not None
            and self.settings.public_url is not None
        )

    def start(self) -> None:
        """Start dialing (when enabled)."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="campaign-dialer")

    async def close(self) -> None:
        """Stop dialing and wait for the REST updates under way (briefly)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)

    def url(self, path: str, **query: str | int) -> str:
        """A public URL of the runner's route ``path`` with ``query``."""
        where = f"{self.settings.public_origin}{self._prefix}{path}"
        return f"{where}?{urlencode(query)}" if query else where

    async def _run(self) -> None:
        reconciled = 0.0
        while True:
            wait = 1.0
            try:
                if time.time() - reconciled >= RECONCILE_EVERY_SECS:
                    reconciled = time.time()
                    await self.reconcile()
                if await self._busy_now() is None:
                    # The calls this instance placed that ring or wait for AMD: fewer than this.
                    lines = self._lines() if self._lines is not None else self.settings.max_calls
                    result = await self.store.aclaim(self.instance, time.time(), lines)
                    for outcome in result.outcomes:
                        self.metrics.campaign_outcomes.labels(outcome).inc()
                    wait = result.wait
                    if result.claim is not None:
                        await self.place(result.claim)
                else:
                    wait = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database or Twilio failing: log, wait, go on
                logger.error(f"Campaign dialer: {type(e).__name__}: {field(e, 200)}")
                wait = 5.0
            await asyncio.sleep(max(wait, 0.02))

    async def _busy_now(self) -> str | None:
        reason = self._busy()
        if inspect.isawaitable(reason):
            reason = await reason
        return reason

    #
    # placing
    #

    async def place(self, claim: Claim) -> None:
        """Place a claimed number's call at its slot; a refusal ends or reschedules it.

        The number is given back, its try not counted, when the runner starts draining
        (or fills up) before the slot, or the dialer stops.

        Args:
            claim: The number.
        """
        assert self.rest is not None
        where: dict[str, str | int] = {
            "campaign": claim.campaign_id,
            "number": claim.number_id,
            "attempt": claim.attempt,
        }
        try:
            await asyncio.sleep(max(claim.at - time.time(), 0.0))
            reason = await self._busy_now()
        except asyncio.CancelledError:
            await asyncio.shield(self._release(claim))
            raise
        if reason is not None:
            logger.info(f"Campaign {claim.campaign_id}: not dialing now ({reason})")
            await self._release(claim)
            return
        try:
            call_sid = await self.rest.create_campaign_call(
                claim.number,
                claim.from_number,
                # The bot rides along (signed by Twilio with the URL): a person who answers
                # reaches it even while the database cannot say whose campaign this is.
                self.url("/campaign-answer", **where, bot=claim.bot),
                status_callback=self.url("/campaign-status", **where),
                amd_callback=self.url("/campaign-amd", **where),
                ring_secs=claim.ring_secs,
            )
        except TwilioRestException as e:
            invalid = e.code in INVALID_NUMBER_CODES
            self.metrics.campaign_dials.labels("refused" if invalid else "error").inc()
            logger.warning(
                f"Campaign {claim.campaign_id}: Twilio refused the call to "
                f"{masked_number(claim.number)} (HTTP {e.status}, code {e.code})"
            )
            detail = f"Twilio {e.code}: {field(e.msg, 150)}"
            await self._refused(where, "invalid" if invalid else None, detail)
            return
        except Exception as e:  # timeout or connection: whether it was placed is unknown
            self.metrics.campaign_dials.labels("error").inc()
            logger.warning(
                f"Campaign {claim.campaign_id}: placing a call failed: {type(e).__name__}"
            )
            await self._refused(where, None, f"placing the call failed: {type(e).__name__}")
            return
        self.metrics.campaign_dials.labels("placed").inc()
        await self.store.acall(
            "placed", claim.campaign_id, claim.number_id, claim.attempt, call_sid, time.time()
        )

    async def _release(self, claim: Claim) -> None:
        await self.store.acall(
            "release", claim.campaign_id, claim.number_id, claim.attempt, time.time()
        )

    async def _refused(self, where: dict[str, str | int], outcome: str | None, detail: str) -> None:
        """Twilio refused ``where``'s try (``campaign``, ``number``, ``attempt``)."""
        ended = await self.store.acall(
            "refused",
            where["campaign"],
            where["number"],
            where["attempt"],
            outcome,
            detail,
            time.time(),
        )
        if ended is not None:
            self.metrics.campaign_outcomes.labels(ended).inc()

    #
    # what Twilio tells us
    #

    def answer_twiml(self, bot: str, answered_by: str | None) -> str:
        """The TwiML of an answered campaign call (the voice webhook).

        Args:
            bot: The campaign's bot.
            answered_by: AMD's result if it came first, else None.

        Returns:
            A wait for AMD then the bot; or at once what AMD's result asks for.
        """
        incoming = self.url("/incoming", bot=bot)
        if answered_by is None:
            return pause_then_redirect_twiml(AMD_WAIT_SECS, incoming)
        if answered_by in HUMAN:
            return pause_then_redirect_twiml(0, incoming)
        text = self.voicemail(bot) if answered_by.startswith("machine_end") else None
        return say_twiml(text) if text else hangup_twiml()

    def voicemail(self, bot: str) -> str | None:
        """The voicemail text of ``bot`` (None: it leaves none)."""
        found = self._bots().get(bot)
        return found.voicemail if found is not None else None

    async def amd_result(
        self,
        campaign_id: str,
        number_id: int,
        attempt: int,
        call_sid: str,
        answered_by: str,
        bot: str,
    ) -> None:
        """Act on AMD's result: the bot takes a human, a machine gets the message or nothing.

        Args:
            campaign_id: The campaign.
            number_id: The number.
            attempt: The try the call is.
            call_sid: The call.
            answered_by: Twilio's ``AnsweredBy``.
            bot: The campaign's bot.
        """
        self.metrics.campaign_amd.labels(_amd_label(answered_by)).inc()
        text = self.voicemail(bot) if answered_by.startswith("machine_end") else None
        first = await self.store.acall(
            "amd",
            campaign_id,
            number_id,
            attempt,
            call_sid,
            answered_by,
            time.time(),
        )
        if not first or self.rest is None:
            return
        if answered_by in HUMAN:
            action = self.rest.redirect_to(call_sid, self.url("/incoming", bot=bot))
        elif text:
            action = self._leave_voicemail(campaign_id, number_id, attempt, call_sid, text)
        else:
            action = self.rest.hang_up(call_sid)
        self._in_background(action, call_sid)

    async def _leave_voicemail(
        self, campaign_id: str, number_id: int, attempt: int, call_sid: str, text: str
    ) -> None:
        """Have Twilio say the message to the machine; once it took it, the message is left."""
        assert self.rest is not None
        await self.rest.redirect(call_sid, say_twiml(text))
        await self.store.acall(
            "voicemail_said", campaign_id, number_id, attempt, call_sid, time.time()
        )

    async def call_status(
        self,
        campaign_id: str,
        number_id: int,
        attempt: int,
        call_sid: str,
        status: str,
        sequence: int,
        answered_by: str | None,
        duration: int | None,
    ) -> str | None:
        """A status callback: the number moves on; its outcome is counted once.

        Args:
            campaign_id: The campaign.
            number_id: The number.
            attempt: The try the call is.
            call_sid: The call.
            status: Its ``CallStatus``.
            sequence: Its ``SequenceNumber``.
            answered_by: Its ``AnsweredBy``, if any.
            duration: Its ``CallDuration``, if any.

        Returns:
            The number's outcome if it got one now.
        """
        outcome = await self.store.acall(
            "progress",
            campaign_id,
            number_id,
            attempt,
            call_sid,
            status,
            sequence,
            answered_by,
            duration,
            time.time(),
        )
        if outcome is not None:
            self.metrics.campaign_outcomes.labels(outcome).inc()
            logger.info(f"Campaign {campaign_id}: number {number_id} ended {outcome} ({call_sid})")
        return outcome

    async def reconcile(self) -> None:
        """Settle numbers left dialing: a try never placed fails; a call is asked of Twilio."""
        now = time.time()
        for campaign_id, number_id, _, attempt in await self.store.acall(
            "stale", now - UNPLACED_SECS, 50, placed=False
        ):  # claimed, never placed (its instance died): the try failed
            where = {"campaign": campaign_id, "number": number_id, "attempt": attempt}
            await self._refused(where, None, "the call was never placed")
        if self.rest is None:
            return
        for campaign_id, number_id, call_sid, attempt in await self.store.acall(
            "stale", now - CALL_LIFE_SECS - MAX_RING_SECS, 50, placed=True
        ):
            if call_sid is not None:
                await self._fetch(campaign_id, number_id, attempt, call_sid)

    async def _fetch(self, campaign_id: str, number_id: int, attempt: int, call_sid: str) -> None:
        assert self.rest is not None
        try:
            status, answered_by, duration = await self.rest.fetch_status(call_sid)
        except Exception as e:
            logger.warning(f"Campaign {campaign_id}: fetching call {call_sid}: {type(e).__name__}")
            return
        if status in FINAL_STATUSES:  # its final callback was lost; still going: later
            await self.call_status(
                campaign_id, number_id, attempt, call_sid, status, 1 << 30, answered_by, duration
            )

    def _in_background(self, action: Awaitable[None], call_sid: str) -> None:
        async def run() -> None:
            try:
                await action
            except Exception as e:  # the call ended meanwhile, Twilio failing
                logger.warning(f"Campaign call {call_sid}: REST update failed: {field(e, 150)}")

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _amd_label(answered_by: str) -> str:
    known = (
        "human",
        "unknown",
        "machine_start",
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
    )
    return answered_by if answered_by in known else "other"
