"""The stock baseline for benchmarks/: a plain Pipecat Twilio + OpenAI Realtime phone bot.

Written the ordinary way, as a Pipecat user would copy it from Pipecat's own Twilio
example (twilio-chatbot) and its OpenAI Realtime example: ``TwilioFrameSerializer``,
``FastAPIWebsocketTransport`` and ``OpenAIRealtimeLLMService`` with their default
settings (only a system instruction is set), ``LLMContext`` with an
``LLMContextAggregatorPair``, and a greeting on connect. Nothing from
``pipecat_realtime_twilio`` is used: this is what the project is measured against.

Routes: ``POST /incoming`` (TwiML ``<Connect><Stream url="ws(s)://.../ws"/>``),
``GET /ready`` and ``WS /ws`` (one call per connection).

Run::

    export OPENAI_API_KEY=sk-...
    export OPENAI_REALTIME_URL=wss://api.openai.com/v1/realtime  # the default
    export PUBLIC_URL=https://bot.example.com
    python benchmarks/stock_bot.py --port 8765

``OPENAI_REALTIME_URL`` is the Realtime websocket base URL (the service appends
``?model=...``); point it at a local emulator to run offline. ``PUBLIC_URL`` is the
origin Twilio reaches this server at; the stream URL is built from it. Auto hang-up
is off, so the bot never calls Twilio's REST API.
"""

import argparse
import os
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, Response
from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from twilio.twiml.voice_response import Connect, VoiceResponse

SYSTEM_INSTRUCTION = "You are a helpful phone assistant."

app = FastAPI()


def stream_url() -> str:
    """The Media Stream URL for the TwiML: ``PUBLIC_URL`` with a ws(s) scheme and ``/ws``."""
    public_url = os.getenv("PUBLIC_URL", "http://127.0.0.1:8765").rstrip("/")
    if public_url.startswith("https://"):
        return "wss://" + public_url.removeprefix("https://") + "/ws"
    return "ws://" + public_url.removeprefix("http://") + "/ws"


@app.post("/incoming")
async def incoming() -> Response:
    """Answer Twilio's voice webhook with TwiML that connects the call to ``/ws``."""
    response = VoiceResponse()
    connect = Connect()
    connect.stream(url=stream_url())
    response.append(connect)
    return Response(content=str(response), media_type="application/xml")


@app.get("/ready")
async def ready() -> JSONResponse:
    """Readiness probe."""
    return JSONResponse({"ready": True})


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Run one call on a Twilio Media Stream."""
    await websocket.accept()
    _, call_data = await parse_telephony_websocket(websocket)
    await run_bot(websocket, stream_sid=call_data["stream_id"], call_sid=call_data["call_id"])


async def run_bot(websocket: WebSocket, *, stream_sid: str, call_sid: str | None) -> None:
    """Build and run the stock pipeline for one call."""
    serializer = TwilioFrameSerializer(
        stream_sid=stream_sid,
        call_sid=call_sid,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )

    llm = OpenAIRealtimeLLMService(
        api_key=os.environ["OPENAI_API_KEY"],
        base_url=os.getenv("OPENAI_REALTIME_URL", "wss://api.openai.com/v1/realtime"),
        settings=OpenAIRealtimeLLMService.Settings(system_instruction=SYSTEM_INSTRUCTION),
    )

    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context)

    pipeline = Pipeline(
        [
            transport.input(),
            user_aggregator,
            llm,
            transport.output(),
            assistant_aggregator,
        ]
    )

    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=8000,
            audio_out_sample_rate=8000,
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport: FastAPIWebsocketTransport, client: WebSocket) -> None:
        # Kick off the conversation.
        context.add_message({"role": "developer", "content": "Greet the caller."})
        await worker.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(
        transport: FastAPIWebsocketTransport, client: WebSocket
    ) -> None:
        await worker.cancel()

    # uvicorn handles SIGINT.
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main() -> None:
    """Serve the bot (logging at ``LOG_LEVEL``, DEBUG by default as in Pipecat's examples)."""
    logger.remove()
    logger.add(sys.stderr, level=os.getenv("LOG_LEVEL", "DEBUG"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
