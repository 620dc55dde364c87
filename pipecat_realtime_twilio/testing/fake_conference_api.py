#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Conference rooms as the fake Twilio keeps them, and their REST resource.

`Room` and `Participant` are what
`~pipecat_realtime_twilio.testing.fake_conference.FakeConferences` keeps of each room;
`ConferencesResource` (mixed into it) serves them on the fake REST API as Twilio's
2010-04-01 API does: ``GET .../Conferences.json`` (``FriendlyName`` and ``Status``
filters; ``in-progress`` when no status is given, as Twilio reads it),
``GET .../Conferences/{Sid}.json``, ``GET .../Conferences/{Sid}/Participants.json`` (those
in the room now) and ``GET .../Conferences/{Sid}/Participants/{CallSid or label}.json``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipecat_realtime_twilio.testing.fake_rest import API_VERSION, FakeTwilioRest, TwilioApiError


def _now() -> str:
    return format_datetime(datetime.now(UTC))


@dataclass
class Participant:
    """A call in a room.

    Parameters:
        call_sid: The call.
        label: Its ``participantLabel``, if any.
        start_on_enter: Its ``startConferenceOnEnter``.
        end_on_exit: Its ``endConferenceOnExit``.
        joined_at: ``loop.time()`` when it joined.
        left_at: ``loop.time()`` when it left (None while in the room).
    """

    call_sid: str
    label: str | None
    start_on_enter: bool
    end_on_exit: bool
    joined_at: float
    left_at: float | None = None


@dataclass
class Room:
    """A conference room.

    Parameters:
        name: Its ``FriendlyName``.
        sid: Its SID (``CF...``).
        status: ``init``, ``in-progress`` or ``completed``.
        participants: Everyone who joined, in order (those who left included).
        created: When it was created (RFC 2822).
        ended: Set when the room ends.
    """

    name: str
    sid: str
    status: str = "init"
    participants: list[Participant] = field(default_factory=list)
    created: str = field(default_factory=_now)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def present(self) -> list[Participant]:
        """Those in the room now."""
        return [p for p in self.participants if p.left_at is None]

    def had(self, call_sid: str) -> bool:
        """Whether ``call_sid`` ever joined."""
        return any(p.call_sid == call_sid for p in self.participants)


class ConferencesResource:
    """The Conferences resource of the fake REST API, over :attr:`rooms`."""

    rest: FakeTwilioRest
    rooms: dict[str, Room]

    def _routes(self) -> list[Route]:
        """The resource's routes, for ``FakeTwilioRest.add_routes``."""
        base = f"/{API_VERSION}/Accounts/{{account_sid}}/Conferences"
        return [
            Route(f"{base}.json", self._list_rooms, methods=["GET"]),
            Route(f"{base}/{{sid}}.json", self._fetch_room, methods=["GET"]),
            Route(f"{base}/{{sid}}/Participants.json", self._list_participants, methods=["GET"]),
            Route(
                f"{base}/{{sid}}/Participants/{{who}}.json",
                self._fetch_participant,
                methods=["GET"],
            ),
        ]

    async def _answer(self, request: Request, build) -> JSONResponse:
        rest = self.rest
        recorded = await rest._record(request)
        try:
            rest._injected_failure()
            rest._check_auth(request, request.path_params["account_sid"])
            body = build(request)
        except TwilioApiError as error:
            return rest._respond(recorded, error.status, error.to_json())
        return rest._respond(recorded, 200, body)

    def _room_by_sid(self, request: Request) -> Room:
        sid = request.path_params["sid"]
        room = next((room for room in self.rooms.values() if room.sid == sid), None)
        if room is None:
            raise TwilioApiError(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return room

    async def _list_rooms(self, request: Request) -> JSONResponse:
        def build(request: Request) -> dict:
            name = request.query_params.get("FriendlyName")
            status = request.query_params.get("Status", "in-progress")
            rooms = [
                self._room_json(room)
                for room in self.rooms.values()
                if (name is None or room.name == name) and room.status == status
            ]
            return self._page("conferences", rooms, request)

        return await self._answer(request, build)

    async def _fetch_room(self, request: Request) -> JSONResponse:
        return await self._answer(request, lambda r: self._room_json(self._room_by_sid(r)))

    async def _list_participants(self, request: Request) -> JSONResponse:
        def build(request: Request) -> dict:
            room = self._room_by_sid(request)
            present = [self._participant_json(room, p) for p in room.present()]
            return self._page("participants", present, request)

        return await self._answer(request, build)

    async def _fetch_participant(self, request: Request) -> JSONResponse:
        def build(request: Request) -> dict:
            room = self._room_by_sid(request)
            who = request.path_params["who"]
            for participant in room.present():
                if who in (participant.call_sid, participant.label):
                    return self._participant_json(room, participant)
            raise TwilioApiError(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )

        return await self._answer(request, build)

    def _room_json(self, room: Room) -> dict:
        uri = f"/{API_VERSION}/Accounts/{self.rest.account_sid}/Conferences/{room.sid}"
        return {
            "account_sid": self.rest.account_sid,
            "api_version": API_VERSION,
            "call_sid_ending_conference": None,
            "date_created": room.created,
            "date_updated": _now(),
            "friendly_name": room.name,
            "reason_conference_ended": None,
            "region": "us1",
            "sid": room.sid,
            "status": room.status,
            "subresource_uris": {
                "participants": f"{uri}/Participants.json",
                "recordings": f"{uri}/Recordings.json",
            },
            "uri": f"{uri}.json",
        }

    def _participant_json(self, room: Room, participant: Participant) -> dict:
        uri = (
            f"/{API_VERSION}/Accounts/{self.rest.account_sid}/Conferences/{room.sid}"
            f"/Participants/{participant.call_sid}.json"
        )
        return {
            "account_sid": self.rest.account_sid,
            "call_sid": participant.call_sid,
            "call_sid_to_coach": None,
            "coaching": False,
            "conference_sid": room.sid,
            "date_created": room.created,
            "date_updated": _now(),
            "end_conference_on_exit": participant.end_on_exit,
            "hold": False,
            "label": participant.label,
            "muted": False,
            "queue_time": "0",
            "start_conference_on_enter": participant.start_on_enter,
            "status": "connected",
            "uri": uri,
        }

    @staticmethod
    def _page(key: str, items: list[dict], request: Request) -> dict:
        uri = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return {
            key: items,
            "end": max(len(items) - 1, 0),
            "first_page_uri": uri,
            "next_page_uri": None,
            "page": 0,
            "page_size": 50,
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        }
