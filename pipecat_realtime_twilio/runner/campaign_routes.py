#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Outbound campaigns over HTTP: Twilio's callbacks of campaign calls, and the operator's API.

Twilio's routes (signed: :func:`~pipecat_realtime_twilio.phone.signatures.verified_form`
checks the signature before the body is read, as for ``/incoming``), each with
``?campaign=ID&number=N&attempt=K`` in the URL the dialer gave Twilio:

- ``POST /campaign-answer``: the answered call's TwiML: a ``<Pause>`` while AMD runs, then
  ``<Redirect>`` to ``/incoming?bot=NAME`` (the bot named in its URL when the database cannot
  be read: the person who answered is never left with an error).
- ``POST /campaign-amd``: AMD's result; the call goes to the bot, gets the voicemail
  message, or is hung up (:class:`~pipecat_realtime_twilio.runner.dialer.CampaignDialer`).
- ``POST /campaign-status``: the call's status events; a final one ends or retries the number.

The operator's (``Authorization: Bearer RUNNER_API_KEY``, checked before the body is read):

- ``POST /campaigns``: JSON ``{"name", "bot", "numbers": ["+1...", {"number", "timezone"}]
  | "csv": "<CSV text>", "rate_per_minute", "calling_hours", "max_attempts",
  "retry_secs", "ring_secs", "from"}`` (defaults from the ``CAMPAIGN_*`` settings) → 201
  with the campaign's id and counts, the invalid and duplicate numbers listed; 400 naming
  the field for anything else (an unknown field, both or neither of ``numbers`` and
  ``csv``, a value out of range, a caller ID that is not a phone number).
- ``GET /api/campaigns``: campaigns newest first with their progress (``limit``, ``offset``).
- ``GET /api/campaigns/{id}``: one campaign, its progress, and its numbers (``limit``,
  ``offset``) in CSV order.
- ``POST /api/campaigns/{id}/cancel``: its pending numbers end ``canceled``; calls under
  way end as they do. Canceling again is harmless.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger

from pipecat_realtime_twilio.logs import field
from pipecat_realtime_twilio.phone.requests import read_body
from pipecat_realtime_twilio.phone.signatures import verified_form
from pipecat_realtime_twilio.phone.twiml import hangup_twiml
from pipecat_realtime_twilio.runner.bots import Bot
from pipecat_realtime_twilio.runner.calling_hours import CallingHours, CallingHoursError
from pipecat_realtime_twilio.runner.campaign_csv import (
    CampaignInputError,
    CampaignNumbers,
    read_csv,
    read_list,
)
from pipecat_realtime_twilio.runner.campaign_model import CampaignSpec
from pipecat_realtime_twilio.runner.dialer import MAX_RING_SECS, CampaignDialer
from pipecat_realtime_twilio.runner.operator_api import require_api_key

MAX_CAMPAIGN_BODY_BYTES = 4 * 1024 * 1024
"""Largest ``POST /campaigns`` body (some 100,000 numbers of CSV)."""

CAMPAIGN_ID = re.compile(r"cmp_[0-9a-f]{16}")
"""What a campaign's id looks like."""

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")

FIELDS = (
    "name",
    "bot",
    "numbers",
    "csv",
    "rate_per_minute",
    "calling_hours",
    "max_attempts",
    "retry_secs",
    "ring_secs",
    "from",
)
"""The fields of ``POST /campaigns``."""

_XML = "application/xml"


def _bounded(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise HTTPException(400, f"{name}: a number from {low:g} to {high:g}")
    return float(value)


def _whole(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = _bounded(body, name, default, low, high)
    if not value.is_integer():
        raise HTTPException(400, f"{name}: a whole number from {low} to {high}")
    return int(value)


def _caller_id(value: object) -> str:
    """The caller ID in E.164, or a 400."""
    if not isinstance(value, str) or not value.strip():
        raise HTTPException(400, "from: give the caller ID (or set TWILIO_PHONE_NUMBER)")
    try:
        parsed = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_possible_number(parsed):
        raise HTTPException(400, f"from: {value.strip()[:40]!r} is not a phone number (+...)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _page(request: Request, default: int, most: int) -> tuple[int, int]:
    values = []
    for name, fallback, high in (("limit", default, most), ("offset", 0, 10**9)):
        text = request.query_params.get(name, "").strip()
        if not text:
            values.append(fallback)
            continue
        if not text.isdecimal() or int(text) > high:
            raise HTTPException(400, f"{name}: a whole number up to {high}")
        values.append(int(text))
    return values[0], values[1]


class CampaignRoutes:
    """The campaign routes on :attr:`router`."""

    def __init__(self, dialer: CampaignDialer, bots: Callable[[], dict[str, Bot]]):
        """Build the routes.

        Args:
            dialer: The dialer (its settings, store, metrics).
            bots: The bots now.
        """
        self.dialer = dialer
        self.settings = dialer.settings
        self.store = dialer.store
        self._bots = bots
        self.router = APIRouter()
        add = self.router.add_api_route
        add("/campaign-answer", self.answer, methods=["POST"])
        add("/campaign-amd", self.amd, methods=["POST"])
        add("/campaign-status", self.status, methods=["POST"])
        add("/campaigns", self.create, methods=["POST"])
        add("/api/campaigns", self.list_campaigns, methods=["GET"])
        add("/api/campaigns/{campaign_id}", self.show, methods=["GET"])
        add("/api/campaigns/{campaign_id}/cancel", self.cancel, methods=["POST"])

    #
    # Twilio's
    #

    async def _twilio(self, request: Request) -> tuple[dict[str, str], str, int, int, str]:
        """A Twilio callback's signed form, its campaign, number, try and call."""
        form = await verified_form(request, self.settings)
        query = request.query_params
        campaign_id = query.get("campaign", "")
        number, attempt = query.get("number", ""), query.get("attempt", "")
        call_sid = form.get("CallSid", "")
        if not CAMPAIGN_ID.fullmatch(campaign_id) or not number.isdecimal() or len(number) > 12:
            raise HTTPException(400, "campaign or number missing or malformed")
        if not attempt.isdecimal() or len(attempt) > 3:
            raise HTTPException(400, "attempt missing or malformed")
        if not CALL_SID.fullmatch(call_sid):
            raise HTTPException(400, "CallSid missing or malformed")
        return form, campaign_id, int(number), int(attempt), call_sid

    async def answer(self, request: Request) -> Response:
        """The answered campaign call's TwiML: wait for AMD, then the bot."""
        form, campaign_id, _, _, _ = await self._twilio(request)
        bot = request.query_params.get("bot", "")
        try:
            campaign = await self.store.acall("campaign", campaign_id)
        except Exception as e:  # the database is down: whoever answered still hears the bot
            logger.warning(
                f"Campaign {campaign_id}: could not read it ({field(e)}); "
                f"answering with its bot {field(bot, 40)}"
            )
            campaign = {"bot": bot if bot in self._bots() else self.settings.bot}
        if campaign is None:
            return Response(hangup_twiml(), media_type=_XML)
        answered_by = form.get("AnsweredBy") or None
        return Response(self.dialer.answer_twiml(campaign["bot"], answered_by), media_type=_XML)

    async def amd(self, request: Request) -> Response:
        """AMD's result: to the bot, the voicemail message, or a hang-up."""
        form, campaign_id, number_id, attempt, call_sid = await self._twilio(request)
        answered_by = form.get("AnsweredBy", "").strip()[:32]
        campaign = await self.store.acall("campaign", campaign_id)
        if campaign is not None and answered_by:
            await self.dialer.amd_result(
                campaign_id, number_id, attempt, call_sid, answered_by, campaign["bot"]
            )
        return Response(status_code=204)

    async def status(self, request: Request) -> Response:
        """A status callback of a campaign call."""
        form, campaign_id, number_id, attempt, call_sid = await self._twilio(request)
        sequence = form.get("SequenceNumber", "")
        duration = form.get("CallDuration", "")
        await self.dialer.call_status(
            campaign_id,
            number_id,
            attempt,
            call_sid,
            form.get("CallStatus", "")[:32],
            int(sequence) if sequence.isdecimal() and len(sequence) < 10 else 0,
            form.get("AnsweredBy", "")[:32] or None,
            int(duration) if duration.isdecimal() and len(duration) < 10 else None,
        )
        return Response(status_code=204)

    #
    # the operator's
    #

    async def create(self, request: Request) -> JSONResponse:
        """Start a campaign (see the module docstring)."""
        require_api_key(request, self.settings, "campaigns")
        raw = await read_body(
            request, MAX_CAMPAIGN_BODY_BYTES, self.settings.http_body_timeout_secs
        )
        try:
            body = json.loads(raw)
        except ValueError:
            raise HTTPException(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise HTTPException(400, f"unknown field {unknown[0][:40]!r}: use {', '.join(FIELDS)}")
        spec = self._spec(body)
        numbers = self._numbers(body)
        if not self.dialer.enabled and self.settings.campaign_dialer:
            raise HTTPException(
                503, "campaigns need PUBLIC_URL, TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        campaign_id = await self.store.acall("create", spec, numbers, time.time())
        for _ in numbers.invalid:
            self.dialer.metrics.campaign_outcomes.labels("invalid").inc()
        return JSONResponse(
            {"id": campaign_id, "name": spec.name, "bot": spec.bot, **numbers.report()},
            status_code=201,
        )

    def _spec(self, body: dict[str, Any]) -> CampaignSpec:
        s = self.settings
        bot = body.get("bot") or s.bot
        if not isinstance(bot, str) or bot not in self._bots():
            raise HTTPException(400, f"bot: unknown bot {str(bot)[:60]!r}")
        from_number = _caller_id(body.get("from") or s.twilio_phone_number)
        hours = body.get("calling_hours", s.campaign_calling_hours)
        if not isinstance(hours, str):
            raise HTTPException(400, "calling_hours: text, HH:MM-HH:MM")
        try:
            hours = str(CallingHours.parse(hours))
        except CallingHoursError as e:
            raise HTTPException(400, f"calling_hours: {e}") from None
        name = body.get("name") or f"campaign {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        if not isinstance(name, str) or len(name) > 200:
            raise HTTPException(400, "name: text of at most 200 characters")
        return CampaignSpec(
            name=name,
            bot=bot,
            from_number=from_number,
            rate_per_minute=_bounded(
                body, "rate_per_minute", s.campaign_rate_per_minute, 0.01, 6000
            ),
            calling_hours=hours,
            max_attempts=_whole(body, "max_attempts", s.campaign_max_attempts, 1, 10),
            retry_secs=_bounded(body, "retry_secs", s.campaign_retry_secs, 0.01, 7 * 86400),
            ring_secs=_whole(body, "ring_secs", s.campaign_ring_secs, 5, MAX_RING_SECS),
        )

    @staticmethod
    def _numbers(body: dict[str, Any]) -> CampaignNumbers:
        csv, numbers = body.get("csv"), body.get("numbers")
        if (csv is None) == (numbers is None):
            raise HTTPException(400, 'give either "numbers" (a list) or "csv" (text)')
        try:
            if isinstance(csv, str):
                return read_csv(csv)
            if isinstance(numbers, list):
                return read_list(numbers)
        except CampaignInputError as e:
            raise HTTPException(400, str(e)) from None
        raise HTTPException(400, '"numbers" must be a list, "csv" text')

    def _campaign_id(self, request: Request, campaign_id: str) -> str:
        require_api_key(request, self.settings, "campaigns")
        if not CAMPAIGN_ID.fullmatch(campaign_id):
            raise HTTPException(404, "no such campaign")
        return campaign_id

    async def list_campaigns(self, request: Request) -> JSONResponse:
        """Campaigns, newest first, with their progress."""
        require_api_key(request, self.settings, "campaigns")
        limit, offset = _page(request, 50, 500)
        campaigns = await self.store.acall("campaigns", limit, offset)
        total = await self.store.acall("count")
        body = {"campaigns": campaigns, "total": total, "limit": limit, "offset": offset}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def show(self, request: Request, campaign_id: str) -> JSONResponse:
        """One campaign, its progress and a page of its numbers."""
        self._campaign_id(request, campaign_id)
        limit, offset = _page(request, 100, 1000)
        campaign = await self.store.acall("campaign", campaign_id)
        if campaign is None:
            raise HTTPException(404, "no such campaign")
        numbers = await self.store.acall("numbers", campaign_id, limit, offset)
        body = {**campaign, "numbers": numbers, "limit": limit, "offset": offset}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def cancel(self, request: Request, campaign_id: str) -> JSONResponse:
        """Cancel a campaign: its pending numbers end ``canceled``."""
        self._campaign_id(request, campaign_id)
        canceled = await self.store.acall("cancel", campaign_id, time.time())
        if canceled is None:
            raise HTTPException(404, "no such campaign")
        if canceled:
            self.dialer.metrics.campaign_outcomes.labels("canceled").inc(canceled)
        return JSONResponse({"id": campaign_id, "canceled": canceled})
