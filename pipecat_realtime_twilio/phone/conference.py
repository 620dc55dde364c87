#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A warm transfer's conference on Twilio's side: both legs' TwiML, and the REST requests.

The human is dialled through the REST API (``Calls.create`` with ``Twiml``): Twilio
says the summary in its own voice, then puts the human into a conference room of
their own (:func:`human_leg_twiml`). Once the human is in the room, the caller's call
is updated to join the same room (:func:`caller_leg_twiml`): Twilio ends the caller's
media stream and the two are bridged. Both legs end the room when they leave, so
neither is left alone in it.

The runner learns how the human's call goes by asking the REST API from the instance
that holds the caller's stream (:class:`ConferenceRest`): the call's status
(``ringing``, ``in-progress``, ``busy``, ``no-answer``...), then whether it is a
participant of the room. Asking needs no callback URL, no signed route and no shared
state, so it works whichever instance of several behind a balancer holds the stream.
"""

import asyncio
import math
import secrets

from loguru import logger
from twilio.twiml.voice_response import Dial, VoiceResponse

from pipecat_realtime_twilio.logs import masked_number
from pipecat_realtime_twilio.phone.rest import TwilioRest

HUMAN_LABEL = "human"
"""The ``participantLabel`` of the human in the room."""

CALLER_LABEL = "caller"
"""The ``participantLabel`` of the caller in the room."""

SUMMARY_INTRO = "You have a call transferred by the assistant."
"""What the human hears before the summary."""

RING_MARGIN_SECS = 5
"""How much longer Twilio's own ring ``Timeout`` is than the runner's (which comes first)."""

TWILIO_TIMEOUT_RANGE = (5, 600)
"""The ``Timeout`` values Twilio's Calls API takes, in seconds."""

RINGING = ("queued", "initiated", "ringing")
"""Statuses of a call that has not been answered yet."""


def room_name(call_sid: str) -> str:
    """A new conference room for a warm transfer of a call.

    Args:
        call_sid: The caller's call.

    Returns:
        The room's name (Twilio's ``FriendlyName``), new for each attempt: a room an
        earlier attempt left behind is never joined by mistake.
    """
    return f"warm-transfer-{call_sid}-{secrets.token_hex(3)}"


def human_leg_twiml(summary: str, room: str, *, intro: str = SUMMARY_INTRO) -> str:
    """TwiML of the human's call: the summary in Twilio's voice, then the room.

    Args:
        summary: What the human should know about the call.
        room: The conference room.
        intro: Said before the summary.

    Returns:
        The TwiML document.
    """
    response = VoiceResponse()
    response.say(" ".join(part for part in (intro.strip(), summary.strip()) if part))
    response.append(_conference(room, HUMAN_LABEL))
    return str(response)


def caller_leg_twiml(room: str) -> str:
    """TwiML that moves the caller from the media stream into the room.

    Args:
        room: The conference room the human waits in.

    Returns:
        The TwiML document.
    """
    response = VoiceResponse()
    response.append(_conference(room, CALLER_LABEL))
    return str(response)


def _conference(room: str, label: str) -> Dial:
    dial = Dial()
    dial.conference(
        room,
        start_conference_on_enter=True,
        end_conference_on_exit=True,  # whoever leaves, the other is not left alone in the room
        beep=False,
        participant_label=label,
    )
    return dial


def twilio_ring_timeout(ring_secs: float) -> int:
    """Twilio's ``Timeout`` for a human who gets ``ring_secs`` to answer.

    Args:
        ring_secs: How long the runner lets the human's phone ring.

    Returns:
        Whole seconds, :data:`RING_MARGIN_SECS` more, within :data:`TWILIO_TIMEOUT_RANGE`.
    """
    low, high = TWILIO_TIMEOUT_RANGE
    return min(high, max(low, math.ceil(ring_secs) + RING_MARGIN_SECS))


class ConferenceRest:
    """The REST requests of a warm transfer, through the call's :class:`TwilioRest`."""

    def __init__(self, rest: TwilioRest):
        """Initialize the requests.

        Args:
            rest: The runner's REST client (its HTTP session and timeout are used).
        """
        self._rest = rest
        self._conference_sids: dict[str, str] = {}  # room -> CF..., once found

    @property
    def _timeout(self) -> float:
        return self._rest._timeout + 1

    def _client(self):
        self._rest._calls()  # builds the client on first use
        return self._rest._client

    async def dial(self, to: str, from_: str, twiml: str, ring_secs: float) -> str:
        """Place the human's call. Not retried: a retry could ring the human twice.

        Args:
            to: The human's number or SIP address.
            from_: The caller ID (a number of the account).
            twiml: What the call runs once answered.
            ring_secs: How long the runner lets it ring (Twilio's own limit is longer).

        Returns:
            The call's SID.

        Raises:
            TwilioRestException: If Twilio refuses the call.
            TimeoutError: If Twilio does not answer in time.
        """
        logger.info(f"Warm transfer: dialling {masked_number(to)} through the REST API")
        call = await asyncio.wait_for(
            self._client().calls.create_async(
                to=to, from_=from_, twiml=twiml, timeout=twilio_ring_timeout(ring_secs)
            ),
            self._timeout,
        )
        return str(call.sid)

    async def status(self, call_sid: str) -> str:
        """The call's status as Twilio has it now (``ringing``, ``in-progress``...).

        Args:
            call_sid: The call.

        Raises:
            TwilioRestException: If Twilio refuses.
            TimeoutError: If Twilio does not answer in time.
        """
        status, _, _ = await self._rest.fetch_status(call_sid)
        return status

    async def in_room(self, room: str, call_sid: str) -> bool:
        """Whether ``call_sid`` is a participant of the room now.

        Args:
            room: The conference room's name.
            call_sid: The call.

        Raises:
            TwilioRestException: If Twilio refuses.
            TimeoutError: If Twilio does not answer in time.
        """
        conferences = self._client().conferences
        sid = self._conference_sids.get(room)
        if sid is None:
            found = await asyncio.wait_for(
                conferences.list_async(friendly_name=room, status="in-progress", limit=1),
                self._timeout,
            )
            if not found:
                return False
            sid = self._conference_sids[room] = str(found[0].sid)
        participants = await asyncio.wait_for(
            conferences(sid).participants.list_async(), self._timeout
        )
        return any(p.call_sid == call_sid for p in participants)

    async def hang_up(self, call_sid: str, *, answered: bool) -> None:
        """End the human's call: cancel it while it rings, hang it up once answered.

        Twilio's ``canceled`` leaves an answered call alone, so a call that was
        ringing when last seen is asked again and hung up if it was answered
        meanwhile. Never raises: a failure is logged (Twilio ends the call at its
        own ring timeout, or when the human hangs up).

        Args:
            call_sid: The call.
            answered: Whether it was answered when last seen.
        """
        try:
            if not answered:
                await self._rest._update(call_sid, status="canceled")
                if await self.status(call_sid) not in (*RINGING, "in-progress"):
                    return
            await self._rest.hang_up(call_sid)
        except Exception as e:  # TwilioRestException, timeouts, connection errors
            logger.warning(f"Warm transfer: could not end the human's call {call_sid}: {e!r}")
