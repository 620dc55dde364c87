#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Twilio's side of a warm transfer: the human's call, what they hear, the conference rooms.

`FakeConferences` hooks into a `~pipecat_realtime_twilio.testing.fake_rest.FakeTwilioRest`
and plays what Twilio and the phone network do with a warm transfer:

- A call the runner creates with ``Twiml`` that has a ``<Dial><Conference>`` is a
  human's leg (`HumanLeg`); the number behaves as the test says: ``"answer"`` (rings,
  answers, hears every ``<Say>`` in full, joins the room and stays until the room
  ends), ``"decline"`` (answers, hangs up halfway through the first ``<Say>``),
  ``"busy"``, ``"failed"``, ``"no_answer"`` (rings for ``Timeout × time_scale``
  seconds, then ``no-answer``). The REST view of the call (``ringing``,
  ``in-progress``, ``canceled``...) follows, and a REST update ends it as Twilio
  does (``Status=canceled`` while it rings, ``Status=completed`` at any time).
- A live call updated with TwiML that has a ``<Dial><Conference>`` (the caller's
  call, attached with ``FakeTwilioRest.attach``: the fake REST API ends its media
  stream) joins that room.
- Rooms follow Twilio's rules: a room starts when a participant with
  ``startConferenceOnEnter`` (the default) joins, and ends when one with
  ``endConferenceOnExit`` leaves, or the last one does; then everyone leaves it and
  their calls end.
- The REST API gains the Conferences resource: ``GET .../Conferences.json``
  (``FriendlyName``, ``Status`` filters; ``in-progress`` by default, as Twilio reads
  it), ``GET .../Conferences/{Sid}.json``, ``GET .../Conferences/{Sid}/Participants.json``
  and ``GET .../Conferences/{Sid}/Participants/{CallSid or label}.json``.

Other created calls go to the hooks that were installed before (e.g. a
`~pipecat_realtime_twilio.testing.fake_carrier.FakeCarrier`). What the runner does
wrong lands in `FakeConferences.problems`: a human's call without ``Timeout`` (or out
of 5..600), a human who joins without having heard anything, a party that joins
without ``endConferenceOnExit`` (the other would be left alone in the room), a caller
put in a room nobody waits in.

Example::

    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        async with FakeConferences(rest, people={"+15557654321": "answer"}) as phones:
            ...  # a call whose bot warm-transfers to +15557654321
            [leg] = phones.legs_to("+15557654321")
            assert leg.heard and leg.room is not None
        assert not phones.problems
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field

from pipecat_realtime_twilio.testing.fake_conference_api import (
    ConferencesResource,
    Participant,
    Room,
)
from pipecat_realtime_twilio.testing.fake_rest import ACTIVE_STATUSES, FakeTwilioRest
from pipecat_realtime_twilio.testing.twiml import TwimlError, TwimlVerb, parse_twiml

HUMAN_BEHAVIOURS = ("answer", "decline", "busy", "failed", "no_answer")
"""What a human's number can do when called."""

RING_SECS = 0.2
"""How long a human's phone rings before it is answered, busy or failed (real seconds)."""

SAY_SECS_PER_CHAR = 0.004
"""How long Twilio's ``<Say>`` takes per character (much faster than real speech)."""


@dataclass
class HumanLeg:
    """A human's call, placed by the runner.

    Parameters:
        call_sid: The call.
        number: The number called (``To``).
        behaviour: What the human does (see `HUMAN_BEHAVIOURS`).
        params: The create form.
        heard: Every ``<Say>`` the human heard in full, in order.
        room: The room the human joined, if any.
        answered_at: ``loop.time()`` when the human answered, if they did.
        final_status: The call's status when it ended (None while it goes on).
        ended: Set when the call is to end (hung up, canceled through the REST API).
        task: The task running the call.
    """

    call_sid: str
    number: str
    behaviour: str
    params: dict[str, str]
    heard: list[str] = field(default_factory=list)
    room: str | None = None
    answered_at: float | None = None
    final_status: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class FakeConferences(ConferencesResource):
    """Twilio's side of warm transfers on a `FakeTwilioRest` (see the module doc).

    Attributes:
        legs: Every human's call, by call SID.
        rooms: Every room, by name (the last one of a name).
        problems: The runner's protocol mistakes (empty when it behaved).
    """

    def __init__(
        self,
        rest: FakeTwilioRest,
        *,
        people: dict[str, str] | None = None,
        default: str = "answer",
        time_scale: float = 1.0,
    ):
        """Initialize the fake (``async with`` installs it on ``rest``).

        Args:
            rest: The fake REST API the runner uses.
            people: Number → what the human there does; others do ``default``.
            default: What a number not in ``people`` does.
            time_scale: How much faster than Twilio's ``Timeout`` a ``no_answer``
                rings (``Timeout × time_scale`` seconds).

        Raises:
            ValueError: On an unknown behaviour or a time scale that is not positive.
        """
        for behaviour in [default, *(people or {}).values()]:
            if behaviour not in HUMAN_BEHAVIOURS:
                raise ValueError(f"unknown behaviour {behaviour!r}; one of {HUMAN_BEHAVIOURS}")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.rest = rest
        self.people = dict(people or {})
        self.default = default
        self.time_scale = time_scale
        self.legs: dict[str, HumanLeg] = {}
        self.rooms: dict[str, Room] = {}
        self.problems: list[str] = []
        self._saved_hooks: tuple | None = None
        self._routes_added = False
        self._tasks: set[asyncio.Task] = set()

    # ---------------------------------------------------------------------------------------
    # Lifetime and inspection
    # ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeConferences:
        """Install the fake as the REST fake's create and update hooks, and its routes."""
        rest = self.rest
        self._saved_hooks = (rest.on_create, rest.on_update)
        rest.on_create, rest.on_update = self._on_create, self._on_update
        if not self._routes_added:
            rest.add_routes(self._routes())
            self._routes_added = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop every leg, and give the REST fake its hooks back."""
        if self._saved_hooks is not None:
            self.rest.on_create, self.rest.on_update = self._saved_hooks
            self._saved_hooks = None
        tasks = [leg.task for leg in self.legs.values() if leg.task is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def legs_to(self, number: str) -> list[HumanLeg]:
        """The human's calls to ``number``, in order."""
        return [leg for leg in self.legs.values() if leg.number == number]

    def room_of(self, call_sid: str) -> Room | None:
        """The room ``call_sid`` joined last, if any."""
        found = [room for room in self.rooms.values() if room.had(call_sid)]
        return found[-1] if found else None

    async def hang_up(self, call_sid: str) -> None:
        """A party in a room hangs up: it leaves, and its call completes.

        Args:
            call_sid: The call (a human's, or the caller's).
        """
        room = self.room_of(call_sid)
        if room is not None:
            self._leave(room, call_sid)
        leg = self.legs.get(call_sid)
        if leg is not None:
            leg.ended.set()
        elif self.rest.calls.get(call_sid, {}).get("status") in ACTIVE_STATUSES:
            self.rest.set_call_status(call_sid, "completed")

    def _problem(self, text: str) -> None:
        self.problems.append(text)

    # ---------------------------------------------------------------------------------------
    # The REST fake's hooks
    # ---------------------------------------------------------------------------------------

    async def _on_create(self, info: dict) -> None:
        twiml = info.get("Twiml") or ""
        if "<Conference" not in twiml:
            saved = self._saved_hooks[0] if self._saved_hooks else None
            if saved is not None:
                await saved(info)
            return
        call_sid, number = info["CallSid"], info["To"]
        behaviour = self.people.get(number, self.default)
        leg = HumanLeg(call_sid, number, behaviour, dict(self.rest.call_params[call_sid]))
        self.legs[call_sid] = leg
        leg.task = asyncio.create_task(self._run_leg(leg), name=f"human-{call_sid}")

    async def _on_update(self, info: dict) -> None:
        call_sid = info["CallSid"]
        leg = self.legs.get(call_sid)
        if leg is not None:
            if info.get("CallStatus") not in ACTIVE_STATUSES:
                leg.ended.set()  # canceled or hung up through the REST API
            return
        twiml = info.get("Twiml") or ""
        if "<Conference" in twiml:
            task = asyncio.create_task(self._caller_joins(call_sid, twiml))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        saved = self._saved_hooks[1] if self._saved_hooks else None
        if saved is not None:
            await saved(info)

    # ---------------------------------------------------------------------------------------
    # The human's call
    # ---------------------------------------------------------------------------------------

    async def _run_leg(self, leg: HumanLeg) -> None:
        try:
            status = await self._leg_progress(leg)
        except Exception as exc:  # a bug of the fake's: end the call, and say so
            self._problem(f"the fake conference failed on {leg.call_sid}: {exc!r}")
            status = "failed"
        call = self.rest.calls[leg.call_sid]
        if call["status"] in ACTIVE_STATUSES:
            self.rest.set_call_status(leg.call_sid, status)
        leg.final_status = call["status"]
        room = self.room_of(leg.call_sid)
        if room is not None:
            self._leave(room, leg.call_sid)

    async def _ended_within(self, leg: HumanLeg, secs: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(leg.ended.wait(), secs)
        return leg.ended.is_set()

    async def _leg_progress(self, leg: HumanLeg) -> str:
        """The human's call up to its end; its final status (unless an update set one)."""
        timeout = leg.params.get("Timeout", "")
        if not timeout.isdigit() or not 5 <= int(timeout) <= 600:
            self._problem(f"{leg.call_sid}: Timeout={timeout or None!r} is not 5..600 seconds")
        if "Url" in leg.params:
            self._problem(f"{leg.call_sid}: the human's call has a Url besides its Twiml")
        self.rest.set_call_status(leg.call_sid, "ringing")
        if leg.behaviour == "no_answer":
            ring = (int(timeout) if timeout.isdigit() else 60) * self.time_scale
            return "completed" if await self._ended_within(leg, ring) else "no-answer"
        if await self._ended_within(leg, RING_SECS):
            return "completed"
        if leg.behaviour in ("busy", "failed"):
            return leg.behaviour
        self.rest.set_call_status(leg.call_sid, "in-progress")
        leg.answered_at = asyncio.get_running_loop().time()
        try:
            document = parse_twiml(leg.params["Twiml"])
        except TwimlError as exc:
            self._problem(f"{leg.call_sid}: the human's Twiml is not TwiML: {exc}")
            return "completed"
        for verb in document.verbs:
            if verb.name == "Say":
                secs = max(0.1, len(verb.text) * SAY_SECS_PER_CHAR)
                if leg.behaviour == "decline":
                    await self._ended_within(leg, secs / 2)
                    return "completed"  # the human hangs up during the summary
                if await self._ended_within(leg, secs):
                    return "completed"
                leg.heard.append(verb.text)
            elif verb.name == "Dial":
                if not await self._human_in_room(leg, verb):
                    return "completed"
            elif verb.name == "Hangup":
                return "completed"
            else:
                self._problem(f"{leg.call_sid}: <{verb.name}> in the human's TwiML")
        return "completed"

    async def _human_in_room(self, leg: HumanLeg, dial: TwimlVerb) -> bool:
        """The human's ``<Dial><Conference>``: in the room until it ends or they leave."""
        conference = _conference_of(dial)
        if conference is None:
            self._problem(f"{leg.call_sid}: the human's <Dial> has no <Conference>")
            return False
        if not leg.heard:
            self._problem(f"{leg.call_sid}: the human joins the room having heard nothing")
        room = self._join(conference, leg.call_sid)
        leg.room = room.name
        waits = [asyncio.create_task(room.ended.wait()), asyncio.create_task(leg.ended.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return not leg.ended.is_set()  # the room ended: the TwiML goes on

    # ---------------------------------------------------------------------------------------
    # The caller's call
    # ---------------------------------------------------------------------------------------

    async def _caller_joins(self, call_sid: str, twiml: str) -> None:
        try:
            document = parse_twiml(twiml)
        except TwimlError:
            return  # the fake REST API and the caller report TwiML that is not TwiML
        dial = next((verb for verb in document.verbs if verb.name == "Dial"), None)
        conference = _conference_of(dial) if dial is not None else None
        if conference is None:
            return
        waiting = self.rooms.get(conference.text)
        if waiting is None or waiting.status == "completed" or not waiting.present():
            self._problem(f"{call_sid}: put in room {conference.text!r}, where nobody waits")
        room = self._join(conference, call_sid)
        await room.ended.wait()
        if self.rest.calls.get(call_sid, {}).get("status") in ACTIVE_STATUSES:
            self.rest.set_call_status(call_sid, "completed")  # no TwiML after the <Dial>

    # ---------------------------------------------------------------------------------------
    # Rooms
    # ---------------------------------------------------------------------------------------

    def _join(self, conference: TwimlVerb, call_sid: str) -> Room:
        name = conference.text
        room = self.rooms.get(name)
        if room is None or room.status == "completed":
            room = self.rooms[name] = Room(name=name, sid="CF" + secrets.token_hex(16))
        attributes = conference.attributes
        participant = Participant(
            call_sid=call_sid,
            label=attributes.get("participantLabel"),
            start_on_enter=attributes.get("startConferenceOnEnter", "true") == "true",
            end_on_exit=attributes.get("endConferenceOnExit", "false") == "true",
            joined_at=asyncio.get_running_loop().time(),
        )
        if not participant.end_on_exit:
            self._problem(
                f"{call_sid}: joins {name!r} without endConferenceOnExit: when the other "
                "party leaves, this one stays alone in the room"
            )
        room.participants.append(participant)
        if participant.start_on_enter and room.status == "init":
            room.status = "in-progress"
        return room

    def _leave(self, room: Room, call_sid: str) -> None:
        for participant in room.present():
            if participant.call_sid == call_sid:
                participant.left_at = asyncio.get_running_loop().time()
                last = not room.present()  # a room also ends when its last party leaves
                if (participant.end_on_exit or last) and room.status != "completed":
                    self._end_room(room)

    def _end_room(self, room: Room) -> None:
        room.status = "completed"
        now = asyncio.get_running_loop().time()
        for participant in room.present():
            participant.left_at = now
        room.ended.set()


def _conference_of(dial: TwimlVerb) -> TwimlVerb | None:
    return next((noun for noun in dial.children if noun.name == "Conference"), None)


__all__ = ["FakeConferences", "HumanLeg", "Participant", "Room", "HUMAN_BEHAVIOURS"]
