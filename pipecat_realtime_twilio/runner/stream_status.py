#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Twilio's stream status callbacks (``<Stream statusCallback>``), the runner's side.

Twilio POSTs (signed, form-encoded) ``stream-started``, ``stream-stopped`` and
``stream-error`` (with ``StreamError``) for each media stream. Without them a
stream that cannot reach the runner (error 31920, a handshake refused) shows only
in Twilio's debugger. :class:`StreamStatus`, part of the
:class:`~pipecat_realtime_twilio.runner.app.CallRunner`, serves ``POST /stream-status``:
every event is counted (``prt_stream_events_total{event}``), logged and kept on the
call (``CallSession.stream_events``) and so on its record; an event that comes after
the record was kept amends it, on whichever instance holds the record
(:mod:`~pipecat_realtime_twilio.runner.amendments`). A ``stream-error`` for a call
whose stream never started frees that call at once: its pre-warmed Realtime sessions
are closed, its line is released, it is recorded as ``failed: stream: <Twilio's
error number>``, and the ``<Connect action>`` answers the fallback line.

It also serves the ``<Connect action>`` itself (``POST /stream-ended``): the TwiML a
call's end asked for (``<Dial>``, a spoken line), ``<Hangup/>`` otherwise, and the
fallback line for a call whose stream never came.

With ``REDIS_URL`` these callbacks may reach any instance: what they need is shared
(:mod:`~pipecat_realtime_twilio.runner.stream_handoff`). The action answers the
``<Dial>`` of a call that ran elsewhere; a stream that never came is failed and
recorded once, by the first instance to claim it, and the instance that answered
its webhook closes its pre-warmed session and frees its line at once.
"""

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from loguru import logger

from pipecat_realtime_twilio.failures import FALLBACK_LINE, Failure, Stage, stream_error_code
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.phone.signatures import verified_form
from pipecat_realtime_twilio.phone.twiml import hangup_twiml, say_twiml
from pipecat_realtime_twilio.runner.admission import Admission
from pipecat_realtime_twilio.runner.amendments import RecordAmender, StreamEventAmendment
from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.prewarm import PrewarmedCalls
from pipecat_realtime_twilio.runner.records import stream_event
from pipecat_realtime_twilio.runner.stream_handoff import StreamClaim, StreamHandoff
from pipecat_realtime_twilio.settings import Settings


class StreamStatus:
    """The runner's stream status route and what it needs, mixed into ``CallRunner``."""

    settings: Settings
    rest: TwilioRest | None
    metrics: RunnerMetrics
    admission: Admission
    records: RecordKeeper
    prewarmed: PrewarmedCalls
    amender: RecordAmender
    # The runner's: recording a call.
    _account: Callable[[CallSession, str], None]

    def _init_stream_status(self) -> None:
        # Calls awaiting their streams, and what the <Connect action> answers: shared.
        self.handoff = StreamHandoff(self.admission.shared)
        self.admission.shared.on_stream_failed = self._stream_failed_elsewhere

    def expect_stream(self, call_sid: str, parameters: dict[str, str]) -> None:
        """The webhook was answered with a stream: note the call until its stream starts.

        Args:
            call_sid: The call.
            parameters: Its stream parameters (bot, from, to...), without the token.
        """
        self.handoff.expect_stream(call_sid, parameters)

    def stream_came(self, call_sid: str) -> None:
        """The call's stream reached the runner (admitted or not), or another instance.

        Args:
            call_sid: The call.
        """
        self.handoff.stream_came(call_sid)

    def awaits_stream(self, call_sid: str) -> bool:
        """Whether this instance answered the call's webhook and its stream never came.

        Args:
            call_sid: The call.
        """
        return self.handoff.awaits_stream(call_sid)

    def take_early_events(self, call: CallSession) -> None:
        """Put the events that came before the call ran first among its stream events.

        Args:
            call: The call, about to run or to be recorded.
        """
        call.stream_events[:0] = self.amender.take_stream_events(call.call_sid)

    async def stream_status(self, request: Request) -> Response:
        """Take a ``<Stream statusCallback>``: count it, log it, keep it on the call's record."""
        form = await verified_form(request, self.settings)
        call_sid, event = form.get("CallSid", ""), stream_event(form)
        self.metrics.count_stream_event(event["event"])
        text = f"Call {call_sid or '?'}: {event['event'] or 'stream event'}"
        if event["event"] == "stream-error":
            logger.warning(f"{text}: {event.get('error') or 'no StreamError'}")
        else:
            logger.info(text)
        call = self.admission.active.get(call_sid)
        if call is not None:
            call.stream_events.append(event)
            return Response(status_code=204)
        if event["event"] == "stream-error" and call_sid:
            claim = await self.handoff.claim(call_sid)  # one instance fails the call
            if claim.parameters is not None:
                account_sid = form.get("AccountSid", "")
                twiml = await self.stream_never_started(call_sid, account_sid, event, claim)
                await self.handoff.share_action(call_sid, twiml)  # the action URL comes next
                return Response(status_code=204)
        if call_sid:  # on its record, here or wherever it is (else when it is made)
            await self.amender.amend(call_sid, StreamEventAmendment(event=event))
        return Response(status_code=204)

    async def stream_never_started(
        self, call_sid: str, account_sid: str, event: dict[str, Any] | None, claim: StreamClaim
    ) -> str:
        """Twilio could not open the call's stream: free it now and hand the caller over.

        The pre-warmed Realtime sessions are closed, the line is freed (by the
        instance that answered the webhook, told at once if it is another one), the
        call is recorded as ``failed: stream: <code>``, and the ``<Connect action>``
        answers the fallback line.

        Args:
            call_sid: The call.
            account_sid: Its account.
            event: The ``stream-error``; None when the action URL came first.
            claim: This instance's claim on the call, with its stream parameters.

        Returns:
            The TwiML the action URL answers.
        """
        parameters = claim.parameters or {}
        if claim.remote:  # the webhook's instance closes its pre-warmed session now
            await self.admission.shared.stream_failed(call_sid)
        self.admission.release(call_sid)
        prewarmed = self.prewarmed.drop(call_sid)
        if prewarmed is not None:
            call, bot = prewarmed.call, prewarmed.bot
        else:
            call = CallSession.before_stream(
                call_sid, account_sid=account_sid, parameters=parameters, rest=self.rest
            )
            bot = parameters.get("bot") or self.settings.bot
        error = event.get("error") if event is not None else None
        detail = error or "the <Connect action> came before the stream"
        await call.fail(Failure(Stage.STREAM, stream_error_code(error), detail))
        if event is not None:
            call.stream_events.append(event)
        twiml = call.ended.next_twiml if call.ended is not None else None
        twiml = twiml or say_twiml(FALLBACK_LINE)
        self._account(call, bot)
        return twiml

    async def stream_ended(self, request: Request) -> Response:
        """Answer the ``<Connect action>``: what the call's end asked for, else hang up.

        A stream that never started ends in the fallback line, not in silence.
        """
        form = await verified_form(request, self.settings)
        call_sid = form.get("CallSid", "")
        twiml = await self.handoff.take_action(call_sid)
        if twiml is None:
            claim = await self.handoff.claim(call_sid)
            if claim.parameters is not None:
                account_sid = form.get("AccountSid", "")
                twiml = await self.stream_never_started(call_sid, account_sid, None, claim)
            elif form.get("CallStatus") != "completed":  # someone still hears what follows
                twiml = await self.handoff.wait_action(call_sid, claim.elsewhere)
        twiml = twiml or hangup_twiml()
        logger.info(f"Stream of call {call_sid or '?'} ended; answering {twiml}")
        return Response(content=twiml, media_type="application/xml")

    def _answer_action(self, call_sid: str, twiml: str) -> None:
        """Remember what the action URL answers for ``call_sid``, once (on every instance)."""
        self.handoff.put_action(call_sid, twiml)

    def _stream_failed_elsewhere(self, call_sid: str) -> None:
        """Another instance failed the call whose webhook this one answered: free it here."""
        self.handoff.forget(call_sid)
        dropped = self.prewarmed.drop(call_sid) is not None
        self.admission.release(call_sid)
        logger.info(
            f"Call {call_sid}: its stream never came and another instance answered for it; "
            f"line freed{', pre-warmed session closed' if dropped else ''}"
        )
