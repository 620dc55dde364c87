#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Twilio's voice webhook (``POST /incoming``), the runner's side.

:class:`IncomingCalls`, part of the :class:`~pipecat_realtime_twilio.runner.app.CallRunner`,
answers a signed webhook with TwiML that opens a media stream carrying a one-use
token bound to the call and to the stream's parameters (the bot, the numbers);
over ``MAX_CALLS`` or ``MAX_CALLS_TOTAL``, or while draining, with a busy line. A
draining instance that sees another instance ready in the registry answers
``503`` with ``Retry-After: 1`` instead, so a balancer retries the webhook there
(nginx: ``proxy_next_upstream http_503 non_idempotent``); alone, it never leaves a
caller with an error. A webhook for a call that has had its call already (a
replay: Twilio signs no timestamp, so a captured webhook stays valid) is answered
``<Hangup/>``: no stream, no Realtime session.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request, Response
from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from pipecat_realtime_twilio.failures import Failure
from pipecat_realtime_twilio.logs import Throttled, field, masked_number
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.phone.signatures import verified_form
from pipecat_realtime_twilio.phone.twiml import hangup_twiml, say_twiml, stream_twiml
from pipecat_realtime_twilio.runner.admission import Admission
from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
from pipecat_realtime_twilio.runner.bots import Bot
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.prewarm import PrewarmedCall, PrewarmedCalls
from pipecat_realtime_twilio.settings import Settings

BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again later."
"""What a caller over ``MAX_CALLS`` or ``MAX_CALLS_TOTAL`` (or calling while the runner
drains) hears."""

STREAM_ACTION_PARAMETER = "stream_action"
"""The stream parameter that says the runner's ``<Connect action>`` follows the stream."""

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
"""What a Twilio Call SID looks like."""

STORE_LOOKUP_SECS = 1.0
"""Most seconds the webhook waits for the store to say whether a call had its call."""


class IncomingCalls:
    """The voice webhook route and what it needs, mixed into ``CallRunner``."""

    settings: Settings
    bots: dict[str, Bot]
    rest: TwilioRest | None
    metrics: RunnerMetrics
    admission: Admission
    records: RecordKeeper
    prewarmed: PrewarmedCalls
    _refused: Throttled
    # The runner's: building a bot's pipeline, recording a call, awaiting its stream.
    _build: Callable[[str, CallSession], Awaitable[list[FrameProcessor] | Failure]]
    _account: Callable[[CallSession, str], None]
    expect_stream: Callable[[str, dict[str, str]], None]

    async def incoming(self, request: Request) -> Response:
        """Answer Twilio's voice webhook with TwiML that streams the call to us."""
        form = await verified_form(request, self.settings)
        call_sid = form.get("CallSid", "")
        if not CALL_SID.fullmatch(call_sid):
            self._refused.warning(
                "callsid", f"Refused a webhook: CallSid {field(call_sid)} malformed"
            )
            raise HTTPException(400, "CallSid missing or malformed")
        if await self.had_its_call(call_sid):
            self._refused.warning(
                "replay",
                f"Webhook for call {call_sid}, which had its call already: answered "
                "without a stream (a replayed request?)",
            )
            self.metrics.rejected.labels("replay").inc()
            return Response(content=hangup_twiml(), media_type="application/xml")
        busy = await self.admission.busy_reason()
        if busy is not None:
            return await self._turn_away(call_sid, busy)
        # An outbound call names its bot; an incoming one is routed by the number called.
        asked = request.query_params.get("bot")
        routed = self.settings.bot_routes.get(form.get("To", ""))
        bot = asked if asked in self.bots else routed or self.settings.bot
        outbound = form.get("Direction", "inbound").startswith("outbound")
        logger.info(
            f"{'Outbound' if outbound else 'Incoming'} call {call_sid} from "
            f"{masked_number(form.get('From'))} to {masked_number(form.get('To'))}: bot '{bot}'"
        )
        parameters = {
            "bot": bot,
            "from": form.get("From", ""),
            "to": form.get("To", ""),
            "direction": "outbound" if outbound else "inbound",
            STREAM_ACTION_PARAMETER: "1",
        }
        # The line is held until the stream starts, or until its pre-warmed session ends.
        hold = self.settings.prewarm_timeout_secs if self.settings.prewarm else None
        stream_token = await self.admission.reserve(call_sid, parameters, hold)
        if stream_token is None:
            return await self._turn_away(
                call_sid, f"MAX_CALLS_TOTAL={self.settings.max_calls_total} reached"
            )
        if self.settings.prewarm:
            fallback = await self._prewarm(call_sid, form.get("AccountSid", ""), bot, parameters)
            if fallback is not None:  # the bot failed to build: no stream, help at once
                self.admission.release(call_sid)
                return Response(content=fallback, media_type="application/xml")
        self.expect_stream(call_sid, parameters)
        # The other routes sit beside this one, wherever the router is mounted.
        prefix = request.url.path.rsplit("/", 1)[0]
        twiml = stream_twiml(
            f"{self.settings.websocket_origin}{prefix}/media-stream",
            {**parameters, "token": stream_token},
            action_url=f"{self.settings.public_origin}{prefix}/stream-ended",
            status_callback_url=f"{self.settings.public_origin}{prefix}/stream-status",
        )
        return Response(content=twiml, media_type="application/xml")

    async def _turn_away(self, call_sid: str, reason: str) -> Response:
        """The busy line; or, draining with another instance ready, 503 for the balancer."""
        if reason == "draining" and await self.admission.shared.another_ready():
            logger.info(f"Incoming call {call_sid}: draining; 503 for another instance to take it")
            return Response(status_code=503, headers={"Retry-After": "1"})
        logger.warning(f"Incoming call {call_sid} turned away: {reason}")
        self.metrics.rejected.labels("busy").inc()
        return Response(content=say_twiml(BUSY_MESSAGE), media_type="application/xml")

    async def had_its_call(self, call_sid: str) -> bool:
        """Whether ``call_sid`` had its call already: here, or in the store's records.

        The store is asked for at most :data:`STORE_LOOKUP_SECS`; if it cannot
        answer, what this process remembers decides.

        Args:
            call_sid: The call.
        """
        if await self.admission.seen(call_sid):
            return True
        try:
            stored: Any = await asyncio.wait_for(
                self.records.store.aget(call_sid), STORE_LOOKUP_SECS
            )
        except Exception as e:  # the database is down or slow: answer the call
            self._refused.warning("store", f"Could not look a call up in the store: {field(e)}")
            return False
        if stored is not None:
            self.admission.had_call(call_sid)
        return stored is not None

    async def _prewarm(
        self, call_sid: str, account_sid: str, bot: str, parameters: dict[str, str]
    ) -> str | None:
        """Build the call's pipeline now and start its Realtime sessions opening.

        Returns:
            None; or, when the bot fails to build, the fallback TwiML to answer
            the webhook with (the call is recorded as failed).
        """
        call = CallSession.before_stream(
            call_sid, account_sid=account_sid, parameters=parameters, rest=self.rest
        )
        built = await self._build(bot, call)
        if isinstance(built, Failure):
            await call.fail(built)
            self._account(call, bot)
            return call.ended.next_twiml if call.ended is not None else None
        self.prewarmed.add(call_sid, PrewarmedCall(call, built, bot))
        return None
