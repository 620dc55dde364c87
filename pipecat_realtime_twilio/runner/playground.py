#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The browser softphone: call a bot from a web page, over the Media Streams protocol.

``GET /playground?token=PLAYGROUND_TOKEN`` serves a page that takes the
microphone, codes it as 8 kHz μ-law in 20 ms packets and streams it to the
runner exactly as Twilio does (``connected``, ``start`` with the call's stream
token, ``media``, ``dtmf``, ``stop``); it plays the bot's audio, echoes marks
as it plays them and honours ``clear``, shows the live transcript and hangs up.
The call goes through the same admission (stream token, ``MAX_CALLS``) and
pipeline as a phone call. The page has the console's look (its style sheet,
inlined), a microphone level meter, the response latency as the runner measures
it, and when the call ends, with ``RUNNER_API_KEY`` set, a link to the call's
page in the console (``/console#/calls/<CallSid>``).

It is off unless ``PLAYGROUND_TOKEN`` is set, and every route wants that token
(a browser cannot sign like Twilio), so a public runner does not expose it. The
token reads the transcripts of the calls the playground placed, no others, and
the page is given no account data: its stream's account is the runner's own.
"""

import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from loguru import logger

from pipecat_realtime_twilio.logs import Throttled
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.phone.requests import read_body
from pipecat_realtime_twilio.phone.stream import StreamRejected, refuse_stream
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.settings import Settings


class Switchboard(Protocol):
    """What the playground uses of the runner (a :class:`~.app.CallRunner` is one)."""

    settings: Settings

    @property
    def bot_names(self) -> list[str]:
        """The bots a call can go to."""

    async def open_line(self, call_sid: str, parameters: dict[str, str]) -> str | None:
        """Hold a line for a new call; its stream token, or None when all lines are busy."""

    def transcript_of(self, call_sid: str) -> tuple[bool, list[dict[str, Any]]] | None:
        """Whether the call is active, and its transcript so far (None: no such call)."""

    @property
    def active(self) -> Mapping[str, CallSession]:
        """Calls streaming now, by CallSid."""

    @property
    def finished(self) -> Iterable[CallRecord]:
        """Records of the newest finished calls."""

    async def admit(self, call: CallSession) -> None:
        """Check a started stream like a phone call's, then run it."""


PLACED_CALLS_KEPT = 1000
"""Most playground calls whose transcripts the token can read (the newest)."""

MAX_PLAYGROUND_BODY_BYTES = 4 * 1024
"""Largest body ``POST /playground/calls`` reads (it names a bot)."""

PLAYGROUND_ACCOUNT = "AC" + "0" * 32
"""The account SID the page puts in its ``start``; replaced by the runner's own."""


class Playground:
    """The softphone's routes, on a :class:`Switchboard` (the runner)."""

    def __init__(self, runner: Switchboard, token: str):
        """Initialize the routes.

        Args:
            runner: The runner whose bots the page calls.
            token: The ``PLAYGROUND_TOKEN`` every request must carry.
        """
        self.runner = runner
        self._token = token.encode()
        self._placed: OrderedDict[str, None] = OrderedDict()  # calls placed from the page
        self._refused = Throttled()
        assets = resources.files("pipecat_realtime_twilio").joinpath("assets")
        page = assets.joinpath("playground.html").read_text(encoding="utf-8")
        style = assets.joinpath("console.css").read_text(encoding="utf-8")  # the console's look
        self._page = page.replace("/* console.css */", style)
        self.router = APIRouter()
        self.router.add_api_route("/playground", self.page, methods=["GET"])
        self.router.add_api_route("/playground/bots", self.bots, methods=["GET"])
        self.router.add_api_route("/playground/calls", self.create_call, methods=["POST"])
        self.router.add_api_route(
            "/playground/transcript/{call_sid}", self.transcript, methods=["GET"]
        )
        self.router.add_api_websocket_route("/playground/media-stream", self.stream)

    def _allowed(self, token: str | None) -> bool:
        return hmac.compare_digest((token or "").encode(), self._token)

    def _check(self, request: Request) -> None:
        if not self._allowed(request.query_params.get("token")):
            raise HTTPException(403, "the playground wants ?token=PLAYGROUND_TOKEN")

    async def page(self, request: Request) -> HTMLResponse:
        """The softphone page."""
        self._check(request)
        return HTMLResponse(self._page)

    async def bots(self, request: Request) -> JSONResponse:
        """The bots the page can call."""
        self._check(request)
        settings = self.runner.settings
        return JSONResponse(
            {
                "bots": self.runner.bot_names,
                "default": settings.bot,
                "console": settings.runner_api_key is not None,  # a call's page to link to
            }
        )

    async def create_call(self, request: Request) -> JSONResponse:
        """Start a call: a CallSid, a held line and the stream's parameters (with its token)."""
        self._check(request)
        runner = self.runner
        limit, timeout = MAX_PLAYGROUND_BODY_BYTES, runner.settings.http_body_timeout_secs
        try:
            body = json.loads(await read_body(request, limit, timeout) or b"{}")
        except ValueError:
            body = {}
        bot = body.get("bot") if isinstance(body, dict) else None
        if bot not in runner.bot_names:
            bot = runner.settings.bot
        call_sid = "CA" + secrets.token_hex(16)
        parameters = {"bot": bot, "from": "playground", "to": "playground", "direction": "inbound"}
        token = await runner.open_line(call_sid, parameters)
        if token is None:
            raise HTTPException(503, "all lines are busy")
        self._placed[call_sid] = None
        while len(self._placed) > PLACED_CALLS_KEPT:
            self._placed.popitem(last=False)
        logger.info(f"Playground call {call_sid}: bot '{bot}'")
        return JSONResponse(
            {"call_sid": call_sid, "parameters": {**parameters, "token": token}},
            status_code=201,
        )

    async def transcript(self, call_sid: str, request: Request) -> JSONResponse:
        """The call's transcript and response latencies so far: calls placed here.

        Answers ``{"call_sid", "active", "transcript", "latency_ms"}``: the record's,
        once the call is over.
        """
        self._check(request)
        found = self.runner.transcript_of(call_sid) if call_sid in self._placed else None
        if found is None:
            raise HTTPException(404, "no such call")
        active, turns = found
        body = {
            "call_sid": call_sid,
            "active": active,
            "transcript": turns,
            "latency_ms": self._latencies(call_sid),
        }
        return JSONResponse(body)

    def _latencies(self, call_sid: str) -> list[float]:
        """Per answer so far, ms from the caller's last word to the answer heard."""
        call = self.runner.active.get(call_sid)
        if call is not None and call.agent is not None:
            return list(call.agent.response_latencies_ms)
        record = next((r for r in self.runner.finished if r.call_sid == call_sid), None)
        return list(record.latency.get("response_ms") or []) if record is not None else []

    async def stream(self, websocket: WebSocket) -> None:
        """The page's media stream: the playground token, then a phone call's admission."""
        if not self._allowed(websocket.query_params.get("token")):
            await refuse_stream(websocket)  # before accepting: the upgrade gets 403
            return
        try:
            call = await CallSession.accept(websocket)
        except StreamRejected as e:
            self._refused.warning("start", f"Refused a playground stream: {e}")
            await refuse_stream(websocket)
            return
        # The page knows no account: the stream is the runner's own (its token says so).
        call.start.account_sid = self.runner.settings.twilio_account_sid or PLAYGROUND_ACCOUNT
        await self.runner.admit(call)
