#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The call runner: Twilio's voice webhook and media-stream websocket as FastAPI routes."""

import gc
import time
from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI, Request, Response, WebSocket
from loguru import logger

from pipecat_realtime_twilio.bot import Bot, BotError, load_bots, select_bot
from pipecat_realtime_twilio.call import CallSession, StreamRejected
from pipecat_realtime_twilio.realtime import RealtimeAgent, TranscriptEntry
from pipecat_realtime_twilio.settings import Settings, load_settings, use_settings
from pipecat_realtime_twilio.twilio.rest import TwilioRest
from pipecat_realtime_twilio.twilio.security import account_allowed, verified_form
from pipecat_realtime_twilio.twilio.twiml import hangup_twiml, stream_twiml

_FINISHED_CALLS_KEPT = 100
_NEXT_TWIML_KEPT = 1000
_STREAM_ACTION_PARAMETER = "stream_action"


@dataclass
class CallSummary:
    """What the runner remembers of a finished call.

    Parameters:
        call_sid: The Twilio Call SID.
        bot: The bot that answered.
        from_number: The caller's number, as the webhook reported it.
        to_number: The called number.
        started_at: Unix time the stream started.
        ended_at: Unix time the call ended.
        end_reason: Why the call ended.
        transcript: Both sides of the conversation, in order.
    """

    call_sid: str
    bot: str
    from_number: str
    to_number: str
    started_at: float
    ended_at: float
    end_reason: str
    transcript: list[TranscriptEntry] = field(default_factory=list)


class CallRunner:
    """Answers Twilio calls with bots.

    Holds the settings and bots, serves ``POST /incoming`` (TwiML that opens a
    media stream), ``WS /media-stream`` (one fresh pipeline per call) and
    ``POST /stream-ended`` (the ``<Connect action>``: what the call does once
    the bot closed the stream: ``<Dial>`` for a transfer, otherwise
    ``<Hangup/>``), and keeps the last finished calls in :attr:`finished`.
    """

    def __init__(self, settings: Settings, bots: dict[str, Bot]):
        """Initialize the runner.

        Args:
            settings: The runner's settings.
            bots: The bots by name; ``settings.bot`` must be among them.
        """
        select_bot(bots, settings.bot)  # fail at startup, naming BOT, if it is missing
        self.settings = settings
        self.bots = bots
        self.active: dict[str, CallSession] = {}
        self.finished: deque[CallSummary] = deque(maxlen=_FINISHED_CALLS_KEPT)
        self.rest = TwilioRest.from_settings(settings)
        self._next_twiml: OrderedDict[str, str] = OrderedDict()
        self.router = APIRouter()
        self.router.add_api_route("/incoming", self.incoming, methods=["POST"])
        self.router.add_api_websocket_route("/media-stream", self.media_stream)
        self.router.add_api_route("/stream-ended", self.stream_ended, methods=["POST"])

    async def close(self) -> None:
        """Release the runner's resources (the REST client's HTTP session)."""
        if self.rest is not None:
            await self.rest.close()

    async def incoming(self, request: Request) -> Response:
        """Answer Twilio's voice webhook with TwiML that streams the call to us."""
        form = await verified_form(request, self.settings)
        bot = self.settings.bot
        logger.info(
            f"Incoming call {form.get('CallSid', '?')} from {form.get('From', '?')} "
            f"to {form.get('To', '?')}: bot '{bot}'"
        )
        # The other routes sit beside this one, wherever the router is mounted.
        prefix = request.url.path.rsplit("/", 1)[0]
        twiml = stream_twiml(
            f"{self.settings.websocket_origin}{prefix}/media-stream",
            {
                "bot": bot,
                "from": form.get("From", ""),
                "to": form.get("To", ""),
                _STREAM_ACTION_PARAMETER: "1",
            },
            action_url=f"{self.settings.public_origin}{prefix}/stream-ended",
        )
        return Response(content=twiml, media_type="application/xml")

    def _answer_action(self, call_sid: str, twiml: str) -> None:
        """Remember what the action URL answers for ``call_sid``, once."""
        self._next_twiml[call_sid] = twiml
        while len(self._next_twiml) > _NEXT_TWIML_KEPT:
            self._next_twiml.popitem(last=False)

    async def stream_ended(self, request: Request) -> Response:
        """Answer the ``<Connect action>``: transfer the call if the bot asked, else hang up."""
        form = await verified_form(request, self.settings)
        call_sid = form.get("CallSid", "")
        twiml = self._next_twiml.pop(call_sid, None) or hangup_twiml()
        logger.info(f"Stream of call {call_sid or '?'} ended; answering {twiml}")
        return Response(content=twiml, media_type="application/xml")

    async def media_stream(self, websocket: WebSocket) -> None:
        """Run one call on a Twilio media stream."""
        try:
            call = await CallSession.accept(websocket, rest=self.rest)
        except StreamRejected as e:
            logger.warning(f"Refused a media stream: {e}")
            await websocket.close(code=1008)
            return
        if not account_allowed(call.start.account_sid, self.settings):
            logger.warning(f"Refused a media stream of account {call.start.account_sid!r}")
            await call.close(code=1008)
            return
        with logger.contextualize(call_sid=call.call_sid):
            await self._run_call(call)

    async def _run_call(self, call: CallSession) -> None:
        bot_name = call.parameters.get("bot") or self.settings.bot
        if bot_name not in self.bots:
            logger.warning(
                f"Stream asked for unknown bot '{bot_name}'; using '{self.settings.bot}'"
            )
            bot_name = self.settings.bot
        bot = self.bots[bot_name]
        if call.parameters.get(_STREAM_ACTION_PARAMETER) == "1":
            # Our TwiML follows the stream with <Connect action>, answered by stream_ended().
            call.stream_action = lambda twiml, sid=call.call_sid: self._answer_action(sid, twiml)
        token = use_settings(self.settings)
        try:
            processors = await bot.build(call)
        except BotError as e:
            logger.error(str(e))
            await call.close()
            return
        finally:
            token.var.reset(token)
        self.active[call.call_sid] = call
        logger.info(f"Call {call.call_sid} streaming to bot '{bot_name}'")
        try:
            await call.run(processors)
        finally:
            self.active.pop(call.call_sid, None)
            transcript = [
                e for p in processors if isinstance(p, RealtimeAgent) for e in p.transcript
            ]
            self.finished.append(
                CallSummary(
                    call_sid=call.call_sid,
                    bot=bot_name,
                    from_number=call.parameters.get("from", ""),
                    to_number=call.parameters.get("to", ""),
                    started_at=call.start.started_at,
                    ended_at=time.time(),
                    end_reason=call.end_reason or "unknown",
                    transcript=sorted(transcript, key=lambda e: e.at),
                )
            )


def create_app(settings: Settings | None = None, bots: dict[str, Bot] | None = None) -> FastAPI:
    """Create the runner's FastAPI app.

    To add the routes to an app of your own instead, build a :class:`CallRunner`
    and ``app.include_router(runner.router)``.

    Args:
        settings: The settings; loaded from the environment when None.
        bots: The bots; loaded from ``BOTS_DIR`` when None.

    Startup objects (modules, bots) are moved out of the garbage collector's
    reach (``gc.freeze()``): otherwise every full collection scans them all,
    a pause of about 90 ms measured on a call's path.

    Returns:
        The app, with the :class:`CallRunner` at ``app.state.runner``.
    """
    settings = settings or load_settings()
    runner = CallRunner(settings, bots if bots is not None else load_bots(settings.bots_dir))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await runner.close()

    app = FastAPI(title="pipecat-realtime-twilio", lifespan=lifespan)
    app.include_router(runner.router)
    app.state.runner = runner
    gc.collect()
    gc.freeze()
    return app
