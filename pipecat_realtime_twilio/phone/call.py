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
from pipecat_realtime_twilio.failures import FALLBACK_LINE, Failure, Stage
from pipecat_realtime_twilio.logs import mask_numbers
from pipecat_realtime_twilio.phone.call_ending import CallEnding
from pipecat_realtime_twilio.phone.early_audio import play_at_stream_start
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
from pipecat_realtime_twilio.phone.warm_transfer import WarmTransfer
from pipecat_realtime_twilio.seams import (
    CALL_METADATA_KEY,
    CallAgent,
    CallerAudio,
    PhoneCall,
)


class CallSession(CallEnding, PhoneCall):
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

    async def warm_transfer(self, number: str, summary: str, **options: Any) -> str:
        """Hold the caller, dial ``number``, bridge them: see ``phone.warm_transfer``."""
        attempt = WarmTransfer(
            self, number, summary, gone=self._hung_up, finish=self._finish, **options
        )
        self.warm_transfers.append(attempt.record)
        return await attempt.run()

    async def run(self, processors: Sequence[FrameProcessor]) -> None:
        """Run the call's pipeline until the call ends.

        Args:
            processors: The bot's pipeline, normally starting with :meth:`input`
                and ending with :meth:`output`.
        """
        pipeline = Pipeline(list(processors))
        if self._websocket is not None:  # a cached greeting leaves now, not once started
            await play_at_stream_start(self, processors)
        self.worker = PipelineWorker(
            pipeline,
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
