#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The call runner: Twilio's webhooks and media streams, health, metrics, call records."""

import asyncio
import gc
import hmac
import time
from collections import OrderedDict, deque
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from loguru import logger

from pipecat_realtime_twilio.phone.call import CallSession, StreamRejected
from pipecat_realtime_twilio.phone.outbound import OutboundError, place_call
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.phone.signatures import (
    STREAM_TOKEN_TTL_SECS,
    StreamTokens,
    account_allowed,
    verified_form,
    websocket_signature_valid,
)
from pipecat_realtime_twilio.phone.twiml import hangup_twiml, say_twiml, stream_twiml
from pipecat_realtime_twilio.runner.bots import Bot, BotError, bot_files, load_bots, select_bot
from pipecat_realtime_twilio.runner.metrics import CONTENT_TYPE, RunnerMetrics
from pipecat_realtime_twilio.runner.prewarm import PrewarmedCall, PrewarmedCalls
from pipecat_realtime_twilio.runner.pricing import Usage, cost_usd
from pipecat_realtime_twilio.runner.records import (
    CallRecord,
    CallStore,
    WebhookSender,
    latency_summary,
)
from pipecat_realtime_twilio.settings import Settings, SettingsError, load_settings, use_settings

BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again later."
"""What a caller over ``MAX_CALLS`` (or calling while the runner drains) hears."""

SHUTDOWN_LINE = "I'm sorry, I have to end the call now. Please call again. Goodbye!"
"""What active calls hear when a draining runner ends them."""

_FINISHED_CALLS_KEPT = 100
_NEXT_TWIML_KEPT = 1000
_STREAM_ACTION_PARAMETER = "stream_action"
_WEBHOOK_RETRY_SECS = 30.0
_SHUTDOWN_GRACE_SECS = 30.0


class CallRunner:
    """Answers Twilio calls with bots.

    Routes (on :attr:`router`, mountable under a prefix):

    - ``POST /incoming``: the voice webhook (signed). Answers TwiML that opens a
      media stream carrying a one-use token for this call, or, over ``MAX_CALLS``
      or while draining, a short busy message and a hang-up.
    - ``WS /media-stream``: one fresh pipeline per call. The upgrade must be
      signed and the ``start`` must bring the call's token, or the stream is
      closed before any Realtime session opens.
    - ``POST /stream-ended``: the ``<Connect action>`` (signed): ``<Dial>`` after a
      transfer, otherwise ``<Hangup/>``.
    - ``POST /calls``: place an outbound call (``Authorization: Bearer RUNNER_API_KEY``).
    - ``GET /healthz``, ``GET /readyz`` (503 while draining), ``GET /metrics`` (Prometheus).

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
        webhook_retry_secs: float = _WEBHOOK_RETRY_SECS,
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
        select_bot(bots, settings.bot)  # fail at startup, naming BOT, if it is missing
        for number, name in settings.bot_routes.items():
            if name not in bots:
                known = ", ".join(sorted(bots))
                raise SettingsError(
                    f"BOT_ROUTES: {number} goes to bot '{name}', which does not exist "
                    f"(bots found: {known})"
                )
        self.settings = settings
        self.bots = bots
        self.active: dict[str, CallSession] = {}
        self.finished: deque[CallRecord] = deque(maxlen=_FINISHED_CALLS_KEPT)
        self.rest = TwilioRest.from_settings(settings)
        self.tokens = StreamTokens.from_settings(settings)
        self.metrics = RunnerMetrics()
        self.store = store or CallStore(settings.database_url)
        self.prewarmed = PrewarmedCalls(settings.prewarm_timeout_secs, self.metrics)
        self.webhook = (
            WebhookSender(
                str(settings.call_webhook_url),
                secret=(
                    settings.call_webhook_secret.get_secret_value()
                    if settings.call_webhook_secret
                    else None
                ),
            )
            if settings.call_webhook_url
            else None
        )
        self.draining = False
        self._webhook_retry_secs = webhook_retry_secs
        self._reserved: dict[str, float] = {}  # CallSid -> when its stream token expires
        self._next_twiml: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self._retry_task: asyncio.Task | None = None
        self._reload_bots = reload_bots
        self._reload_task: asyncio.Task | None = None
        self.router = APIRouter()
        self.router.add_api_route("/incoming", self.incoming, methods=["POST"])
        self.router.add_api_websocket_route("/media-stream", self.media_stream)
        self.router.add_api_route("/stream-ended", self.stream_ended, methods=["POST"])
        self.router.add_api_route("/calls", self.create_call, methods=["POST"])
        self.router.add_api_route("/healthz", self.healthz, methods=["GET"])
        self.router.add_api_route("/readyz", self.readyz, methods=["GET"])
        self.router.add_api_route("/metrics", self.metrics_page, methods=["GET"])
        if settings.playground_token is not None:
            from pipecat_realtime_twilio.runner.playground import Playground

            playground = Playground(self, settings.playground_token.get_secret_value())
            self.router.include_router(playground.router)

    #
    # lifecycle
    #

    async def start(self) -> None:
        """Start background work: sending records the webhook has not received yet."""
        if self.webhook is not None and self._retry_task is None:
            self._retry_task = asyncio.create_task(self._retry_webhooks())
        if self._reload_bots and self._reload_task is None:
            self._reload_task = asyncio.create_task(self._watch_bots())

    async def close(self) -> None:
        """Stop background work and release resources (REST session, database)."""
        for task in (self._retry_task, self._reload_task):
            if task is not None:
                task.cancel()
        self._retry_task = self._reload_task = None
        await self.prewarmed.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self.rest is not None:
            await self.rest.close()
        self.store.close()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking calls, let active ones finish, then end the rest with a closing line.

        Args:
            timeout: Most seconds active calls may go on; ``DRAIN_TIMEOUT_SECS`` by default.
        """
        timeout = self.settings.drain_timeout_secs if timeout is None else timeout
        self.draining = True
        logger.info(f"Draining: no new calls; {len(self.active)} active, {timeout:g} s to finish")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.active and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if self.active:
            logger.info(f"Drain timeout: ending {len(self.active)} active calls")
            await asyncio.gather(
                *(call.shut_down(SHUTDOWN_LINE) for call in list(self.active.values())),
                return_exceptions=True,
            )
            deadline = loop.time() + _SHUTDOWN_GRACE_SECS
            while self.active and loop.time() < deadline:
                await asyncio.sleep(0.1)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        logger.info("Drained")

    #
    # Twilio routes
    #

    def reserve(self, call_sid: str) -> str:
        """Hold a line for ``call_sid`` until its stream starts; return its stream token."""
        self._reserved[call_sid] = time.time() + STREAM_TOKEN_TTL_SECS
        return self.tokens.issue(call_sid)

    def capacity_left(self) -> int:
        """Lines free now: ``MAX_CALLS`` minus active and reserved calls."""
        return self._capacity_left()

    def _capacity_left(self) -> int:
        now = time.time()
        for call_sid, expiry in list(self._reserved.items()):
            if expiry < now:
                del self._reserved[call_sid]
        return self.settings.max_calls - len(self.active) - len(self._reserved)

    async def incoming(self, request: Request) -> Response:
        """Answer Twilio's voice webhook with TwiML that streams the call to us."""
        form = await verified_form(request, self.settings)
        call_sid = form.get("CallSid", "")
        if self.draining or self._capacity_left() <= 0:
            why = "draining" if self.draining else f"MAX_CALLS={self.settings.max_calls} reached"
            logger.warning(f"Incoming call {call_sid or '?'} turned away: {why}")
            self.metrics.rejected.labels("busy").inc()
            return Response(content=say_twiml(BUSY_MESSAGE), media_type="application/xml")
        # An outbound call names its bot; an incoming one is routed by the number called.
        asked = request.query_params.get("bot")
        routed = self.settings.bot_routes.get(form.get("To", ""))
        bot = asked if asked in self.bots else routed or self.settings.bot
        outbound = form.get("Direction", "inbound").startswith("outbound")
        logger.info(
            f"{'Outbound' if outbound else 'Incoming'} call {call_sid or '?'} from "
            f"{form.get('From', '?')} to {form.get('To', '?')}: bot '{bot}'"
        )
        stream_token = self.reserve(call_sid)
        parameters = {
            "bot": bot,
            "from": form.get("From", ""),
            "to": form.get("To", ""),
            "direction": "outbound" if outbound else "inbound",
            _STREAM_ACTION_PARAMETER: "1",
        }
        if self.settings.prewarm and call_sid:
            await self._prewarm(call_sid, form.get("AccountSid", ""), bot, parameters)
        # The other routes sit beside this one, wherever the router is mounted.
        prefix = request.url.path.rsplit("/", 1)[0]
        twiml = stream_twiml(
            f"{self.settings.websocket_origin}{prefix}/media-stream",
            {**parameters, "token": stream_token},
            action_url=f"{self.settings.public_origin}{prefix}/stream-ended",
        )
        return Response(content=twiml, media_type="application/xml")

    async def _prewarm(
        self, call_sid: str, account_sid: str, bot_name: str, parameters: dict[str, str]
    ) -> None:
        """Build the call's pipeline now and start its Realtime sessions opening."""
        call = CallSession.before_stream(
            call_sid, account_sid=account_sid, parameters=parameters, rest=self.rest
        )
        token = use_settings(self.settings)
        try:
            processors = await self.bots[bot_name].build(call)
        except BotError as e:
            logger.error(str(e))  # the stream gets the same error and is closed
            return
        finally:
            token.var.reset(token)
        self.prewarmed.add(call_sid, PrewarmedCall(call, processors, bot_name))

    async def media_stream(self, websocket: WebSocket) -> None:
        """Run one call on a Twilio media stream."""
        if not websocket_signature_valid(websocket, self.settings):
            logger.warning("Refused a media stream upgrade: missing or wrong X-Twilio-Signature")
            self.metrics.rejected.labels("signature").inc()
            await websocket.close(code=1008)  # before accepting: the upgrade gets 403
            return
        try:
            call = await CallSession.accept(websocket, rest=self.rest)
        except StreamRejected as e:
            logger.warning(f"Refused a media stream: {e}")
            await websocket.close(code=1008)
            return
        await self.admit(call)

    async def admit(self, call: CallSession) -> None:
        """Check a started stream (token, account, capacity), then run its call.

        Args:
            call: The call, its ``start`` read.
        """
        problem = self.tokens.redeem(call.parameters.get("token"), call.call_sid)
        if problem is not None:
            logger.warning(f"Refused the media stream of call {call.call_sid}: {problem}")
            self.metrics.rejected.labels("token").inc()
            await call.close(code=1008)
            return
        if not account_allowed(call.start.account_sid, self.settings):
            logger.warning(f"Refused a media stream of account {call.start.account_sid!r}")
            self.metrics.rejected.labels("account").inc()
            await call.close(code=1008)
            return
        self._reserved.pop(call.call_sid, None)
        if len(self.active) >= self.settings.max_calls:
            logger.warning(f"Refused the media stream of call {call.call_sid}: MAX_CALLS reached")
            self.metrics.rejected.labels("busy").inc()
            await call.close(code=1013)
            return
        with logger.contextualize(call_sid=call.call_sid):
            await self._run_call(call)

    async def stream_ended(self, request: Request) -> Response:
        """Answer the ``<Connect action>``: transfer the call if the bot asked, else hang up."""
        form = await verified_form(request, self.settings)
        call_sid = form.get("CallSid", "")
        twiml = self._next_twiml.pop(call_sid, None) or hangup_twiml()
        logger.info(f"Stream of call {call_sid or '?'} ended; answering {twiml}")
        return Response(content=twiml, media_type="application/xml")

    def _answer_action(self, call_sid: str, twiml: str) -> None:
        """Remember what the action URL answers for ``call_sid``, once."""
        self._next_twiml[call_sid] = twiml
        while len(self._next_twiml) > _NEXT_TWIML_KEPT:
            self._next_twiml.popitem(last=False)

    #
    # operator routes
    #

    async def create_call(self, request: Request) -> JSONResponse:
        """Place an outbound call: ``{"to": "+1555...", "bot": "NAME", "from": "+1555..."}``."""
        key = self.settings.runner_api_key
        if key is None:
            raise HTTPException(404, "outbound calls are off: set RUNNER_API_KEY")
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {key.get_secret_value()}".encode()):
            raise HTTPException(401, "wrong or missing API key")
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "the body must be JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("to"), str):
            raise HTTPException(400, 'give "to": the number to call')
        bot = body.get("bot") or self.settings.bot
        if bot not in self.bots:
            raise HTTPException(400, f"unknown bot {bot!r}")
        if self.draining:
            raise HTTPException(503, "the runner is draining")
        try:
            call_sid = await place_call(
                self.settings, body["to"], bot=bot, from_number=body.get("from"), rest=self.rest
            )
        except OutboundError as e:
            raise HTTPException(502 if e.upstream else 400, str(e)) from None
        return JSONResponse({"call_sid": call_sid, "bot": bot}, status_code=201)

    async def healthz(self) -> JSONResponse:
        """The process is up."""
        return JSONResponse({"status": "ok"})

    async def readyz(self) -> JSONResponse:
        """Whether this runner takes new calls (503 while draining)."""
        body = {
            "ready": not self.draining,
            "active_calls": len(self.active),
            "max_calls": self.settings.max_calls,
        }
        return JSONResponse(body, status_code=503 if self.draining else 200)

    async def metrics_page(self) -> Response:
        """Prometheus metrics."""
        return Response(content=self.metrics.render(), media_type=CONTENT_TYPE)

    #
    # calls
    #

    async def _run_call(self, call: CallSession) -> None:
        bot_name = call.parameters.get("bot") or self.settings.bot
        if bot_name not in self.bots:
            logger.warning(
                f"Stream asked for unknown bot '{bot_name}'; using '{self.settings.bot}'"
            )
            bot_name = self.settings.bot
        prewarmed = self.prewarmed.take(call.call_sid, bot_name)
        if prewarmed is not None:
            prewarmed.call.attach(call.websocket, call.start)
            call, processors = prewarmed.call, prewarmed.processors
        else:
            token = use_settings(self.settings)
            try:
                processors = await self.bots[bot_name].build(call)
            except BotError as e:
                logger.error(str(e))
                await call.close()
                return
            finally:
                token.var.reset(token)
        if call.parameters.get(_STREAM_ACTION_PARAMETER) == "1":
            # Our TwiML follows the stream with <Connect action>, answered by stream_ended().
            call.stream_action = lambda twiml, sid=call.call_sid: self._answer_action(sid, twiml)
        self.active[call.call_sid] = call
        self.metrics.active.set(len(self.active))
        logger.info(f"Call {call.call_sid} streaming to bot '{bot_name}'")
        try:
            await call.run(processors)
        finally:
            self.active.pop(call.call_sid, None)
            self.metrics.active.set(len(self.active))
            record = self._record(call, bot_name)
            self.finished.append(record)
            self._account(record, call.agent)
            task = asyncio.create_task(self._keep(record))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _record(self, call: CallSession, bot_name: str) -> CallRecord:
        agent = call.agent
        record = CallRecord(
            call_sid=call.call_sid,
            bot=bot_name,
            from_number=call.parameters.get("from") or None,
            to_number=call.parameters.get("to") or None,
            direction=call.parameters.get("direction", "inbound"),
            model=agent.model if agent else "",
            started_at=call.start.started_at,
            usage=agent.usage if agent else Usage(),
            latency=latency_summary(agent.response_latencies_ms if agent else []),
        )
        for entry in sorted(agent.transcript if agent else [], key=lambda e: e.at):
            record.add_turn(entry.role, entry.text, entry.at, entry.interrupted)
        record.cost_usd = cost_usd(record.model, record.usage) if agent else None
        record.finish(call.end_reason or "unknown")
        return record

    def _account(self, record: CallRecord, agent) -> None:
        """Metrics and the one summary line of a finished call."""
        m = self.metrics
        m.calls.labels(record.end_reason).inc()
        m.duration.observe(record.duration_s or 0.0)
        for ms in record.latency["response_ms"]:
            m.response_latency.observe(ms / 1000)
        if agent is not None:
            m.barge_ins.inc(agent.barge_ins)
            m.reconnects.inc(agent.reconnects)
        for kind, count in record.usage.as_dict().items():
            m.tokens.labels(kind.removesuffix("_tokens")).inc(count)
        if record.cost_usd is not None:
            m.cost.inc(record.cost_usd)
        p50 = record.latency["p50_ms"]
        p50_text = f"{p50:.0f}ms" if p50 is not None else "-"
        cost = f"${record.cost_usd:.4f}" if record.cost_usd is not None else "unknown cost"
        logger.info(
            f"Call {record.call_sid} summary: bot={record.bot} duration={record.duration_s:.1f}s "
            f"end={record.end_reason!r} turns={len(record.transcript)} cost={cost} "
            f"p50_response={p50_text}"
        )

    async def _keep(self, record: CallRecord) -> None:
        """Store the record, then send it to the webhook (a failure leaves it for a retry)."""
        try:
            await self.store.asave(record)
        except Exception as e:
            logger.error(f"Call {record.call_sid}: could not store the call record: {e}")
            return
        if self.webhook is not None and await self.webhook.deliver(record):
            record.webhook_delivered = True
            await self.store.amark_delivered(record.call_sid)

    async def _watch_bots(self, interval: float = 0.5) -> None:
        """Reload the bots when a bot file is added, changed or removed."""
        folder = self.settings.bots_dir

        def snapshot() -> dict:
            return {path: path.stat().st_mtime_ns for path in bot_files(folder)}

        seen = snapshot()
        while True:
            await asyncio.sleep(interval)
            try:
                now = snapshot()
            except (OSError, SettingsError) as e:
                logger.warning(f"Bot reload: cannot read {folder}: {e}")
                continue
            if now == seen:
                continue
            seen = now
            try:
                bots = load_bots(folder)
                select_bot(bots, self.settings.bot)
            except (BotError, SettingsError) as e:
                logger.error(f"Bot reload failed, keeping the bots as they were: {e}")
                continue
            self.bots = bots  # calls in progress keep the pipelines they built
            logger.info(f"Reloaded bots from {folder}: {', '.join(sorted(bots))}")

    async def _retry_webhooks(self) -> None:
        while True:
            await asyncio.sleep(self._webhook_retry_secs)
            try:
                await self.webhook.deliver_pending(self.store)
            except Exception as e:
                logger.error(f"Sending pending call records failed: {e}")


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
