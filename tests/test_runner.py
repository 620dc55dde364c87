"""The runner mounted into another app, and a bot with a tool of its own."""

import textwrap

import pytest
from conftest import AUTH_TOKEN, runner_settings
from fastapi import FastAPI

from pipecat_realtime_twilio.runner.app import CallRunner
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import FunctionCall, RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.server import LocalServer
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

WEATHER_BOT = textwrap.dedent(
    '''
    """Tells the weather with a tool."""

    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

    from pipecat_realtime_twilio import CallSession, RealtimeAgent

    WEATHER = FunctionSchema(
        name="get_weather",
        description="The weather in a city.",
        properties={"city": {"type": "string"}},
        required=["city"],
    )


    async def get_weather(params):
        await params.result_callback({"city": params.arguments["city"], "sky": "sunny"})


    def pipeline(call: CallSession) -> list:
        agent = RealtimeAgent(
            instructions="Tell the weather.", greeting="Weather line.",
            tools=ToolsSchema(standard_tools=[WEATHER]),
        )
        agent.register_function("get_weather", get_weather)
        return [call.input(), agent, call.output()]
    '''
)


async def test_routes_mounted_under_a_prefix_in_another_app():
    async with RealtimeEmulator() as emulator:
        server = LocalServer()
        settings = runner_settings(emulator, server.url)
        app = FastAPI()
        runner = CallRunner(settings, load_bots(settings.bots_dir))
        app.include_router(runner.router, prefix="/phone")
        server.app = app
        async with server:
            async with TwilioCaller(
                server_url=server.url,
                public_url=server.url,
                auth_token=AUTH_TOKEN,
                webhook_path="/phone/incoming",
            ) as caller:
                dial = await caller.call()
                assert dial.stream_url == f"{settings.websocket_origin}/phone/media-stream"
                await caller.wait_heard(300, timeout=10)
                await caller.hangup()
                await caller.wait_until(lambda: runner.finished, timeout=5)
    assert runner.finished[0].end_reason == "caller hung up"


async def test_a_bot_tool_is_called_and_its_result_answered(tmp_path):
    (tmp_path / "weather.py").write_text(WEATHER_BOT)
    replies = [
        Reply(text="Weather line."),
        Reply(function_call=FunctionCall(name="get_weather", arguments={"city": "Oslo"})),
        Reply(text="It is sunny in Oslo."),
    ]
    async with RealtimeEmulator(replies=replies) as emulator:
        server = LocalServer()
        settings = runner_settings(emulator, server.url, bots_dir=str(tmp_path), bot="weather")
        runner = CallRunner(settings, load_bots(tmp_path))
        app = FastAPI()
        app.include_router(runner.router)
        server.app = app
        async with server:
            async with TwilioCaller(
                server_url=server.url, public_url=server.url, auth_token=AUTH_TOKEN
            ) as caller:
                await caller.call()
                await caller.wait_heard(300, timeout=10)
                greeting = len(caller.heard)
                await caller.say(tone(900) + silence(700))
                session = emulator.sessions[0]
                await emulator.wait_for(lambda: len(session.responses) == 3, timeout=10)
                await caller.wait_until(lambda: len(caller.heard) > greeting + 800, timeout=10)

    assert [o.output for o in session.function_outputs] == ['{"city": "Oslo", "sky": "sunny"}']
    assert [r.trigger for r in session.responses] == ["response.create", "vad", "response.create"]
    tools = session.config["tools"]
    assert [t["name"] for t in tools] == ["get_weather"]
    assert emulator.validation_errors == []
