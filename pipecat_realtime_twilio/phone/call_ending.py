#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""How a call ends on our side: ending, transferring, falling back, shutting down.

:class:`CallEnding` is the part of :class:`~pipecat_realtime_twilio.phone.call.CallSession`
that ends a call: :meth:`~CallEnding.end` and :meth:`~CallEnding.transfer` once the
caller has heard everything, :meth:`~CallEnding.fail` at once (never dead air), and
:meth:`~CallEnding.shut_down` for the runner's sake. All of them go through one path
(:meth:`CallEnding._finish`): Twilio is told what comes next
(:func:`~pipecat_realtime_twilio.phone.control.hand_over`, through its REST API or the
runner's ``<Connect action>``), the way the call ended is kept in ``ended`` (the first
word counts), and the call's pipeline is asked to end.
"""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import WebSocket
from loguru import logger
from pipecat.pipeline.worker import PipelineWorker

from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.failures import FALLBACK_LINE, Failure
from pipecat_realtime_twilio.logs import masked_number
from pipecat_realtime_twilio.phone.control import Handover, end_stream, hand_over, within
from pipecat_realtime_twilio.phone.ending import CallEnd, EndKind
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.phone.twiml import dial_twiml, fallback_twiml
from pipecat_realtime_twilio.seams import CallAgent

if TYPE_CHECKING:
    from pipecat_realtime_twilio.phone.output import TwilioOutputTransport


class CallEnding:
    """Ending a call, every way (a mixin of ``CallSession``, which sets its state)."""

    _websocket: WebSocket | None
    _hung_up: asyncio.Event  # the caller hung up (or the stream closed)
    _end_requested: asyncio.Event  # the pipeline should end
    _over: asyncio.Event  # the pipeline has finished
    _twilio_ends_stream: bool  # the call was updated through REST: await `stop`
    rest: TwilioRest | None
    stream_action: Callable[[str], None] | None
    worker: PipelineWorker | None
    agent: CallAgent | None
    ended: CallEnd | None

    if TYPE_CHECKING:

        @property
        def call_sid(self) -> str:
            """The Twilio Call SID."""
            ...

        def output(self) -> TwilioOutputTransport:
            """The phone output."""
            ...

        async def close(self, code: int = 1000) -> None:
            """Close the stream of a call whose pipeline never ran."""
            ...

    async def end(self, reason: str = "bot ended the call", *, timeout: float = 30.0) -> None:
        """End the call once the caller has heard everything already sent or queued.

        With REST credentials the call is updated with ``<Hangup/>`` TwiML and
        Twilio ends the stream. Without them (or if the update fails) the stream
        is closed: with the runner's TwiML Twilio requests the ``<Connect action>``
        URL, which answers ``<Hangup/>``; with other TwiML Twilio runs the next
        verb (none: the call ends).

        Args:
            reason: Why the call ends (logged and kept in :attr:`ended`).
            timeout: Most seconds to wait for the audio to play out.
        """
        await self._finish(CallEnd(EndKind.ENDED, reason), timeout=timeout)

    async def transfer(self, number: str, *, timeout: float = 30.0) -> None:
        """Transfer the call to ``number`` (cold) once the caller has heard everything.

        Through Twilio's REST API when credentials are configured (the call is
        updated with ``<Dial>``), otherwise, or if that fails, through the runner's
        ``<Connect action>`` URL when it follows the stream (answering ``<Dial>``).
        A SIP URI is dialled as ``<Dial><Sip>``.

        Args:
            number: The phone number (E.164) or SIP URI (``sip:``/``sips:``) to dial.
            timeout: Most seconds to wait for the audio to play out.

        Raises:
            CallControlError: If ``number`` is neither a number nor a SIP URI, if
                neither the action URL nor the REST API is available, or the REST
                request fails with no action URL to fall back on.
        """
        if self.stream_action is None and self.rest is None:
            raise CallControlError(
                "a transfer needs the runner's <Connect action> URL or Twilio REST "
                "credentials (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)"
            )
        end = CallEnd(EndKind.TRANSFERRED, number, next_twiml=dial_twiml(number))
        await self._finish(end, timeout=timeout)
        logger.info(f"Call {self.call_sid}: transferring to {masked_number(number)}")

    async def fail(
        self, failure: Failure, *, say: str = FALLBACK_LINE, transfer_to: str | None = None
    ) -> None:
        """The bot cannot go on: never leave the caller in silence.

        At once, the call moves on to TwiML that transfers it to ``transfer_to``
        or says ``say`` in Twilio's own voice and hangs up: through Twilio's REST
        API, or the runner's ``<Connect action>``; with neither, the stream is
        closed (and Twilio runs the next verb). Works whether or not the call's
        pipeline runs (a bot that failed to build has none). Before the call's
        stream has started, the end is only noted: whoever answers Twilio's
        webhook answers with ``call.ended.next_twiml``.

        Args:
            failure: What failed, for logs, the call record and metrics.
            say: The line to say.
            transfer_to: A number to transfer the call to instead.
        """
        if self._hung_up.is_set() or (self.ended is not None and self._end_requested.is_set()):
            return  # the caller is gone, or the call is ending already (the first word counts)
        logger.error(f"Call {self.call_sid}: {failure}; handing the caller to the fallback")
        twiml = fallback_twiml(say, transfer_to)
        end = CallEnd(EndKind.FAILED, next_twiml=twiml, failure=failure, transfer_to=transfer_to)
        if self._websocket is None:
            self._request_end(end)
            return
        await self._finish(end, timeout=None)
        if self.worker is None or self._over.is_set():  # no pipeline reads or ends the stream
            await self._end_stream(self._websocket)

    async def shut_down(self, closing_line: str, *, timeout: float = 30.0) -> None:
        """End the call now for the runner's sake: stop the bot, say ``closing_line``, hang up.

        Args:
            closing_line: What the caller hears last.
            timeout: Most seconds for all of it; then the stream is closed regardless.
        """
        end = CallEnd(EndKind.SHUT_DOWN)
        if self._hung_up.is_set() or self._over.is_set():
            return  # nobody is left to hear it

        async def close() -> None:
            if self.agent is not None:
                await self.agent.interrupt()
                await self.agent.say(closing_line)
                await self.agent.wait_heard(timeout)
            await self._finish(end, timeout=timeout)

        # The caller may hang up meanwhile: then there is nothing to wait for.
        if not await within(close(), timeout, self._hung_up, self._over) and not (
            self._hung_up.is_set() or self._over.is_set()
        ):
            logger.warning(f"Call {self.call_sid}: closing line not done in {timeout:g} s")
            self._request_end(end)

    async def _finish(self, end: CallEnd, *, timeout: float | None) -> None:
        """End the call on our side: the one path of ending, transferring and failing.

        Once the caller has heard everything (up to ``timeout`` seconds; None: at
        once), Twilio is told what comes next (``control.hand_over``): through the
        REST API, and Twilio ends the stream; or through the runner's ``<Connect
        action>`` (or nothing), and the stream is closed.

        Raises:
            CallControlError: If a transfer can go neither way.
        """
        if timeout is not None and not await self.output().wait_idle(timeout):
            logger.warning(f"Call {self.call_sid}: audio still playing after {timeout:.0f} s")
        first = self.ended is None
        self._note_end(end)  # before the REST update: Twilio's `stop` follows it
        try:
            way = await hand_over(
                end, call_sid=self.call_sid, rest=self.rest, stream_action=self.stream_action
            )
        except CallControlError:
            if first and not self._hung_up.is_set():
                self.ended = None  # the call goes on
            raise
        self._twilio_ends_stream = way is Handover.REST
        self._request_end(end)

    async def _end_stream(self, unread: WebSocket | None = None) -> None:
        """Leave the stream to Twilio after a REST update (read ``unread`` for its stop)."""
        stopped = None if unread is not None else self._hung_up
        await end_stream(self._twilio_ends_stream, unread, stopped, self.close, self.call_sid)

    def _request_end(self, end: CallEnd) -> None:
        self._note_end(end)
        self._end_requested.set()

    def _note_end(self, end: CallEnd) -> None:
        """Keep how the call ended: the first word on it counts."""
        if self.ended is None:
            self.ended = end
