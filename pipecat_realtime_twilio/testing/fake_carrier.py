#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A fake carrier: Twilio's side of outbound calls placed through `FakeTwilioRest`.

`FakeCarrier` hooks into a `FakeTwilioRest` and plays what Twilio and the phone network
do with every call the runner creates, each number behaving as the test says, attempt by
attempt (the last behaviour repeating):

- ``"human"``: rings, is answered; async AMD says ``human`` after
  `~pipecat_realtime_twilio.testing.carrier_network.AMD_QUICK_SECS`; a ``<Connect><Stream>``
  is played by a `TwilioCaller` that waits for the bot's greeting, stays
  ``human_hangup_after_secs`` and hangs up (unless the runner ends the call first).
- ``"machine"``: an answering machine: its greeting lasts ``voicemail_greeting_secs``,
  then the beep (AMD ``machine_end_beep`` with ``MachineDetection=DetectMessageEnd``;
  ``machine_start`` at once with ``Enable``); what ``<Say>`` says after the beep is
  recorded in `FakeCarrier.voicemails`; it hangs up
  `~pipecat_realtime_twilio.testing.carrier_network.MACHINE_RECORD_SECS` after its beep.
- ``"machine_hangup"``: a machine that hangs up before its beep: no AMD callback.
- ``"fax"``: AMD ``fax``; the fax hangs up a few seconds later.
- ``"busy"``, ``"no_answer"`` (rings ``Timeout × time_scale`` seconds), ``"failed"``.
- ``"invalid"``: the create is refused with HTTP 400 and Twilio's error 21211, no call.

For each call it sends the status callbacks asked for (``StatusCallbackEvent``), the
voice webhook, ``<Redirect>`` and ``<Connect action>`` requests and the async AMD
callback, every one signed as Twilio signs them (``X-Twilio-Signature`` from
``RequestValidator(auth_token).compute_signature(url, form)``, the full URL with its
query); it runs the TwiML it gets (``<Pause>``, ``<Say>``, ``<Play>``, ``<Redirect>``,
``<Hangup>``, ``<Connect><Stream>``), obeys REST updates of the call (a new ``Url`` or
``Twiml`` stops what runs, a stream with ``stop``; ``Status=completed|canceled`` ends it)
and keeps the REST view of the call (status, ``answered_by``, duration) in step.

Time: ringing, AMD and speech take fractions of a second; ``<Pause length>`` waits its
length in real seconds up to
`~pipecat_realtime_twilio.testing.carrier_network.LONG_PAUSE_SECS`, and a longer pause
``length × time_scale`` seconds (at least that), so a runner's long wait for AMD does
not slow a test down.

What the runner does wrong (a missing or odd create parameter, a callback answered with
an error, TwiML that is not TwiML, a stream that does not connect) lands in
`FakeCarrier.problems`; the call goes on as Twilio's would.

Example::

    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        async with FakeCarrier(rest, behaviours={"+15550100001": ["busy", "human"]}) as carrier:
            ...  # the runner places its calls with rest.url as its Twilio API
            await carrier.wait_idle(timeout=30)
        assert not carrier.problems
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp

from pipecat_realtime_twilio.testing.carrier_call import CarrierCall
from pipecat_realtime_twilio.testing.carrier_network import BEHAVIOURS, CarrierNetwork
from pipecat_realtime_twilio.testing.fake_rest import (
    ACTIVE_STATUSES,
    FakeTwilioRest,
    TwilioApiError,
)

INVALID_NUMBER_CODE = 21211
"""Twilio's error code for an invalid ``To`` number, refused at create time."""


@dataclass
class PlacedCall:
    """A call the carrier accepted.

    Parameters:
        number: The number called (``To``).
        call_sid: The call's SID.
        at: ``loop.time()`` when its create request arrived.
        params: The create form (the last value of a repeated key).
        behaviour: What the callee did on this attempt, e.g. ``"busy"``.
        fields: The create form as ``(key, value)`` pairs, repeated keys included.
    """

    number: str
    call_sid: str
    at: float
    params: dict[str, str]
    behaviour: str = "human"
    fields: list[tuple[str, str]] = field(default_factory=list)


class FakeCarrier(CarrierNetwork):
    """Twilio's side of outbound calls created on a `FakeTwilioRest` (see the module doc).

    Attributes:
        placed: Every call accepted, in order.
        refused: Every number refused at create time (``"invalid"``), once per attempt.
        final_status: The final ``CallStatus`` sent, by call SID.
        voicemails: What was said to each number's machine after its beep.
        conversations: Each number's callers that played a human on a stream.
        problems: The runner's protocol mistakes (empty when it behaved).
    """

    def __init__(
        self,
        rest: FakeTwilioRest,
        *,
        behaviours: dict[str, list[str]],
        default: str = "human",
        time_scale: float = 0.05,
        voicemail_greeting_secs: float = 1.0,
        human_hangup_after_secs: float = 2.0,
        server_url: str | None = None,
    ):
        """Initialize the carrier (``async with`` installs it on ``rest``).

        Args:
            rest: The fake REST API the runner places its calls on.
            behaviours: Number (E.164) → what happens on each attempt, the last repeating.
            default: The behaviour of numbers not in ``behaviours``.
            time_scale: How much faster than real time ringing without answer runs
                (and long pauses, see the module doc).
            voicemail_greeting_secs: How long a machine's greeting lasts before its beep.
            human_hangup_after_secs: How long a human stays after the bot's greeting.
            server_url: Where the runner really listens, when its public URLs do not
                reach it from here: their scheme and host are replaced by this origin.

        Raises:
            ValueError: On an unknown behaviour or a time that is not positive.
        """
        for behaviour in [default, *(b for listed in behaviours.values() for b in listed)]:
            if behaviour not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {behaviour!r}; one of {BEHAVIOURS}")
        if any(not listed for listed in behaviours.values()):
            raise ValueError("every number needs at least one behaviour")
        if min(time_scale, voicemail_greeting_secs, human_hangup_after_secs) <= 0:
            raise ValueError("times must be positive")
        self._init_network(
            rest,
            time_scale=time_scale,
            voicemail_greeting_secs=voicemail_greeting_secs,
            human_hangup_after_secs=human_hangup_after_secs,
            server_url=server_url,
        )
        self.behaviours = {number: list(listed) for number, listed in behaviours.items()}
        self.default = default
        self.placed: list[PlacedCall] = []
        self.refused: list[str] = []
        self._attempts: defaultdict[str, int] = defaultdict(int)
        self._pending: dict[str, str] = {}  # SID -> behaviour, created but not yet running
        self._calls: dict[str, CarrierCall] = {}
        self._saved_hooks: tuple | None = None

    # ---------------------------------------------------------------------------------------
    # Lifetime
    # ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeCarrier:
        """Install the carrier as the REST fake's create and update hooks."""
        rest = self.rest
        self._saved_hooks = (rest.screen_create, rest.on_create, rest.on_update)
        rest.screen_create = self._screen
        rest.on_create = self._on_create
        rest.on_update = self._on_update
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop every call's task and caller, and give the REST fake its hooks back."""
        if self._saved_hooks is not None:
            rest = self.rest
            rest.screen_create, rest.on_create, rest.on_update = self._saved_hooks
            self._saved_hooks = None
        tasks = [call.task for call in self._calls.values() if call.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for caller in self.callers:
            with contextlib.suppress(Exception):
                await caller.close()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def wait_idle(self, timeout: float) -> None:
        """Wait until every placed call has ended and sent its final status callback.

        Args:
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: If calls are still going; the message names them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending or any(not call.finished for call in self._calls.values()):
            if loop.time() >= deadline:
                going = [
                    f"{call.number} {call.call_sid} ({self.rest.calls[call.call_sid]['status']})"
                    for call in self._calls.values()
                    if not call.finished
                ]
                raise TimeoutError(
                    f"calls still going after {timeout:g} s: {', '.join(going) or 'starting'}"
                )
            await asyncio.sleep(0.02)

    def calls_to(self, number: str) -> list[PlacedCall]:
        """The calls placed to ``number``, in order.

        Args:
            number: The number (E.164).

        Returns:
            Its `PlacedCall` entries.
        """
        return [placed for placed in self.placed if placed.number == number]

    def behaviour_of(self, number: str, attempt: int) -> str:
        """What ``number`` does on its ``attempt``-th call (0-based; the last repeats).

        Args:
            number: The number called.
            attempt: How many calls to it came before.

        Returns:
            The behaviour's name.
        """
        listed = self.behaviours.get(number) or [self.default]
        return listed[min(attempt, len(listed) - 1)]

    # ---------------------------------------------------------------------------------------
    # The REST fake's hooks
    # ---------------------------------------------------------------------------------------

    def _screen(self, call_sid: str, form: dict[str, str]) -> None:
        number = form["To"]
        behaviour = self.behaviour_of(number, self._attempts[number])
        self._attempts[number] += 1
        if behaviour == "invalid":
            self.refused.append(number)
            raise TwilioApiError(
                400, INVALID_NUMBER_CODE, f"The 'To' number {number} is not a valid phone number."
            )
        self._pending[call_sid] = behaviour

    async def _on_create(self, info: dict) -> None:
        call_sid = info["CallSid"]
        behaviour = self._pending.get(call_sid, self.default)
        request = self.rest.call_requests[call_sid]
        params = dict(self.rest.call_params[call_sid])
        self.placed.append(
            PlacedCall(
                number=params["To"],
                call_sid=call_sid,
                at=request.time,
                params=params,
                behaviour=behaviour,
                fields=list(request.fields),
            )
        )
        call = CarrierCall(self, call_sid, behaviour, params, request.fields)
        self._calls[call_sid] = call
        call.task = asyncio.create_task(call.run(), name=f"carrier-{call_sid}")
        self._pending.pop(call_sid, None)

    async def _on_update(self, info: dict) -> None:
        call = self._calls.get(info["CallSid"])
        if call is None or call.finished:
            return
        if info.get("CallStatus") not in ACTIVE_STATUSES:
            call.end(info["CallStatus"], by_update=True)
        elif "Twiml" in info:
            await call.redirect(("twiml", info["Twiml"], "POST"))
        elif info.get("Url"):
            await call.redirect(("url", info["Url"], (info.get("Method") or "POST").upper()))


__all__ = ["FakeCarrier", "PlacedCall", "INVALID_NUMBER_CODE", "BEHAVIOURS"]
