#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A fake Twilio REST API (2010-04-01 Calls resource) for tests.

`FakeTwilioRest` serves just enough of ``https://api.twilio.com/2010-04-01`` on
127.0.0.1 for the official ``twilio`` package to place, fetch, redirect and hang
up calls against it:

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` creates an outbound call
  (``201``, status ``queued``, direction ``outbound-api``).
- ``GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` fetches a call.
- ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` updates a call
  (``Status=completed|canceled``, ``Url`` or ``Twiml`` to redirect it).
- ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings.json`` starts
  recording a call in progress (``201``, status ``in-progress``). When the call ends
  (an update or `FakeTwilioRest.set_call_status`) its recordings complete, and each
  one's ``RecordingStatusCallback`` gets Twilio's signed POST (``RecordingStatus=
  completed``, ``RecordingUrl``...), if its ``RecordingStatusCallbackEvent`` asks for
  ``completed`` (the default).

A call placed by a `TwilioCaller` can be attached (`FakeTwilioRest.attach`): a
successful update of it with ``Twiml``, ``Url`` or ``Status=completed`` then ends
the caller's media stream from Twilio's side, as Twilio does (``stop``, the
websocket closed), and the caller keeps the new TwiML. An update whose TwiML is
only ``<Hangup/>`` completes the call.

Requests need HTTP Basic auth with the account SID and auth token (or an API
key SID and secret, if configured) and the account SID in the path; otherwise the
answer is ``401`` with Twilio's error code 20003. Unknown calls and routes answer
``404`` with code 20404. Errors use Twilio's JSON shape
``{"code", "message", "more_info", "status"}``, which the ``twilio`` package turns
into ``TwilioRestException`` with ``.status`` and ``.code``.

Pointing the ``twilio`` client at another base URL:
    The package builds every URL as ``domain.base_url + "/" + version + uri``; for
    the 2010-04-01 API the domain is ``client.api`` (``twilio.rest.api.Api``), whose
    ``base_url`` attribute is ``"https://api.twilio.com"``, set in its constructor
    and read on every request (``Domain.absolute_url``). So assign it::

        from twilio.http.async_http_client import AsyncTwilioHttpClient
        from twilio.rest import Client

        client = Client(account_sid, auth_token, http_client=AsyncTwilioHttpClient())
        client.api.base_url = api_url  # e.g. fake.url
        call = await client.calls.create_async(to=..., from_=..., twiml=...)

    ``client.calls`` is ``client.api.account.calls``, so it goes through that domain.
    Leave ``region``/``edge`` (and the ``TWILIO_REGION``/``TWILIO_EDGE`` environment
    variables) unset: when either is set, ``ClientBase.get_hostname`` rewrites the
    host to ``api.{edge}.{region}.twilio.com``-style names.
    ``AsyncTwilioHttpClient`` opens an aiohttp session when constructed, so create it
    inside a running event loop and ``await http_client.close()`` when done.

Example::

    async with FakeTwilioRest(account_sid, auth_token) as fake:
        client = Client(account_sid, auth_token, http_client=AsyncTwilioHttpClient())
        client.api.base_url = fake.url
        await client.calls(call_sid).update_async(status="completed")
        assert fake.calls[call_sid]["status"] == "completed"
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import aiohttp
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from twilio.request_validator import SIGNATURE_HEADER, RequestValidator

from pipecat_realtime_twilio.testing.server import LocalServer
from pipecat_realtime_twilio.testing.twiml import TwimlError, parse_twiml

if TYPE_CHECKING:
    from pipecat_realtime_twilio.testing.caller import TwilioCaller

API_VERSION = "2010-04-01"
"""The Twilio REST API version served."""

ACTIVE_STATUSES = ("queued", "ringing", "in-progress")
"""Call statuses of a call that has not ended."""

CallHook = Callable[[dict], Awaitable[None]]
"""An async callback given a dict describing a call request (see `FakeTwilioRest`)."""

ScreenHook = Callable[[str, dict[str, str]], None]
"""Given a new call's SID and create form before it exists; raises `TwilioApiError` to refuse."""


@dataclass
class RecordedRequest:
    """One request the fake API received.

    Parameters:
        method: The HTTP method.
        path: The request path, e.g. ``/2010-04-01/Accounts/AC.../Calls.json``.
        form: The form body as a dict (the last value wins for repeated keys).
        time: ``loop.time()`` when the request arrived.
        fields: The form body as ``(key, value)`` pairs, repeated keys included.
        query: The query string parameters.
        username: The Basic auth username, if any.
        status: The HTTP status the fake answered with.
        headers: The request headers (lower-case names).
    """

    method: str
    path: str
    form: dict[str, str]
    time: float
    fields: list[tuple[str, str]] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class TwilioApiError(Exception):
    """An error answer of the fake API, in Twilio's error format."""

    def __init__(self, status: int, code: int, message: str):
        """Initialize the error.

        Args:
            status: HTTP status.
            code: Twilio error code (see https://www.twilio.com/docs/errors).
            message: Human-readable message.
        """
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict:
        """Twilio's JSON body for this error."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def _now_rfc2822() -> str:
    return format_datetime(datetime.now(UTC))


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class FakeTwilioRest:
    """A fake Twilio REST API server for the Calls resource, served on 127.0.0.1.

    Attributes:
        account_sid: The account the fake serves.
        auth_token: The account's auth token (Basic auth password).
        calls: Every known call's JSON representation, by call SID.
        call_params: The form parameters a call was created with (``Url``, ``Twiml``,
            ``StatusCallback``...), by call SID.
        requests: Every request received, in order.
        on_create: Awaited (as a background task, after the ``201`` was sent) after
            each call creation, with the create form plus ``CallSid``, ``AccountSid``
            and ``Direction``; e.g. to let a `TwilioCaller` answer the outbound call.
        on_update: Likewise after each successful update, with the update form plus
            ``CallSid``, ``AccountSid`` and the new ``CallStatus``.
        screen_create: Called (``screen_create(call_sid, form)``) with each create that
            passed the fake's own checks, before the call exists; a `TwilioApiError` it
            raises is the answer instead (e.g. a carrier refusing an invalid ``To``, 21211).
        call_requests: The create request of each call, by call SID (its ``time``, and
            its ``fields`` with repeated keys such as ``StatusCallbackEvent``).
        hook_errors: Exceptions raised by the hooks.
        recordings: Every recording's JSON representation, by recording SID.
        recording_callbacks: Each recording status callback sent: ``(form, HTTP status)``,
            the status None if the request failed.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        api_key_sid: str | None = None,
        api_key_secret: str | None = None,
        on_create: CallHook | None = None,
        on_update: CallHook | None = None,
    ):
        """Initialize the fake API (call `start` or use ``async with`` to serve it).

        Args:
            account_sid: The account SID (``AC...``); random by default.
            auth_token: The auth token; random by default.
            api_key_sid: An API key SID (``SK...``) also accepted as Basic auth username.
            api_key_secret: The API key's secret.
            on_create: See the class attributes.
            on_update: See the class attributes.
        """
        self.account_sid = account_sid or _sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.api_key_sid = api_key_sid
        self.api_key_secret = api_key_secret
        self.on_create = on_create
        self.on_update = on_update
        self.screen_create: ScreenHook | None = None
        self.call_requests: dict[str, RecordedRequest] = {}
        self.calls: dict[str, dict] = {}
        self.call_params: dict[str, dict[str, str]] = {}
        self.requests: list[RecordedRequest] = []
        self.hook_errors: list[BaseException] = []
        self.recordings: dict[str, dict] = {}
        self.recording_callbacks: list[tuple[dict[str, str], int | None]] = []
        self._recording_events: dict[str, tuple[str, list[str]]] = {}  # SID: callback, events
        self._failures: list[int] = []  # statuses for the next requests (fault injection)
        self._hook_tasks: set[asyncio.Task] = set()
        self._callers: dict[str, TwilioCaller] = {}
        self.app = self._build_app()
        self._server: LocalServer | None = None

    # ---------------------------------------------------------------------------------------
    # Serving
    # ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API origin to use instead of ``https://api.twilio.com``."""
        if self._server is None:
            raise RuntimeError("the fake Twilio API is not running; call start() first")
        return self._server.url

    async def start(self) -> None:
        """Start serving on a free local port."""
        if self._server is None:
            self._server = LocalServer(self.app)
            await self._server.start()

    async def stop(self) -> None:
        """Cancel running hooks and stop serving."""
        for task in list(self._hook_tasks):
            task.cancel()
        if self._hook_tasks:
            await asyncio.wait(list(self._hook_tasks), timeout=5)
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def __aenter__(self) -> FakeTwilioRest:
        """Start serving."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop serving."""
        await self.stop()

    # ---------------------------------------------------------------------------------------
    # Test setup and inspection
    # ---------------------------------------------------------------------------------------

    def add_call(
        self,
        call_sid: str | None = None,
        *,
        to: str = "+15550002222",
        from_: str = "+15550001111",
        status: str = "in-progress",
        direction: str = "inbound",
    ) -> dict:
        """Register a call that exists, e.g. the inbound call a `TwilioCaller` placed.

        Args:
            call_sid: The call SID; random by default.
            to: The called number.
            from_: The caller's number.
            status: The call's status.
            direction: ``"inbound"``, ``"outbound-api"`` or ``"outbound-dial"``.

        Returns:
            The call's JSON representation (live: later updates change it).
        """
        call = self._new_call(call_sid or _sid("CA"), to=to, from_=from_, direction=direction)
        call["status"] = status
        if status not in ("queued", "ringing"):
            call["start_time"] = call["date_created"]
        self.calls[call["sid"]] = call
        return call

    def attach(self, caller: TwilioCaller, *, status: str = "in-progress") -> dict:
        """Register the call a `TwilioCaller` placed, and let updates end its stream.

        A successful update with ``Twiml``, ``Url`` or ``Status=completed`` makes the
        caller end its media stream from Twilio's side
        (`TwilioCaller.end_stream_by_twilio`), after the answer was sent.

        Args:
            caller: The caller; its ``call_sid`` and numbers are the call's.
            status: The call's status.

        Returns:
            The call's JSON representation.
        """
        self._callers[caller.call_sid] = caller
        call = self.calls.get(caller.call_sid)
        if call is None:
            call = self.add_call(
                caller.call_sid, to=caller.to_number, from_=caller.from_number, status=status
            )
        return call

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` requests with a Twilio-shaped error (fault injection).

        Args:
            n: How many requests fail.
            status: The HTTP status they get (5xx: Twilio is having trouble).
        """
        self._failures.extend([status] * n)

    def set_call_status(self, call_sid: str, status: str) -> dict:
        """Change a call's status as the phone network would (e.g. answered, busy).

        Args:
            call_sid: A known call.
            status: The new status, e.g. ``"in-progress"`` or ``"completed"``.

        Returns:
            The updated call JSON.
        """
        call = self.calls[call_sid]
        self._set_status(call, status)
        return call

    def add_routes(self, routes: list[Route]) -> None:
        """Serve more resources (e.g. `FakeConferences`' Conferences), before the 404 route.

        Their handlers can use ``_record``, ``_check_auth``, ``_injected_failure`` and
        ``_respond`` as the Calls resource does.

        Args:
            routes: Starlette routes, paths starting with ``/2010-04-01/Accounts/{account_sid}``.
        """
        self.app.router.routes[-1:-1] = routes

    def requests_to(
        self, call_sid: str | None = None, method: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests, optionally only those about one call and/or one method.

        Args:
            call_sid: Keep requests whose path names this call.
            method: Keep requests with this HTTP method.

        Returns:
            The matching `RecordedRequest` objects, in order.
        """
        return [
            request
            for request in self.requests
            if (call_sid is None or f"/Calls/{call_sid}." in request.path)
            and (method is None or request.method == method.upper())
        ]

    # ---------------------------------------------------------------------------------------
    # The API
    # ---------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        base = f"/{API_VERSION}/Accounts/{{account_sid}}"
        return Starlette(
            routes=[
                Route(f"{base}/Calls.json", self._create_call, methods=["POST"]),
                Route(f"{base}/Calls/{{call_sid}}.json", self._call, methods=["GET", "POST"]),
                Route(
                    f"{base}/Calls/{{call_sid}}/Recordings.json",
                    self._create_recording,
                    methods=["POST"],
                ),
                Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "DELETE"]),
            ]
        )

    async def _record(self, request: Request) -> RecordedRequest:
        body = (await request.body()).decode("utf-8", errors="replace")
        fields = parse_qsl(body, keep_blank_values=True)
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            form=dict(fields),
            time=asyncio.get_running_loop().time(),
            fields=fields,
            query=dict(request.query_params),
            username=self._basic_auth(request)[0],
            headers={key.lower(): value for key, value in request.headers.items()},
        )
        self.requests.append(recorded)
        return recorded

    @staticmethod
    def _basic_auth(request: Request) -> tuple[str | None, str | None]:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None, None
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        username, _, password = decoded.partition(":")
        return username, password

    def _check_auth(self, request: Request, account_sid: str) -> None:
        username, password = self._basic_auth(request)
        credentials = [(self.account_sid, self.auth_token)]
        if self.api_key_sid and self.api_key_secret:
            credentials.append((self.api_key_sid, self.api_key_secret))
        valid = any(
            username == user and hmac.compare_digest((password or "").encode(), secret.encode())
            for user, secret in credentials
        )
        if not valid or account_sid != self.account_sid:
            raise TwilioApiError(401, 20003, "Authenticate")

    def _respond(
        self,
        recorded: RecordedRequest,
        status: int,
        body: dict,
        background: BackgroundTask | None = None,
    ) -> JSONResponse:
        recorded.status = status
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers, background=background)

    async def _not_found(self, request: Request) -> JSONResponse:
        recorded = await self._record(request)
        error = TwilioApiError(
            404, 20404, f"The requested resource {request.url.path} was not found"
        )
        return self._respond(recorded, 404, error.to_json())

    async def _create_call(self, request: Request) -> JSONResponse:
        recorded = await self._record(request)
        account_sid = request.path_params["account_sid"]
        form = recorded.form
        call_sid = _sid("CA")
        try:
            self._check_auth(request, account_sid)
            if not form.get("To"):
                raise TwilioApiError(400, 21201, "No 'To' number is specified")
            if not form.get("From"):
                raise TwilioApiError(400, 21213, "No 'From' number is specified")
            if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
                raise TwilioApiError(
                    400, 21205, "A 'Url', 'Twiml' or 'ApplicationSid' parameter is required"
                )
            if self.screen_create is not None:
                self.screen_create(call_sid, dict(form))
        except TwilioApiError as error:
            return self._respond(recorded, error.status, error.to_json())
        call = self._new_call(call_sid, to=form["To"], from_=form["From"], direction="outbound-api")
        self.calls[call["sid"]] = call
        self.call_requests[call["sid"]] = recorded
        self.call_params[call["sid"]] = dict(form)
        info = {
            **form,
            "CallSid": call["sid"],
            "AccountSid": self.account_sid,
            "Direction": "outbound-api",
        }
        background = BackgroundTask(self._start_hook, self.on_create, info)
        return self._respond(recorded, 201, dict(call), background)

    async def _call(self, request: Request) -> JSONResponse:
        recorded = await self._record(request)
        account_sid = request.path_params["account_sid"]
        call_sid = request.path_params["call_sid"]
        try:
            self._injected_failure()
            self._check_auth(request, account_sid)
            call = self.calls.get(call_sid)
            if call is None:
                raise TwilioApiError(
                    404, 20404, f"The requested resource {request.url.path} was not found"
                )
            if request.method == "GET":
                return self._respond(recorded, 200, dict(call))
            self._apply_update(call, recorded.form)
        except TwilioApiError as error:
            return self._respond(recorded, error.status, error.to_json())
        info = {
            **recorded.form,
            "CallSid": call_sid,
            "AccountSid": self.account_sid,
            "CallStatus": call["status"],
        }
        background = BackgroundTask(self._after_update, info)
        return self._respond(recorded, 200, dict(call), background)

    async def _after_update(self, info: dict) -> None:
        """An update went through: the attached caller's stream ends, then the hook runs."""
        caller = self._callers.get(info["CallSid"])
        form = {k: v for k, v in info.items() if k not in ("CallSid", "AccountSid", "CallStatus")}
        if caller is not None and (
            "Twiml" in form or "Url" in form or form.get("Status") == "completed"
        ):
            twiml, url = form.get("Twiml"), None if "Twiml" in form else form.get("Url")
            method = form.get("Method", "POST")

            async def end_stream(_: dict) -> None:
                await caller.end_stream_by_twilio(twiml, url=url, method=method)

            await self._start_hook(end_stream, info)
        await self._start_hook(self.on_update, info)

    def _injected_failure(self) -> None:
        if self._failures:
            status = self._failures.pop(0)
            raise TwilioApiError(status, 20500, "An internal server error has occurred (injected)")

    def _apply_update(self, call: dict, form: dict[str, str]) -> None:
        status = form.get("Status")
        redirect = form.get("Url") or form.get("Twiml")
        if status is not None and status not in ("completed", "canceled"):
            raise TwilioApiError(400, 21218, f"Invalid Status: {status}")
        active = call["status"] in ACTIVE_STATUSES
        if redirect and not active and status is None:
            raise TwilioApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
        if (status == "completed" or _only_hangup(form.get("Twiml"))) and active:
            self._set_status(call, "completed")
        elif status == "canceled" and call["status"] in ("queued", "ringing"):
            self._set_status(call, "canceled")
        call["date_updated"] = _now_rfc2822()

    async def _start_hook(self, hook: CallHook | None, info: dict) -> None:
        # Runs once the response is sent; the hook itself gets its own task so that a
        # long hook (a whole simulated call) does not hold the HTTP request open.
        if hook is not None:
            self._spawn_hook(hook, info)

    def _spawn_hook(self, hook: CallHook, info: dict) -> None:
        task = asyncio.create_task(self._run_hook(hook, info))
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    async def _run_hook(self, hook: CallHook, info: dict) -> None:
        try:
            await hook(info)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.hook_errors.append(exc)

    # ---------------------------------------------------------------------------------------
    # Recordings
    # ---------------------------------------------------------------------------------------

    async def _create_recording(self, request: Request) -> JSONResponse:
        recorded = await self._record(request)
        call_sid = request.path_params["call_sid"]
        form = recorded.form
        try:
            self._injected_failure()
            self._check_auth(request, request.path_params["account_sid"])
            call = self.calls.get(call_sid)
            if call is None:
                raise TwilioApiError(
                    404, 20404, f"The requested resource {request.url.path} was not found"
                )
            if call["status"] != "in-progress":
                raise TwilioApiError(400, 21220, "Requested resource is not eligible for recording")
            channels = form.get("RecordingChannels", "mono")
            if channels not in ("mono", "dual"):
                raise TwilioApiError(400, 21208, f"Invalid RecordingChannels: {channels}")
        except TwilioApiError as error:
            return self._respond(recorded, error.status, error.to_json())
        now = _now_rfc2822()
        sid = _sid("RE")
        recording = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "call_sid": call_sid,
            "conference_sid": None,
            "date_created": now,
            "date_updated": now,
            "start_time": now,
            "duration": "-1",
            "sid": sid,
            "price": None,
            "price_unit": "USD",
            "status": "in-progress",
            "channels": 2 if channels == "dual" else 1,
            "source": "StartCallRecordingAPI",
            "error_code": None,
            "encryption_details": None,
            "track": form.get("RecordingTrack", "both"),
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call_sid}/Recordings/"
            f"{sid}.json",
        }
        self.recordings[sid] = recording
        events = [
            event
            for key, value in recorded.fields
            if key == "RecordingStatusCallbackEvent"
            for event in value.split()
        ]
        callback = form.get("RecordingStatusCallback", "")
        self._recording_events[sid] = (callback, events or ["completed"])
        return self._respond(recorded, 201, dict(recording))

    def _complete_recordings(self, call_sid: str, now: datetime) -> None:
        """The call ended: its recordings complete, and their callbacks are sent."""
        for sid, recording in self.recordings.items():
            if recording["call_sid"] != call_sid or recording["status"] != "in-progress":
                continue
            started = datetime.strptime(recording["start_time"], "%a, %d %b %Y %H:%M:%S %z")
            recording["status"] = "completed"
            recording["duration"] = str(max(0, int((now - started).total_seconds())))
            recording["date_updated"] = format_datetime(now)
            callback, events = self._recording_events[sid]
            if callback and "completed" in events:
                form = {
                    "AccountSid": self.account_sid,
                    "CallSid": call_sid,
                    "RecordingSid": sid,
                    "RecordingUrl": f"{self.url}/{API_VERSION}/Accounts/{self.account_sid}"
                    f"/Recordings/{sid}",
                    "RecordingStatus": "completed",
                    "RecordingDuration": recording["duration"],
                    "RecordingChannels": str(recording["channels"]),
                    "RecordingStartTime": recording["start_time"],
                    "RecordingSource": recording["source"],
                    "RecordingTrack": recording["track"],
                }
                self._spawn_hook(self._post_recording_status, form)

    async def _post_recording_status(self, form: dict) -> None:
        """POST a recording status callback, signed with the auth token as Twilio signs."""
        callback, _ = self._recording_events[form["RecordingSid"]]
        signature = RequestValidator(self.auth_token).compute_signature(callback, form)
        headers = {SIGNATURE_HEADER: signature, "User-Agent": "TwilioProxy/1.1"}
        status: int | None = None
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession() as session:
                async with session.post(callback, data=form, headers=headers) as response:
                    status = response.status
        self.recording_callbacks.append((form, status))

    # ---------------------------------------------------------------------------------------
    # Call representation
    # ---------------------------------------------------------------------------------------

    def _new_call(self, sid: str, *, to: str, from_: str, direction: str) -> dict:
        now = _now_rfc2822()
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}"
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": direction,
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": _format_number(from_),
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": _sid("PN"),
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {
                name: f"{uri}/{resource}.json" for name, resource in _SUBRESOURCES.items()
            },
            "to": to,
            "to_formatted": _format_number(to),
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }

    def _set_status(self, call: dict, status: str) -> None:
        now = datetime.now(UTC)
        was_active = call["status"] in ACTIVE_STATUSES
        call["status"] = status
        call["date_updated"] = format_datetime(now)
        if status == "in-progress" and call["start_time"] is None:
            call["start_time"] = format_datetime(now)
        if status not in ACTIVE_STATUSES:
            call["end_time"] = format_datetime(now)
            if call["start_time"] is not None:
                started = datetime.strptime(call["start_time"], "%a, %d %b %Y %H:%M:%S %z")
                call["duration"] = str(max(0, int((now - started).total_seconds())))
            else:
                call["duration"] = "0"
            if was_active:
                self._complete_recordings(call["sid"], now)


_SUBRESOURCES = {
    "feedback": "Feedback",
    "notifications": "Notifications",
    "recordings": "Recordings",
    "streams": "Streams",
    "payments": "Payments",
    "user_defined_message_subscriptions": "UserDefinedMessageSubscriptions",
    "user_defined_messages": "UserDefinedMessages",
    "events": "Events",
    "siprec": "Siprec",
    "transcriptions": "Transcriptions",
}


def _only_hangup(twiml: str | None) -> bool:
    """Whether ``twiml`` just hangs up (Twilio completes the call at once)."""
    if not twiml:
        return False
    try:
        return parse_twiml(twiml).verb_names == ["Hangup"]
    except TwimlError:
        return False


def _format_number(number: str) -> str:
    """Format a NANP number the way Twilio's ``*_formatted`` fields do."""
    digits = number[2:] if number.startswith("+1") else ""
    if len(digits) == 10 and digits.isdigit():
        return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    return number
