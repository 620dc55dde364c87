#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""CallSession: one Twilio Media Stream, its transport and its pipeline."""

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import WebSocket
from loguru import logger
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketInputTransport,
    FastAPIWebsocketParams,
)
from pipecat.workers.runner import WorkerRunner

from pipecat_realtime_twilio.audio import SAMPLE_RATE
from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.failures import FALLBACK_LINE, Failure, Stage
from pipecat_realtime_twilio.logs import mask_numbers, masked_number
from pipecat_realtime_twilio.phone.control import Handover, end_stream, hand_over, within
from pipecat_realtime_twilio.phone.ending import CallEnd, EndKind
from pipecat_realtime_twilio.phone.output import CHUNK_MS, MAX_LEAD_MS, TwilioOutputTransport
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.phone.serializer import TwilioSerializer
from pipecat_realtime_twilio.phone.stream import (
    START_TIMEOUT_SECS,
    StreamStart,
    read_stream_start,
    refuse_stream,
)
from pipecat_realtime_twilio.phone.transport import TwilioTransport
from pipecat_realtime_twilio.phone.twiml import dial_twiml, fallback_twiml
from pipecat_realtime_twilio.phone.warm_transfer import WarmTransfer
from pipecat_realtime_twilio.seams import (
    CALL_METADATA_KEY,
    CallAgent,
    CallerAudio,
    PhoneCall,
)


class CallSession(PhoneCall):
    """One phone call on a Twilio media stream.

    Owns the websocket transport (Pipecat's ``FastAPIWebsocketTransport`` with
    :class:`TwilioSerializer`, both at 8 kHz) and runs the call's pipeline.
    A bot builds its pipeline from :meth:`input` and :meth:`output`::

        call = await CallSession.accept(websocket)
        await call.run([call.input(), RealtimeAgent(instructions="..."), call.output()])

    The call ends when the caller hangs up (Twilio's ``stop`` or the socket
    closing), which cancels the pipeline at once so the Realtime socket, which
    bills while open, is closed without delay. The bot ends it with :meth:`end`
    or :meth:`transfer` once the caller has heard everything (see
    :mod:`~pipecat_realtime_twilio.phone.control`: Twilio's REST API, else the
    ``<Connect action>`` told through :attr:`stream_action`). Every way a call ends
    is kept as a :class:`~pipecat_realtime_twilio.phone.ending.CallEnd` in :attr:`ended`.

    The pipeline's ``StartFrame.metadata`` carries the call under
    :data:`~pipecat_realtime_twilio.seams.CALL_METADATA_KEY`, which is how a
    ``RealtimeAgent`` finds the phone (through the
    :class:`~pipecat_realtime_twilio.seams.PhoneCall` protocol, which this class is).
    """

    def __init__(
        self,
        websocket: WebSocket | None,
        start: StreamStart,
        *,
        rest: TwilioRest | None = None,
        chunk_ms: int = CHUNK_MS,
        max_lead_ms: int = MAX_LEAD_MS,
    ):
        """Initialize the call on an accepted websocket whose ``start`` was read.

        Args:
            websocket: The media-stream websocket; None for a call built before
                its stream starts (see :meth:`before_stream`).
            start: The stream's start information.
            rest: Twilio's REST API: when given, ending and transferring update
                the live call through it, and Twilio ends the stream.
            chunk_ms: Milliseconds of audio per ``media`` message (each gets a mark).
            max_lead_ms: Most audio buffered at Twilio ahead of the phone.
        """
        self.start = start
        self._websocket = websocket
        self._hung_up = asyncio.Event()
        self._end_requested = asyncio.Event()
        self._over = asyncio.Event()  # the pipeline has finished
        self.rest = rest
        # Set by whoever wrote the TwiML, when a <Connect action> URL of theirs
        # follows the stream: it is told what TwiML the action should answer.
        self.stream_action: Callable[[str], None] | None = None
        # The stream's status events (Twilio's statusCallback), as the runner got them:
        # {"event", "at" (Unix time), "stream_sid", "error" (stream-error only)}.
        self.stream_events: list[dict[str, Any]] = []
        self._twilio_ends_stream = False  # the call was updated through REST: await `stop`
        self.serializer = TwilioSerializer(
            start.stream_sid, start.call_sid, on_stop=self._on_stop, on_mark=self._on_mark
        )
        self._transport = TwilioTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_in_sample_rate=SAMPLE_RATE,
                audio_out_enabled=True,
                audio_out_sample_rate=SAMPLE_RATE,
                audio_out_10ms_chunks=2,
                audio_out_end_silence_secs=0,
                serializer=self.serializer,
                allowed_origins=[],  # Twilio sends no Origin header
            ),
            stream_sid=start.stream_sid,
            chunk_ms=chunk_ms,
            max_lead_ms=max_lead_ms,
        )
        self._transport.add_event_handler("on_client_disconnected", self._on_disconnected)
        self.worker: PipelineWorker | None = None
        self.ended: CallEnd | None = None
        self.agent: CallAgent | None = None  # the agent talking on the call, once started
        self.warm_transfers: list[dict[str, Any]] = []  # each attempt, as records keep it

    @classmethod
    async def accept(
        cls, websocket: WebSocket, timeout: float = START_TIMEOUT_SECS, **kwargs
    ) -> "CallSession":
        """Accept a media-stream websocket and read its ``start`` message.

        Args:
            websocket: The websocket Twilio opened (not yet accepted).
            timeout: Seconds to wait for ``start``.
            **kwargs: Further :class:`CallSession` arguments (``rest``, ``chunk_ms``...).

        Returns:
            The call session.

        Raises:
            StreamRejected: If the stream does not start properly.
        """
        await websocket.accept()
        return await cls.from_websocket(websocket, timeout, **kwargs)

    @classmethod
    async def from_websocket(
        cls, websocket: WebSocket, timeout: float = START_TIMEOUT_SECS, **kwargs
    ) -> "CallSession":
        """Start a call on a websocket that is already accepted.

        Use this where something else accepted the media stream, such as
        Pipecat's development runner (``runner_args.websocket``).

        Args:
            websocket: The accepted websocket, before Twilio's ``start`` was read.
            timeout: Seconds to wait for ``start``.
            **kwargs: Further :class:`CallSession` arguments (``rest``, ``chunk_ms``...).

        Returns:
            The call session.

        Raises:
            StreamRejected: If the stream does not start properly.
        """
        return cls(websocket, await read_stream_start(websocket, timeout), **kwargs)

    @classmethod
    def before_stream(
        cls,
        call_sid: str,
        *,
        account_sid: str = "",
        parameters: dict[str, str] | None = None,
        **kwargs,
    ) -> "CallSession":
        """A call whose media stream has not started yet; :meth:`attach` gives it one.

        The runner builds such a call while answering Twilio's webhook, so the
        bot's pipeline exists, and its Realtime session can open, before the
        stream does (pre-warm).

        Args:
            call_sid: The Call SID from the webhook.
            account_sid: The account SID from the webhook.
            parameters: The ``<Parameter>`` values the stream will bring.
            **kwargs: Further :class:`CallSession` arguments (``rest``, ``chunk_ms``...).

        Returns:
            The call session, without its stream.
        """
        start = StreamStart(
            stream_sid="", call_sid=call_sid, account_sid=account_sid, parameters=parameters or {}
        )
        return cls(None, start, **kwargs)

    def attach(self, websocket: WebSocket | None, start: StreamStart) -> None:
        """Give a call built with :meth:`before_stream` its media stream.

        Args:
            websocket: The accepted media-stream websocket.
            start: The stream's start information.

        Raises:
            ValueError: If the call has a stream already, none is given, or ``start``
                is another call's.
        """
        if websocket is None:
            raise ValueError(f"call {self.call_sid}: attach() needs the stream's websocket")
        if self._websocket is not None:
            raise ValueError(f"call {self.call_sid} already has its media stream")
        if start.call_sid != self.call_sid:
            raise ValueError(f"the stream of call {start.call_sid} is not call {self.call_sid}'s")
        self._websocket = websocket
        self.start = start
        self.serializer.stream_sid = start.stream_sid
        self._transport.attach(websocket, start.stream_sid)

    @property
    def websocket(self) -> WebSocket | None:
        """The media-stream websocket (None before the stream started)."""
        return self._websocket

    @property
    def end_reason(self) -> str | None:
        """Why the call ended (None while it goes on), as records and metrics give it."""
        return self.ended.reason if self.ended is not None else None

    @property
    def call_sid(self) -> str:
        """The Twilio Call SID."""
        return self.start.call_sid

    @property
    def parameters(self) -> dict[str, str]:
        """The TwiML ``<Parameter>`` values of the stream."""
        return self.start.parameters

    @property
    def caller_audio_dropped_ms(self) -> float:
        """Caller audio dropped for arriving faster than real time, in milliseconds."""
        return self.serializer.caller_audio_dropped_ms

    def input(self) -> FastAPIWebsocketInputTransport:
        """The processor that brings the caller's audio and keypresses into the pipeline."""
        return self._transport.input()

    def output(self) -> TwilioOutputTransport:
        """The processor that plays the pipeline's audio to the caller.

        It knows what the caller has heard (see :class:`TwilioOutputTransport`).
        """
        return self._transport.output()

    def attach_agent(self, agent: CallAgent) -> None:
        """Note the agent talking on this call (a ``RealtimeAgent`` does it when it starts).

        Args:
            agent: The agent.
        """
        self.agent = agent

    def route_caller_audio(self, handler: CallerAudio | None) -> None:
        """Send the caller's audio to ``handler`` as Twilio sent it, not down the pipeline.

        A ``RealtimeAgent`` right after :meth:`input` takes the base64 μ-law
        payloads this way (the Realtime API's own format) with no decoding, frames
        or queues per packet.

        Args:
            handler: Takes each payload and its length in bytes; None: back to frames.
        """
        self.serializer.caller_audio = handler

    def pipeline_params(self) -> PipelineParams:
        """Pipeline parameters of a phone call: 8 kHz in and out, metrics on, the call."""
        return PipelineParams(
            audio_in_sample_rate=SAMPLE_RATE,
            audio_out_sample_rate=SAMPLE_RATE,
            enable_metrics=True,
            enable_usage_metrics=True,
            start_metadata={CALL_METADATA_KEY: self},
        )

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

    async def warm_transfer(self, number: str, summary: str, **options: Any) -> str:
        """Hold the caller, dial ``number``, bridge them: see ``phone.warm_transfer``."""
        attempt = WarmTransfer(
            self, number, summary, gone=self._hung_up, finish=self._finish, **options
        )
        self.warm_transfers.append(attempt.record)
        return await attempt.run()

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

    async def run(self, processors: Sequence[FrameProcessor]) -> None:
        """Run the call's pipeline until the call ends.

        Args:
            processors: The bot's pipeline, normally starting with :meth:`input`
                and ending with :meth:`output`.
        """
        self.worker = PipelineWorker(
            Pipeline(list(processors)),
            params=self.pipeline_params(),
            idle_timeout_secs=None,
            enable_rtvi=False,
            # Server VAD owns the turns; Pipecat's turn observer would only watch every frame.
            enable_turn_tracking=False,
        )
        self.worker.add_event_handler("on_pipeline_error", self._on_pipeline_error)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        run_task = asyncio.create_task(runner.run())
        hangup_task = asyncio.create_task(self._hung_up.wait())
        end_task = asyncio.create_task(self._end_requested.wait())
        try:
            await asyncio.wait(
                {run_task, hangup_task, end_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if not run_task.done():
                if self._end_requested.is_set() and not self._hung_up.is_set():
                    # Twilio ends the stream after a REST update (or we close it first):
                    # Twilio moves on to what follows <Connect>.
                    await self._end_stream()
                self._note_end(CallEnd(EndKind.HUNG_UP))
                await self.worker.cancel(reason=self.end_reason)
            await run_task
        finally:
            hangup_task.cancel()
            end_task.cancel()
            if not run_task.done():
                run_task.cancel()
            self._over.set()
        self._note_end(CallEnd(EndKind.PIPELINE_ENDED))
        logger.info(f"Call {self.call_sid} ended: {mask_numbers(self.end_reason or '')}")

    async def close(self, code: int = 1000) -> None:
        """End a call whose pipeline never ran by closing its stream.

        Args:
            code: The websocket close code.
        """
        if self._websocket is not None:
            await refuse_stream(self._websocket, code)

    async def _on_pipeline_error(self, worker: Any, frame: Any) -> None:
        """An exception escaped a processor of the bot's: fall back rather than risk silence.

        The agent's own errors (its socket) are the agent's to handle: it
        reconnects or falls back itself.
        """
        if frame.exception is None or (self.agent is not None and frame.processor is self.agent):
            return
        agent = self.agent
        await self.fail(
            Failure(Stage.TASK, type(frame.exception).__name__, str(frame.error)[:200]),
            say=agent.fallback_line if agent is not None else FALLBACK_LINE,
            transfer_to=agent.fallback_number if agent is not None else None,
        )

    async def _on_mark(self, name: str) -> None:
        await self.output().mark_echoed(name)

    async def _on_stop(self) -> None:
        self._note_end(CallEnd(EndKind.HUNG_UP))
        self._hung_up.set()

    async def _on_disconnected(self, transport: Any, websocket: Any) -> None:
        self._note_end(CallEnd(EndKind.STREAM_CLOSED))
        self._hung_up.set()
