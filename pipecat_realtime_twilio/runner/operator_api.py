#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The operator's HTTP API: ``Authorization: Bearer RUNNER_API_KEY``, placing calls, health.

The key guards ``POST /calls`` here and the read API and console of
:mod:`~pipecat_realtime_twilio.runner.console`. :class:`OperatorRoutes`, part of the
:class:`~pipecat_realtime_twilio.runner.app.CallRunner`, also serves what an
orchestrator and Prometheus ask: ``/healthz``, ``/readyz`` and ``/metrics``.
"""

import hmac
import json
from collections.abc import Container
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse

from pipecat_realtime_twilio.phone.outbound import OutboundError, place_call
from pipecat_realtime_twilio.phone.requests import read_body
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.runner.metrics import CONTENT_TYPE, RunnerMetrics
from pipecat_realtime_twilio.settings import Settings

if TYPE_CHECKING:  # the runner's parts, which import this module's neighbours
    from pipecat_realtime_twilio.phone.call import CallSession
    from pipecat_realtime_twilio.runner.admission import Admission
    from pipecat_realtime_twilio.runner.bots import Bot

MAX_API_BODY_BYTES = 16 * 1024
"""Largest body of an operator API request accepted; placing a call takes a few hundred bytes."""


def require_api_key(request: Request, settings: Settings, what: str) -> None:
    """Let the request through only with ``Authorization: Bearer RUNNER_API_KEY``.

    Args:
        request: The request.
        settings: The runner's settings.
        what: What the key turns on, for the 404 without one.

    Raises:
        HTTPException: 404 without ``RUNNER_API_KEY``, 401 with a wrong or missing key.
    """
    key = settings.runner_api_key
    if key is None:
        raise HTTPException(404, f"{what} are off: set RUNNER_API_KEY")
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {key.get_secret_value()}".encode()):
        raise HTTPException(401, "wrong or missing API key", {"WWW-Authenticate": "Bearer"})


async def create_call(
    request: Request,
    settings: Settings,
    bots: Container[str],
    *,
    draining: bool,
    rest: TwilioRest | None,
) -> JSONResponse:
    """Place an outbound call: ``{"to": "+1555...", "bot": "NAME", "from": "+1555..."}``.

    Args:
        request: The ``POST /calls`` request.
        settings: The runner's settings.
        bots: The names of the bots a call may go to.
        draining: Whether the runner has stopped taking calls.
        rest: Twilio's REST API.

    Returns:
        201 with ``{"call_sid": ..., "bot": ...}``.

    Raises:
        HTTPException: 404/401 (the key, checked before the body is read), 413/408
            (a body over ``MAX_API_BODY_BYTES`` or slower than ``HTTP_BODY_TIMEOUT_SECS``),
            400 (the body, an unknown bot), 503 (draining), 502 (Twilio refused).
    """
    require_api_key(request, settings, "outbound calls")
    raw = await read_body(request, MAX_API_BODY_BYTES, settings.http_body_timeout_secs)
    try:
        body = json.loads(raw)
    except ValueError:
        raise HTTPException(400, "the body must be JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("to"), str):
        raise HTTPException(400, 'give "to": the number to call')
    bot = body.get("bot") or settings.bot
    if bot not in bots:
        raise HTTPException(400, f"unknown bot {bot!r}")
    if draining:
        raise HTTPException(503, "the runner is draining")
    try:
        call_sid = await place_call(
            settings, body["to"], bot=bot, from_number=body.get("from"), rest=rest
        )
    except OutboundError as e:
        raise HTTPException(502 if e.upstream else 400, str(e)) from None
    return JSONResponse({"call_sid": call_sid, "bot": bot}, status_code=201)


class OperatorRoutes:
    """``POST /calls``, ``/healthz``, ``/readyz`` and ``/metrics``, mixed into ``CallRunner``."""

    settings: Settings
    bots: "dict[str, Bot]"
    rest: TwilioRest | None
    metrics: RunnerMetrics
    admission: "Admission"

    @property
    def draining(self) -> bool:
        """Whether the runner has stopped taking calls (``SIGTERM``)."""
        return self.admission.draining

    @property
    def active(self) -> "dict[str, CallSession]":
        """Calls streaming now, by CallSid."""
        return self.admission.active

    async def create_call(self, request: Request) -> JSONResponse:
        """Place an outbound call: ``{"to": "+1555...", "bot": "NAME", "from": "+1555..."}``."""
        return await create_call(
            request, self.settings, self.bots, draining=self.draining, rest=self.rest
        )

    async def healthz(self) -> JSONResponse:
        """The process is up."""
        return JSONResponse({"status": "ok"})

    async def readyz(self) -> JSONResponse:
        """Whether this runner takes new calls (503 while draining)."""
        body = {
            "ready": not self.draining,
            "active_calls": len(self.active),
            "max_calls": self.settings.max_calls,
            "instance": self.admission.shared.instance_id,
            "shared_state": self.admission.shared.status,  # ok, unreachable, off
        }
        return JSONResponse(body, status_code=503 if self.draining else 200)

    async def metrics_page(self, request: Request) -> Response:
        """Prometheus metrics; with ``METRICS_TOKEN``, only for ``Authorization: Bearer`` it."""
        token = self.settings.metrics_token
        if token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
                return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return Response(content=self.metrics.render(), media_type=CONTENT_TYPE)
