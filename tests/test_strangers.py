"""The runner against strangers, over real sockets: replays, forged streams, embedding without
a token, lines held by streams that never come, personal data in logs and metrics."""

import asyncio
import contextlib
import re

import aiohttp
import pytest
from conftest import AUTH_TOKEN, phone_call, runner_settings
from loguru import logger

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.tools import transfer_call
from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.logs import show_numbers
from pipecat_realtime_twilio.runner.app import CallRunner, create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.testing.caller import CallRejected, TwilioCaller, make_sid
from pipecat_realtime_twilio.testing.emulator import FunctionCall, RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.server import LocalServer, free_port
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

SPEECH = tone(600) + silence(700)
FROM, TO, TRANSFER_TO = "+15550001111", "+15550002222", "+15557654321"


def agent_bot(**options):
    def pipeline(call):
        return [call.input(), RealtimeAgent(instructions="A test bot.", **options), call.output()]

    return pipeline


@contextlib.contextmanager
def captured_logs(level: str = "INFO"):
    """Every log line at ``level`` and above, as the runner wrote it (no patcher)."""
    lines: list[str] = []
    sink = logger.add(lines.append, level=level, format="{level} | {extra} | {message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


def sample(runner, name: str, **labels) -> float:
    total = 0.0
    for metric in runner.metrics.registry.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def twin(caller: TwilioCaller, **changes) -> TwilioCaller:
    """Another caller with the same call (as a replayer holding captured requests would be)."""
    options = dict(
        server_url=caller.server_url,
        public_url=caller.public_url,
        auth_token=AUTH_TOKEN,
        call_sid=caller.call_sid,
        account_sid=caller.account_sid,
    )
    options.update(changes)
    return TwilioCaller(**options)


#
# replays
#


async def test_a_replayed_webhook_of_a_finished_call_gets_no_stream_and_no_session():
    async with phone_call() as (emulator, runner, caller):
        await caller.call()
        await caller.wait_heard(300, timeout=10)
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        sessions = len(emulator.sessions)

        async with twin(caller) as replayer:
            answer = await replayer.dial()  # the captured webhook, signed, sent again
        assert answer.stream_url is None and [v.name for v in answer.verbs] == ["Hangup"]
        await asyncio.sleep(0.3)
        assert len(emulator.sessions) == sessions  # no pre-warmed session either
        assert sample(runner, "prt_calls_rejected_total", reason="replay") == 1
        [record] = runner.finished
        assert record.from_number == FROM  # untouched


async def test_a_replay_after_a_restart_is_refused_from_the_stored_records(tmp_path):
    database = f"sqlite:///{tmp_path}/calls.db"
    async with RealtimeEmulator() as emulator:
        call_sid = make_sid("CA")
        for attempt in ("the call", "the replay"):
            server = LocalServer()
            settings = runner_settings(emulator, server.url, database_url=database)
            server.app = create_app(settings, load_bots(settings.bots_dir))
            async with server:
                runner = server.app.state.runner
                async with TwilioCaller(
                    server_url=server.url, public_url=server.url, auth_token=AUTH_TOKEN,
                    call_sid=call_sid,
                ) as caller:  # fmt: skip
                    if attempt == "the call":
                        await caller.call()
                        await caller.wait_heard(300, timeout=10)
                        await caller.hangup()
                        await caller.wait_until(lambda r=runner: r.finished, timeout=10)
                        await runner.records.settle(timeout=5)
                        sessions = len(emulator.sessions)
                    else:  # a new process: only the store remembers the call
                        answer = await caller.dial()
                        assert answer.stream_url is None
                        assert sample(runner, "prt_calls_rejected_total", reason="replay") == 1
        await asyncio.sleep(0.3)
        assert len(emulator.sessions) == sessions


@pytest.mark.parametrize("claim", ["from", "bot", "direction", "an extra parameter"])
async def test_a_stream_that_claims_other_parameters_than_the_webhook_is_refused(claim):
    async with phone_call(settings={"prewarm": False}) as (emulator, runner, caller):
        await caller.dial()
        parameters = caller.dial_result.parameters
        if claim == "from":
            parameters["from"] = "+19998887777"
        elif claim == "bot":
            parameters["bot"] = "other"
        elif claim == "direction":
            parameters["direction"] = "outbound"
        else:
            parameters["admin"] = "1"
        await caller.connect()
        await caller.wait_ended(timeout=5)
        assert caller.close_code == 1008 and not caller.heard
        assert not emulator.sessions  # no session opened for it
        assert sample(runner, "prt_calls_rejected_total", reason="token") == 1
        assert not runner.finished  # and no record overwritten or made


async def test_the_record_keeps_what_the_signed_webhook_said():
    async with phone_call() as (emulator, runner, caller):
        await caller.call()
        await caller.wait_heard(300, timeout=10)
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        [record] = runner.finished
        assert (record.from_number, record.to_number, record.bot) == (FROM, TO, "default")
        assert record.direction == "inbound"


#
# a runner without a token
#


@pytest.mark.parametrize("token", [None, ""])
async def test_an_embedded_runner_without_an_auth_token_does_not_start(token):
    async with RealtimeEmulator() as emulator:
        settings = runner_settings(emulator, "https://bot.example.com", twilio_auth_token=token)
        bots = load_bots(settings.bots_dir)
        for build in (lambda: create_app(settings, bots), lambda: CallRunner(settings, bots)):
            with pytest.raises(SettingsError, match="^TWILIO_AUTH_TOKEN is not set") as error:
                build()
            assert "\n" not in str(error.value)
        # Off on purpose (local development): it starts.
        off = runner_settings(
            emulator, "https://bot.example.com", twilio_auth_token=token,
            twilio_validate_signatures=False,
        )  # fmt: skip
        assert CallRunner(off, bots).router is not None


#
# a line held by a webhook whose stream never comes
#


async def test_a_line_is_released_when_its_prewarmed_session_ends():
    settings = {"max_calls": 1, "prewarm_timeout_secs": 0.5}
    async with phone_call(settings=settings) as (emulator, runner, caller):
        await caller.dial()  # a stream that never comes
        assert caller.dial_result.stream_url is not None
        async with twin(caller, call_sid=make_sid("CA")) as second:
            busy = await second.dial()
            assert busy.stream_url is None  # the one line is held
            await second.wait_until(
                lambda: sample(runner, "prt_prewarm_total", outcome="expired") == 1, timeout=5
            )
        async with twin(caller, call_sid=make_sid("CA")) as third:
            answer = await third.dial()
            assert answer.stream_url is not None  # released with the pre-warm, not at 60 s
            await third.connect()
            await third.wait_heard(300, timeout=10)


#
# personal data
#


@pytest.mark.parametrize("shown", [False, True])
async def test_no_phone_number_in_metrics_or_info_logs_by_default(shown):
    transfer = Reply(
        text="Let me put you through.", function_call=FunctionCall("transfer_call", {})
    )
    bot = agent_bot(tools=[transfer_call(TRANSFER_TO)])
    settings = {"log_phone_numbers": shown}
    try:
        with captured_logs() as lines:
            async with phone_call(pipeline=bot, replies=[transfer], settings=settings) as (
                emulator,
                runner,
                caller,
            ):
                await caller.call()
                await caller.say(SPEECH)
                await caller.wait_ended(timeout=15)
                await caller.wait_until(lambda: runner.finished, timeout=5)
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{caller.server_url}/metrics") as response:
                        metrics = await response.text()
    finally:
        show_numbers(False)
    assert runner.finished[0].end_reason == f"transferred to {TRANSFER_TO}"  # the record has it
    assert 'prt_calls_total{bot="test",end_reason="transferred"} 1.0' in metrics
    logged = "\n".join(lines)
    assert "Incoming call" in logged and "transferring to" in logged
    for digits in (FROM, TO, TRANSFER_TO):
        assert digits not in metrics
        assert (digits in logged) is shown, [line for line in lines if digits in line]


async def test_a_newline_in_a_signed_callsid_is_refused_and_forges_no_log_line():
    async with phone_call() as (emulator, runner, caller):
        with captured_logs("DEBUG") as lines:
            with pytest.raises(CallRejected) as refused:
                await caller.dial({"CallSid": "CA1\nERROR | forged line"})
        assert refused.value.status == 400
        assert not any(line.startswith("ERROR | forged") for line in "\n".join(lines).split("\n"))
        assert not emulator.sessions


#
# /metrics protected
#


async def test_metrics_want_the_token_when_one_is_set():
    async with phone_call(settings={"metrics_token": "m3trics"}) as (emulator, runner, caller):
        url = f"{caller.server_url}/metrics"
        async with aiohttp.ClientSession() as http:
            for headers, status in (
                ({}, 401),
                ({"Authorization": "Bearer wrong"}, 401),
                ({"Authorization": "Bearer m3trics"}, 200),
            ):
                async with http.get(url, headers=headers) as response:
                    assert response.status == status
                    if status == 200:
                        assert "prt_calls_active" in await response.text()


async def test_metrics_on_their_own_listen_address():
    port = free_port()
    async with phone_call(settings={"metrics_port": port}) as (emulator, runner, caller):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{caller.server_url}/metrics") as response:
                assert response.status == 404  # not on the public port
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                assert "prt_calls_active" in await response.text()
    with pytest.raises(aiohttp.ClientConnectionError):  # closed with the runner
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{port}/metrics")


#
# the playground's token
#


async def test_the_playground_token_reads_only_its_own_calls_and_no_account_data():
    token = "play"
    account = make_sid("AC")
    settings = {"playground_token": token, "twilio_account_sid": account}
    async with phone_call(settings=settings) as (emulator, runner, caller):
        caller.account_sid = account
        await caller.call()  # a phone call, not the playground's
        await caller.wait_heard(300, timeout=10)
        base = caller.server_url
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/playground/calls?token={token}", json={}) as response:
                placed = await response.json()
            assert "account_sid" not in placed
            assert not re.search(r"AC[0-9a-f]{32}", str(placed))
            own = f"{base}/playground/transcript/{placed['call_sid']}?token={token}"
            other = f"{base}/playground/transcript/{caller.call_sid}?token={token}"
            async with http.get(other) as response:
                assert response.status == 404  # a phone call's transcript is not its to read
            # The page's stream, with an account of its own choosing: the runner's is used.
            stream = f"{caller.server_url.replace('http', 'ws')}/playground/media-stream"
            parameters = "".join(
                f'<Parameter name="{k}" value="{v}"/>' for k, v in placed["parameters"].items()
            )
            async with TwilioCaller(
                server_url=base, public_url=base, auth_token=AUTH_TOKEN, sign=False,
                call_sid=placed["call_sid"], account_sid=make_sid("AC"),
            ) as page:  # fmt: skip
                page.load_twiml(
                    f'<Response><Connect><Stream url="{stream}?token={token}">{parameters}'
                    "</Stream></Connect></Response>"
                )
                await page.connect()
                await page.wait_heard(300, timeout=10)
                async with http.get(own) as response:
                    assert response.status == 200 and (await response.json())["active"]
