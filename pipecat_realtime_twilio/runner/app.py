#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The call runner: Twilio's webhooks and media streams, health, metrics, call records.

:class:`CallRunner` holds the routes and puts its parts together: admission
(:mod:`~pipecat_realtime_twilio.runner.admission`: lines, stream tokens,
capacity), pre-warm (:mod:`~pipecat_realtime_twilio.runner.prewarm`), record
keeping (:mod:`~pipecat_realtime_twilio.runner.bookkeeping`: store and webhook),
metrics (:mod:`~pipecat_realtime_twilio.runner.metrics`), the playground and the
bots (:mod:`~pipecat_realtime_twilio.runner.bots`).
"""

import asyncio
import contextlib
import gc
from collections import deque
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Response, WebSocket
from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor
from prometheus_client import start_http_server

from pipecat_realtime_twilio.failures import Failure, Stage
from pipecat_realtime_twilio.logs import Throttled, show_numbers
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.phone.signatures import websocket_signature_valid
from pipecat_realtime_twilio.phone.stream import StreamRejected, refuse_stream
from pipecat_realtime_twilio.phone.twiml import say_twiml
from pipecat_realtime_twilio.phone.warm_transfer import warm_transfer_record
from pipecat_realtime_twilio.runner.admission import Admission, StreamTokens
from pipecat_realtime_twilio.runner.amendments import RecordAmender
from pipecat_realtime_twilio.runner.analysis import PostCallAnalysis
from pipecat_realtime_twilio.runner.bookkeeping import WEBHOOK_RETRY_SECS, RecordKeeper
from pipecat_realtime_twilio.runner.bots import Bot, BotError, load_bots, watch_bots
from pipecat_realtime_twilio.runner.campaign_routes import CampaignRoutes
from pipecat_realtime_twilio.runner.campaign_store import CampaignStore
from pipecat_realtime_twilio.runner.console import Console
from pipecat_realtime_twilio.runner.dialer import CampaignDialer
from pipecat_realtime_twilio.runner.greetings import RunnerGreetings
from pipecat_realtime_twilio.runner.incoming import (
    BUSY_MESSAGE,
    STREAM_ACTION_PARAMETER,
    IncomingCalls,
)
from pipecat_realtime_twilio.runner.live_transcript import LiveTranscripts
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.model_check import log_model_warnings
from pipecat_realtime_twilio.runner.operator_api import OperatorRoutes
from pipecat_realtime_twilio.runner.preflight import check_runner
from pipecat_realtime_twilio.runner.prewarm import PrewarmedCalls
from pipecat_realtime_twilio.runner.recordings import RecordingKeeper, recording_store
from pipecat_realtime_twilio.runner.records import CallRecord, summary_line
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.runner.stream_status import StreamStatus
from pipecat_realtime_twilio.runner.twilio_recording import STATUS_PATH, TwilioRecording
from pipecat_realtime_twilio.runner.webhook import WebhookSender
from pipecat_realtime_twilio.settings import (
    Settings,
    load_settings,
    settings_in_effect,
)

SHUTDOWN_LINE = "I'm sorry, I have to end the call now. Please call again. Goodbye!"
"""What active calls hear when a draining runner ends them."""

_SHUTDOWN_GRACE_SECS = 10.0
"""Most seconds at the end of a drain kept for closing lines and records (a third at most)."""


class CallRunner(IncomingCalls, StreamStatus, OperatorRoutes):
    """Answers Twilio calls with bots.

    Routes (on :attr:`router`, mountable under a prefix):

    - ``POST /incoming``: the voice webhook (signed). Answers TwiML that opens a
      media stream carrying a one-use token bound to this call and its parameters,
      or, over ``MAX_CALLS`` or ``MAX_CALLS_TOTAL`` or while draining, a short busy
      message and a hang-up (draining with another instance ready: 503, for the balancer);
      a call that had its call already (a replay) gets ``<Hangup/>``
      (:mod:`~pipecat_realtime_twilio.runner.incoming`).
    - ``WS /media-stream``: one fresh pipeline per call. The upgrade must be
      signed and the ``start`` must bring the call's token, or the stream is
      closed before any Realtime session opens.
    - ``POST /stream-ended``: the ``<Connect action>`` (signed): ``<Dial>`` after a
      transfer, the fallback line when the stream never started, otherwise ``<Hangup/>``.
    - ``POST /stream-status``: the ``<Stream statusCallback>`` (signed): stream-started,
      stream-stopped and stream-error events, counted, logged and kept on the call's
      record; a stream-error before the stream started fails the call at once.
    - ``POST /calls``: place an outbound call (``Authorization: Bearer RUNNER_API_KEY``).
    - ``GET /healthz``, ``GET /readyz`` (503 while draining; the instance and its shared
      state), ``GET /metrics`` (Prometheus;
      ``Authorization: Bearer METRICS_TOKEN`` when set; on ``METRICS_HOST:METRICS_PORT``
      instead when that is set).

    Built with ``TWILIO_VALIDATE_SIGNATURES`` on and no ``TWILIO_AUTH_TOKEN``, it
    raises :class:`~pipecat_realtime_twilio.errors.SettingsError`.

    Every finished call is kept as a :class:`~pipecat_realtime_twilio.runner.records.CallRecord`
    in the store (``DATABASE_URL``) and sent to ``CALL_WEBHOOK_URL``, retried
    until it gets there; the last ones are also in :attr:`finished`.
    """

    def __init__(
        self,
        settings: Settings,
        bots: dict[str, Bot],
        *,
        store: CallStore | None = None,
        webhook_retry_secs: float = WEBHOOK_RETRY_SECS,
        reload_bots: bool = False,
    ):
        """Initialize the runner.

        Args:
            settings: The runner's settings.
            bots: The bots by name; ``settings.bot`` must be among them.
            store: Where call records go; ``DATABASE_URL`` by default.
            webhook_retry_secs: How often undelivered records are sent again.
            reload_bots: Reload the bots when their files in ``BOTS_DIR`` change
                (calls in progress keep the bot they started with).
        """
        check_runner(settings, bots)  # whatever the entry point: serve, create_app, a router
        show_numbers(settings.log_phone_numbers)
        self._refused = Throttled()  # refusals a stranger can repeat: a few lines, not a flood
        self.settings = settings
        self.bots = bots
        self.rest = TwilioRest.from_settings(settings)
        self.metrics = RunnerMetrics()
        self.admission = Admission(settings, self.metrics)
        self.admission.shared.on_stream_elsewhere = self._stream_elsewhere
        self.recordings = recording_store(settings)  # RECORDINGS_DIR or RECORDINGS_S3_BUCKET
        self.records = RecordKeeper(
            settings, store=store, webhook_retry_secs=webhook_retry_secs, metrics=self.metrics
        )
        self.prewarmed = PrewarmedCalls(settings.prewarm_timeout_secs, self.metrics)
        self.greetings = RunnerGreetings(settings)  # GREETING_CACHE_DIR, GREETING_WARMUP
        self.recorders = RecordingKeeper(settings, self.recordings, self.records)
        self.analyses = PostCallAnalysis(settings, self.records, self.metrics)
        self.amender = RecordAmender(self.records, self.admission.shared)  # late news of calls
        self.twilio_recording = TwilioRecording(settings, self.rest, self.amender)
        self.campaigns = CampaignDialer(  # outbound campaigns: runner.dialer
            settings,
            CampaignStore(self.store.engine),
            self.rest,
            self.metrics,
            lambda: self.bots,
            lambda: self.admission.busy_reason(),
            instance=self.admission.shared.instance_id,
            lines=self.admission.capacity_left,  # answered calls find a line
        )
        self._init_stream_status()
        self._reload_bots = reload_bots
        self._reload_task: asyncio.Task | None = None
        self.router = APIRouter()
        self.router.add_api_route("/incoming", self.incoming, methods=["POST"])
        self.router.add_api_websocket_route("/media-stream", self.media_stream)
        self.router.add_api_route("/stream-ended", self.stream_ended, methods=["POST"])
        self.router.add_api_route("/stream-status", self.stream_status, methods=["POST"])
        recording_status = self.twilio_recording.status_callback
        self.router.add_api_route(STATUS_PATH, recording_status, methods=["POST"])
        self.router.add_api_route("/calls", self.create_call, methods=["POST"])
        self.router.add_api_route("/healthz", self.healthz, methods=["GET"])
        self.router.add_api_route("/readyz", self.readyz, methods=["GET"])
        if settings.metrics_port is None:  # else on its own listener (start())
            self.router.add_api_route("/metrics", self.metrics_page, methods=["GET"])
        self._metrics_server: Any = None
        if settings.playground_token is not None:
            from pipecat_realtime_twilio.runner.playground import Playground

            playground = Playground(self, settings.playground_token.get_secret_value())
            self.router.include_router(playground.router)
        self.router.include_router(Console(self).router)  # /api/calls..., /console
        self.router.include_router(LiveTranscripts(self).router)  # what is said, as it is
        self.router.include_router(CampaignRoutes(self.campaigns, lambda: self.bots).router)

    #
    # the parts, as the runner's users know them
    #

    @property
    def tokens(self) -> StreamTokens:
        """The per-call stream tokens."""
        return self.admission.tokens

    @property
    def finished(self) -> deque[CallRecord]:
        """Records of the newest finished calls."""
        return self.records.finished

    @property
    def store(self) -> CallStore:
        """Where call records are kept."""
        return self.records.store

    @property
    def webhook(self) -> WebhookSender | None:
        """What sends call records to ``CALL_WEBHOOK_URL`` (None without one)."""
        return self.records.webhook

    @webhook.setter
    def webhook(self, sender: WebhookSender | None) -> None:
        self.records.webhook = sender

    #
    # lifecycle
    #

    async def start(self) -> None:
        """Start background work: webhook retries, and bot reloads if asked for."""
        self.records.start()
        self.campaigns.start()  # CAMPAIGN_DIALER: claims numbers while lines are free
        await self.admission.shared.start(self.admission.describe)  # REDIS_URL: the registry
        await self.recorders.start()  # uploads left pending, RECORDING_RETENTION_DAYS
        self.greetings.start(lambda: self.bots)  # GREETING_WARMUP: in the background
        if self.settings.metrics_port is not None and self._metrics_server is None:
            self._metrics_server, _ = start_http_server(
                self.settings.metrics_port,
                self.settings.metrics_host,
                registry=self.metrics.registry,
            )
        if self.rest is not None:
            self.rest.warm()  # a call's end need not wait for the REST client's imports
        if self._reload_bots and self._reload_task is None:
            self._reload_task = asyncio.create_task(
                watch_bots(self.settings.bots_dir, self.settings.bot, self._use_bots)
            )

    async def close(self) -> None:
        """Stop background work and release resources (REST session, database)."""
        if self._reload_task is not None:
            self._reload_task.cancel()
            self._reload_task = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        await self.prewarmed.close()
        await self.greetings.close()
        await self.recorders.close()  # recordings being written
        await self.twilio_recording.close()
        await self.amender.close()
        await self.campaigns.close()
        await self.admission.shared.close()  # after those that ask Redis (amender, dialer)
        await self.analyses.close(settle_secs=0.5 if self.draining else 2.0)
        # After a drain, which settled the records within its timeout, do not wait again.
        await self.records.close(settle_secs=0.5 if self.draining else 5.0)
        if self.rest is not None:
            await self.rest.close()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking calls, let active ones finish, then end the rest with a closing line.

        All of it ends within ``timeout``, whatever callers and clients do: active
        calls go on until its last part (a third, at most ``_SHUTDOWN_GRACE_SECS``),
        which is kept for their closing line and then for storing and sending their
        records. A record not stored by the end waits in the outbox for the next start.

        Args:
            timeout: Most seconds the drain takes; ``DRAIN_TIMEOUT_SECS`` by default.
        """
        timeout = self.settings.drain_timeout_secs if timeout is None else timeout
        self.admission.draining = True
        await self.admission.shared.heartbeat()  # the registry shows it at once
        active = self.admission.active
        logger.info(f"Draining: no new calls; {len(active)} active, {timeout:g} s to finish")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reserve = min(_SHUTDOWN_GRACE_SECS, timeout / 3)  # closing lines, then records
        settling = min(1.0, reserve / 5)  # the records' part of it, at least
        while active and loop.time() < deadline - reserve:
            await asyncio.sleep(0.1)
        if active:
            closing = max(deadline - settling - loop.time(), 0.0)
            logger.info(f"Drain timeout: ending {len(active)} active calls in {closing:.1f} s")
            ending = asyncio.gather(
                *(call.shut_down(SHUTDOWN_LINE, timeout=closing) for call in list(active.values())),
                return_exceptions=True,
            )
            await asyncio.wait([ending], timeout=closing)
            while active and loop.time() < deadline - settling:
                await asyncio.sleep(0.05)
        await self.analyses.settle(timeout=deadline - settling - loop.time())  # or abandoned
        await self.records.settle(timeout=max(deadline - loop.time(), 0.0))
        if active:
            logger.warning(f"Drained with {len(active)} calls still open: the server closes them")
        logger.info("Drained")

    def _use_bots(self, bots: dict[str, Bot]) -> None:
        log_model_warnings(self.settings, bots)
        self.bots = bots  # calls in progress keep the pipelines they built

    #
    # Twilio routes
    #

    async def _build(self, bot: str, call: CallSession) -> list[FrameProcessor] | Failure:
        """Build ``bot``'s pipeline for ``call``, or say what failed (logged)."""
        with settings_in_effect(self.settings):
            try:
                return self.greetings.attach(bot, await self.bots[bot].build(call))
            except BotError as e:
                logger.error(str(e))
                cause = type(e.__cause__).__name__ if e.__cause__ is not None else "BotError"
                return Failure(Stage.BUILD, cause, str(e))

    async def media_stream(self, websocket: WebSocket) -> None:
        """Run one call on a Twilio media stream."""
        if not websocket_signature_valid(websocket, self.settings):
            self._refused.warning(
                "upgrade", "Refused a media stream upgrade: missing or wrong X-Twilio-Signature"
            )
            self.metrics.rejected.labels("signature").inc()
            await refuse_stream(websocket)  # before accepting: the upgrade gets 403
            return
        # At its own STREAM_URL a stream is a call this instance answered: served while draining.
        shared_address = self.settings.stream_url is None
        if self.draining and shared_address and await self.admission.shared.another_ready():
            with contextlib.suppress(RuntimeError):  # a balancer tries another instance
                await websocket.send_denial_response(Response(status_code=503))
            return
        try:
            call = await CallSession.accept(websocket, rest=self.rest)
        except StreamRejected as e:
            self._refused.warning("start", f"Refused a media stream: {e}")
            await refuse_stream(websocket)
            return
        await self.admit(call)

    async def admit(self, call: CallSession) -> None:
        """Check a started stream (token, account, capacity), then run its call.

        Args:
            call: The call, its ``start`` read.
        """
        self.stream_came(call.call_sid)
        refusal = await self.admission.check(call)
        if refusal is not None:
            self._refused.warning(
                refusal.kind, f"Refused the media stream of call {call.call_sid}: {refusal.reason}"
            )
            self.metrics.rejected.labels(refusal.kind).inc()
            if refusal.kind == "busy":  # a real call, full here: the busy line, not silence
                await self.handoff.share_action(call.call_sid, say_twiml(BUSY_MESSAGE))
                if self.prewarmed.drop(call.call_sid) is None:  # pre-warmed elsewhere?
                    await self.admission.shared.stream_started(call.call_sid)
            await call.close(code=refusal.close_code)
            return
        with logger.contextualize(call_sid=call.call_sid):
            await self._run_call(call)

    #
    # the playground's view (see runner.playground.Switchboard)
    #

    @property
    def bot_names(self) -> list[str]:
        """The bots a call can go to."""
        return sorted(self.bots)

    async def open_line(self, call_sid: str, parameters: dict[str, str]) -> str | None:
        """Hold a line for a call placed from here; its stream token, or None if busy.

        Args:
            call_sid: The new call's SID.
            parameters: The stream's parameters, which the token is bound to.
        """
        if await self.admission.busy_reason() is not None:
            return None
        return await self.admission.reserve(call_sid, parameters)

    async def instances(self) -> list[dict[str, Any]]:
        """The instances alive in the registry (this one alone without ``REDIS_URL``)."""
        return [instance.as_dict() for instance in await self.admission.shared.instances()]

    def transcript_of(self, call_sid: str) -> tuple[bool, list[dict[str, Any]]] | None:
        """Whether ``call_sid`` is active, and its transcript so far (None: no such call).

        Args:
            call_sid: The call.
        """
        call = self.active.get(call_sid)
        if call is not None and call.agent is not None:
            return True, [entry.as_dict() for entry in call.agent.transcript]
        record = next((r for r in self.finished if r.call_sid == call_sid), None)
        return (False, record.transcript) if record is not None else None

    #
    # calls
    #

    async def _run_call(self, call: CallSession) -> None:
        bot = call.parameters.get("bot") or self.settings.bot
        if bot not in self.bots:
            logger.warning(f"Stream asked for unknown bot '{bot}'; using '{self.settings.bot}'")
            bot = self.settings.bot
        prewarmed = self.prewarmed.take(call.call_sid, bot)
        if prewarmed is not None:
            prewarmed.call.attach(call.websocket, call.start)
            call = prewarmed.call
        else:  # the instance that pre-warmed it, if another, closes that session now
            await self.admission.shared.stream_started(call.call_sid)
        if call.parameters.get(STREAM_ACTION_PARAMETER) == "1":
            # Our TwiML follows the stream with <Connect action>, answered by stream_ended().
            call.stream_action = lambda twiml, sid=call.call_sid: self._answer_action(sid, twiml)
        built = prewarmed.processors if prewarmed is not None else await self._build(bot, call)
        if isinstance(built, Failure):
            await call.fail(built)  # the fallback line, in Twilio's voice
            self.admission.end(call)
            self._account(call, bot)
            return
        self.take_early_events(call)
        self.admission.begin(call)
        self.recorders.attach(call)  # RECORD_CALLS
        self.twilio_recording.start(call)  # TWILIO_RECORD
        logger.info(f"Call {call.call_sid} streaming to bot '{bot}'")
        try:
            await call.run(built)
        except Exception as e:  # a bug anywhere in the call's task: never dead air
            logger.exception(f"Call {call.call_sid}: the call's task failed")
            agent = call.agent
            failure = Failure(Stage.TASK, type(e).__name__, str(e)[:200])
            if agent is None:
                await call.fail(failure)
            else:
                await call.fail(failure, say=agent.fallback_line, transfer_to=agent.fallback_number)
        finally:
            self.admission.end(call)
            self._account(call, bot)

    def _stream_elsewhere(self, call_sid: str) -> None:
        """The call's stream started on another instance: its session, line and wait end here."""
        if self.prewarmed.elsewhere(call_sid):  # pre-warm off: the line and the wait all the same
            logger.info(f"Call {call_sid} streams on another instance: pre-warmed session closed")
        self.admission.handed_over(call_sid)
        self.handoff.forget(call_sid)  # that instance cleared it in Redis

    def _account(self, call: CallSession, bot: str) -> None:
        """Record a finished call, count it, log its summary, store and send its record."""
        self.take_early_events(call)
        self.admission.had_call(call.call_sid)
        record = self.records.record(call, bot)
        record.warm_transfer = warm_transfer_record(call.warm_transfers)  # the last attempt
        record.greeting = self.greetings.source(call.agent)  # cache, model or None
        self.recorders.finish(call, record)  # its recording, if it was recorded
        self.amender.fill(record)  # what came before it (a Twilio recording URL...)
        self.metrics.count_call(record, call.agent, call.ended)
        logger.info(summary_line(record))
        self.records.keep(record)
        self.analyses.start(record, self.bots[bot].analysis if bot in self.bots else None)


def create_app(
    settings: Settings | None = None, bots: dict[str, Bot] | None = None, *, reload_bots=False
) -> FastAPI:
    """Create the runner's FastAPI app.

    To add the routes to an app of your own instead, build a :class:`CallRunner`,
    ``app.include_router(runner.router)``, and call ``runner.start()`` and
    ``runner.close()`` from your app's lifespan.

    Startup objects (modules, bots) are moved out of the garbage collector's
    reach (``gc.freeze()``): otherwise every full collection scans them all,
    a pause of about 90 ms measured on a call's path.

    Args:
        settings: The settings; loaded from the environment when None.
        bots: The bots; loaded from ``BOTS_DIR`` when None.
        reload_bots: Reload the bots when their files change (``serve --reload``).

    Returns:
        The app, with the :class:`CallRunner` at ``app.state.runner``.
    """
    settings = settings or load_settings()
    runner = CallRunner(
        settings,
        bots if bots is not None else load_bots(settings.bots_dir),
        reload_bots=reload_bots,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runner.start()
        yield
        await runner.close()

    app = FastAPI(title="pipecat-realtime-twilio", lifespan=lifespan)
    app.include_router(runner.router)
    app.state.runner = runner
    gc.collect()
    gc.freeze()
    return app
