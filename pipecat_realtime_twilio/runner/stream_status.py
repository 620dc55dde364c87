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
the record was kept amends it. A ``stream-error`` for a call whose stream never
started frees that call at once: its pre-warmed Realtime sessions are closed, its
line is released, it is recorded as ``failed: stream: <Twilio's error number>``,
and the ``<Connect action>`` answers the fallback line.

It also serves the ``<Connect action>`` itself (``POST /stream-ended``): the TwiML a
call's end asked for (``<Dial>``, a spoken line), ``<Hangup/>`` otherwise, and the
fallback line for a call whose stream never came.
"""

from collections import OrderedDict
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
from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.prewarm import PrewarmedCalls
from pipecat_realtime_twilio.runner.records import stream_event
from pipecat_realtime_twilio.settings import Settings

CALLS_KEPT = 1000
"""Most calls awaiting their streams (or holding early events) remembered at once."""


def keep_bounded(kept: OrderedDict, key: str, value: Any, bound: int = CALLS_KEPT) -> None:
    """Set ``kept[key]`` as the newest entry, forgetting the oldest beyond ``bound``.

    Args:
        kept: The mapping.
        key: The key.
        value: Its value.
        bound: Most entries.
    """
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > bound:
        kept.popitem(last=False)


class StreamStatus:
    """The runner's stream status route and what it needs, mixed into ``CallRunner``."""

    settings: Settings
    rest: TwilioRest | None
    metrics: RunnerMetrics
    admission: Admission
    records: RecordKeeper
    prewarmed: PrewarmedCalls
    # The runner's: recording a call.
    _account: Callable[[CallSession, str], None]

    def _init_stream_status(self) -> None:
        # Calls whose webhook was answered and whose stream has not started: parameters.
        self._awaiting_stream: OrderedDict[str, dict[str, str]] = OrderedDict()
        # Stream events of calls neither running nor recorded yet.
        self._early_events: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        # What the <Connect action> answers for a call whose end asked for something.
        self._next_twiml: OrderedDict[str, str] = OrderedDict()

    def expect_stream(self, call_sid: str, parameters: dict[str, str]) -> None:
        """The webhook was answered with a stream: note the call until its stream starts.

        Args:
            call_sid: The call.
            parameters: Its stream parameters (bot, from, to...), without the token.
        """
        keep_bounded(self._awaiting_stream, call_sid, parameters)

    def stream_came(self, call_sid: str) -> None:
        """The call's stream reached the runner (admitted or not).

        Args:
            call_sid: The call.
        """
        self._awaiting_stream.pop(call_sid, None)

    def awaits_stream(self, call_sid: str) -> bool:
        """Whether the call's webhook was answered and its stream never came.

        Args:
            call_sid: The call.
        """
        return call_sid in self._awaiting_stream

    def take_early_events(self, call: CallSession) -> None:
        """Put the events that came before the call ran first among its stream events.

        Args:
            call: The call, about to run or to be recorded.
        """
        call.stream_events[:0] = self._early_events.pop(call.call_sid, [])

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
        elif event["event"] == "stream-error" and self.awaits_stream(call_sid):
            twiml = await self.stream_never_started(call_sid, form.get("AccountSid", ""), event)
            self._answer_action(call_sid, twiml)  # Twilio asks the action URL next
        elif call_sid and not self.records.amend(call_sid, event):
            events = [*self._early_events.get(call_sid, []), event]
            keep_bounded(self._early_events, call_sid, events)
        return Response(status_code=204)

    async def stream_never_started(
        self, call_sid: str, account_sid: str, event: dict[str, Any] | None
    ) -> str:
        """Twilio could not open the call's stream: free it now and hand the caller over.

        The pre-warmed Realtime sessions are closed, the line is freed, the call is
        recorded as ``failed: stream: <code>``, and the ``<Connect action>`` answers
        the fallback line.

        Args:
            call_sid: The call.
            account_sid: Its account.
            event: The ``stream-error``; None when the action URL came first.

        Returns:
            The TwiML the action URL answers.
        """
        parameters = self._awaiting_stream.pop(call_sid, {})
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
        twiml = self._next_twiml.pop(call_sid, None)
        if twiml is None and self.awaits_stream(call_sid):
            twiml = await self.stream_never_started(call_sid, form.get("AccountSid", ""), None)
        twiml = twiml or hangup_twiml()
        logger.info(f"Stream of call {call_sid or '?'} ended; answering {twiml}")
        return Response(content=twiml, media_type="application/xml")

    def _answer_action(self, call_sid: str, twiml: str) -> None:
        """Remember what the action URL answers for ``call_sid``, once."""
        keep_bounded(self._next_twiml, call_sid, twiml)
