"""What is said on a call, as it is said: the runner's transcript stream and who reads it."""

import asyncio
import json

import httpx
import pytest
from conftest import phone_call, runner_settings

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import Bot
from pipecat_realtime_twilio.runner.live_transcript import WAIT_SECS
from pipecat_realtime_twilio.shell_progress import CallProgress
from pipecat_realtime_twilio.shell_words import SpokenWords
from pipecat_realtime_twilio.testing.emulator import Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.server import LocalServer

pytestmark = pytest.mark.call

KEY = "the-runner-key"
GREETING = "Hello, you are through to the test line."
BEARER = {"Authorization": f"Bearer {KEY}"}


def greeter(call):
    return [call.input(), RealtimeAgent(instructions="Be brief.", greeting=GREETING), call.output()]


def _call(**settings):
    return phone_call(
        pipeline=greeter,
        replies=say_as_asked(Reply("Yes.")),
        settings={"runner_api_key": KEY, **settings},
    )


async def _events(answer: httpx.Response):
    """``(name, data)`` of each server-sent event, as it arrives."""
    name, data = None, ""
    async for line in answer.aiter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data += line.split(":", 1)[1].strip()
        elif not line and name:
            yield name, json.loads(data)
            name, data = None, ""


async def test_words_come_as_they_are_said_then_the_end():
    async with _call() as (_, runner, caller):
        await caller.call()
        url = f"{caller.server_url}/api/calls/{caller.call_sid}/transcript"
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            async with client.stream("GET", url, headers=BEARER) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                events = _events(answer)
                name, turn = await asyncio.wait_for(anext(events), 10)
                # The greeting is told while the call goes on.
                assert (name, turn["role"], turn["text"], turn["index"]) == (
                    "turn",
                    "bot",
                    GREETING,
                    0,
                )
                assert caller.stream_ended_at is None
                await caller.hangup()
                rest = [event async for event in events]
        assert rest[-1] == ("end", {"call_sid": caller.call_sid, "end_reason": "caller hung up"})
        # Nothing new after the greeting; the greeting again only if it changed (cut at hang-up).
        again = [data for name, data in rest if name == "turn"]
        assert all(data["index"] == 0 and data["interrupted"] for data in again), again


async def test_the_stream_is_the_read_apis_key_and_a_callsid():
    async with _call() as (_, runner, caller):
        base = f"{caller.server_url}/api/calls"
        async with httpx.AsyncClient(timeout=10) as client:
            sid = "CA" + "0" * 32
            wrong = {"Authorization": "Bearer nope"}
            assert (await client.get(f"{base}/{sid}/transcript", headers=wrong)).status_code == 401
            assert (await client.get(f"{base}/{sid}/transcript")).status_code == 401
            assert (await client.get(f"{base}/CA12/transcript", headers=BEARER)).status_code == 400
    async with _call(runner_api_key=None) as (_, runner, caller):
        async with httpx.AsyncClient(timeout=10) as client:
            url = f"{caller.server_url}/api/calls/{'CA' + '0' * 32}/transcript"
            answer = await client.get(url, headers=BEARER)
            assert answer.status_code == 404 and "set RUNNER_API_KEY" in answer.text


async def test_another_instance_misses_a_streaming_call_then_serves_it_from_the_store():
    """Two instances on one database: the call streams on A; B is asked for its words."""
    async with _call() as (emulator, runner, caller):
        other = LocalServer()
        settings = runner_settings(
            emulator,
            other.url,
            bot="test",
            runner_api_key=KEY,
            database_url=runner.settings.database_url,
        )
        other.app = create_app(settings, {"test": Bot("test", "a test bot", greeter)})
        async with other:
            await caller.call()
            await caller.wait_heard(300, timeout=10)
            lines: list[str] = []
            progress = CallProgress(caller, lines.append, asyncio.get_running_loop().time())
            words = SpokenWords(other.url, KEY, caller.call_sid, progress)
            words.start()
            await words.finish(WAIT_SECS + 5)  # B waits for the call, then says it is not there
            assert words.turns == 0 and not words.ended
            assert lines[-1].endswith(
                "(no words as they are said: the call streams on another instance; "
                "they come at the end)"
            ), lines

            await caller.hangup()
            await caller.wait_until(lambda: runner.store.get(caller.call_sid), timeout=10)
            lines.clear()
            words = SpokenWords(other.url, KEY, caller.call_sid, progress)
            words.start()
            await words.finish(10)  # over and stored: B tells it all, then the end
            assert words.ended and words.turns == 1
            assert lines[0].endswith(f"bot: {GREETING}"), lines


async def test_a_wrong_key_is_one_line_and_the_call_goes_on():
    async with _call() as (_, runner, caller):
        await caller.call()
        lines: list[str] = []
        progress = CallProgress(caller, lines.append, asyncio.get_running_loop().time())
        words = SpokenWords(caller.server_url, "not-the-key", caller.call_sid, progress)
        words.start()
        await words.finish(10)
        assert lines == [lines[0]] and lines[0].endswith(
            "(no words as they are said: wrong RUNNER_API_KEY; they come at the end)"
        )
        assert caller.stream_ended_at is None  # the call goes on
