"""Trust and operations over real sockets: signatures, stream tokens, capacity, records,
webhook delivery, metrics, outbound calls, and draining on SIGTERM."""

import asyncio
import json
import signal
import time

import httpx
import pytest
from conftest import (
    AUTH_TOKEN,
    clean_env,
    free_port,
    phone_call,
    serve_env,
    spawn,
    wait_for_port,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator
from websockets.exceptions import InvalidStatus

from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.runner.app import SHUTDOWN_LINE
from pipecat_realtime_twilio.runner.incoming import BUSY_MESSAGE
from pipecat_realtime_twilio.runner.pricing import cost_usd
from pipecat_realtime_twilio.runner.store import CallStore
from pipecat_realtime_twilio.runner.webhook import WebhookSender, verify_signature
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.model import words_to_say
from pipecat_realtime_twilio.testing.server import LocalServer
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

SPEECH = tone(600) + silence(700)


def token_of(caller) -> str:
    return caller.dial_result.parameters["token"]


def with_token(caller, token: str | None) -> None:
    """Make the stream bring ``token`` (or none) instead of the one the webhook gave."""
    if token is None:
        caller.dial_result.parameters.pop("token")
    else:
        caller.dial_result.parameters["token"] = token


#
# signatures and tokens
#


@pytest.mark.parametrize("upgrade", ["unsigned", "wrong key"])
async def test_stream_upgrade_without_a_valid_signature_is_refused(upgrade):
    async with phone_call() as (emulator, runner, caller):
        await caller.dial()
        prewarmed = await emulator.wait_for_session(0)  # the signed webhook's
        if upgrade == "unsigned":
            caller.sign = False
        else:
            caller._validator = RequestValidator("not-the-auth-token")
        with pytest.raises(InvalidStatus) as refused:
            await caller.connect()
        assert refused.value.response.status_code == 403
        # No session of its own, and the pre-warmed one was not given to it.
        assert emulator.handshake_attempts == 1 and emulator.sessions == [prewarmed]
        assert not prewarmed.events_of_type("input_audio_buffer.append")
        assert _sample(runner, "prt_calls_rejected_total", reason="signature") == 1
        assert len(runner.prewarmed) == 1  # still waiting for the call's real stream


@pytest.mark.parametrize("token", ["none", "forged", "other call", "expired", "reused"])
async def test_stream_without_a_valid_token_is_closed_before_any_session(token):
    async with phone_call() as (emulator, runner, caller):
        await caller.dial()
        await emulator.wait_for_session(0)  # pre-warmed by the signed webhook
        if token == "none":
            with_token(caller, None)
        elif token == "forged":
            expiry, _, signature = token_of(caller).partition(".")
            with_token(caller, f"{expiry}.{signature[:-4]}AAAA")
        elif token == "other call":
            with_token(caller, runner.tokens.issue("CA" + "9" * 32))
        elif token == "expired":
            with_token(caller, runner.tokens.issue(caller.call_sid, now=time.time() - 3600))
        else:  # a stream that already used the token, then a second one with the same
            first = TwilioCaller(
                server_url=caller.server_url,
                public_url=caller.public_url,
                auth_token=AUTH_TOKEN,
                call_sid=caller.call_sid,
                account_sid=caller.account_sid,
            )
            first.dial_result = caller.dial_result
            await first.connect()
            await emulator.wait_for_session(0)
            await first.hangup()
            await first.close()
            await emulator.wait_for(lambda: emulator.sessions[0].closed_at is not None)
        sessions_before = len(emulator.sessions)
        await caller.connect()
        await caller.wait_ended(timeout=5)
        assert caller.close_code == 1008 and caller.heard == bytearray()
        await asyncio.sleep(0.2)
        assert len(emulator.sessions) == sessions_before  # no Realtime session for it
        assert not emulator.sessions[-1].events_of_type("input_audio_buffer.append") or (
            token == "reused"  # that session was the first stream's
        )
        # A second stream of a call that had its stream is a replay, whatever its token.
        reason = "replay" if token == "reused" else "token"
        assert _sample(runner, "prt_calls_rejected_total", reason=reason) == 1


async def test_the_signed_flow_with_its_token_works_and_the_token_is_bound_to_the_call():
    async with phone_call() as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=500, timeout=10)
        assert len(caller.heard) > 0 and len(emulator.sessions) == 1
        parameters = caller.dial_result.parameters
        assert runner.tokens.verify(token_of(caller), caller.call_sid, parameters) is None
        expiry, signature = runner.tokens.parts(token_of(caller))
        assert not await runner.admission.shared.use_token(signature, expiry)  # used up
        other = runner.tokens.verify(token_of(caller), "CA" + "1" * 32, parameters)
        assert other is not None and other.startswith("forged stream token")


#
# capacity
#


async def test_max_calls_plus_five_simultaneous_calls():
    max_calls = 3
    async with phone_call(settings={"max_calls": max_calls}) as (emulator, runner, first):
        callers = [first] + [
            TwilioCaller(
                server_url=first.server_url, public_url=first.public_url, auth_token=AUTH_TOKEN
            )
            for _ in range(max_calls + 4)
        ]
        try:
            answers = await asyncio.gather(*(c.dial() for c in callers))
            streaming = [c for c, a in zip(callers, answers, strict=True) if a.stream_url]
            busy = [a for a in answers if not a.stream_url]
            assert len(streaming) == max_calls and len(busy) == 5
            for answer in busy:
                assert [v.name for v in answer.verbs] == ["Say", "Hangup"]
                assert answer.verbs[0].text == BUSY_MESSAGE
            await asyncio.gather(*(c.connect() for c in streaming))
            await emulator.wait_for(lambda: len(emulator.sessions) == max_calls, timeout=10)
            await asyncio.sleep(0.3)
            assert len(emulator.sessions) == max_calls
            assert len(runner.active) == max_calls
            assert _sample(runner, "prt_calls_active") == max_calls
            assert _sample(runner, "prt_calls_rejected_total", reason="busy") == 5
            # A line frees up: the next caller gets through.
            await streaming[0].hangup()
            await first.wait_until(lambda: len(runner.active) == max_calls - 1, timeout=5)
            late = TwilioCaller(
                server_url=first.server_url, public_url=first.public_url, auth_token=AUTH_TOKEN
            )
            callers.append(late)
            assert (await late.dial()).stream_url
        finally:
            await asyncio.gather(*(c.close() for c in callers[1:]))


#
# records, webhook, metrics
#


def receiver_app(received: list, *, fail_first: int = 0) -> FastAPI:
    app = FastAPI()
    state = {"failures": fail_first}

    @app.post("/records")
    async def records(request: Request):
        body = await request.body()
        if state["failures"] > 0:
            state["failures"] -= 1
            return JSONResponse({"error": "down for a moment"}, status_code=503)
        received.append((body, request.headers.get("x-call-record-signature")))
        return {"ok": True}

    return app


def _sample(runner, name: str, **labels) -> float:
    for family in text_string_to_metric_families(runner.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_a_call_is_recorded_posted_to_the_webhook_and_counted_in_metrics(tmp_path):
    received: list = []
    async with LocalServer(receiver_app(received)) as receiver:
        settings = {
            "call_webhook_url": f"{receiver.url}/records",
            "call_webhook_secret": "hook-secret",
        }
        async with phone_call(settings=settings) as (emulator, runner, caller):
            await caller.call()
            await caller.wait_quiet(quiet_ms=500, timeout=10)
            greeting = len(caller.heard)
            await caller.say(SPEECH)
            await caller.wait_quiet(after=greeting, quiet_ms=500, timeout=10)
            await caller.hangup()
            await caller.wait_until(lambda: received, timeout=10, message="a webhook POST")
            store = CallStore(runner.settings.database_url)

            def delivered():
                stored = store.get(caller.call_sid)
                return stored is not None and stored.webhook_delivered

            # Marked delivered once the receiver's answer is back.
            await caller.wait_until(delivered, timeout=10, message="the record marked delivered")

            session = emulator.sessions[0]
            record = store.get(caller.call_sid)
            assert record.bot == "default" and record.direction == "inbound"
            assert (record.from_number, record.to_number) == (caller.from_number, caller.to_number)
            assert record.end_reason == "caller hung up"
            assert [t["role"] for t in record.transcript] == ["bot", "caller", "bot"]
            assert record.transcript[0]["text"] == session.responses[0].transcript
            # Usage is the sum of what the emulator reported; cost comes from the price table.
            expected = Usage()
            for response in session.responses:
                expected.add_response_usage(response.usage)
            assert record.usage == expected and expected.total_tokens > 0
            assert record.model == runner.settings.openai_realtime_model
            assert record.cost_usd == pytest.approx(cost_usd(record.model, expected))
            assert record.cost_usd > 0
            assert len(record.latency["response_ms"]) == 1
            assert 400 < record.latency["p50_ms"] < 1500  # 500 ms of it is VAD silence

            body, signature = received[0]
            assert verify_signature(body, "hook-secret", signature)
            posted = json.loads(body)
            assert posted["call_sid"] == caller.call_sid and posted["usage"] == expected.as_dict()

            # /metrics matches the call.
            async with httpx.AsyncClient(base_url=caller.server_url) as client:
                page = (await client.get("/metrics")).text
            assert "prt_calls_total" in page
            assert _sample(runner, "prt_calls_total", end_reason="caller hung up") == 1
            assert _sample(runner, "prt_calls_active") == 0
            assert _sample(runner, "prt_call_duration_seconds_count") == 1
            assert _sample(runner, "prt_call_duration_seconds_sum") == pytest.approx(
                record.duration_s
            )
            assert _sample(runner, "prt_response_latency_seconds_count") == 1
            assert _sample(runner, "prt_response_latency_seconds_sum") == pytest.approx(
                record.latency["p50_ms"] / 1000
            )
            assert _sample(runner, "prt_barge_ins_total") == 0
            for kind, count in expected.as_dict().items():
                name = kind.removesuffix("_tokens")
                assert _sample(runner, "prt_realtime_tokens_total", kind=name) == count
            assert _sample(runner, "prt_call_cost_usd_total") == pytest.approx(record.cost_usd)

            # The CLI shows it.
            env = clean_env(DATABASE_URL=runner.settings.database_url)
            process = await spawn(
                "-m", "pipecat_realtime_twilio", "calls", cwd=tmp_path, env=env, capture=True
            )
            listing = (await process.communicate())[0].decode()
            assert process.returncode == 0 and caller.call_sid in listing
            process = await spawn(
                "-m",
                "pipecat_realtime_twilio",
                "calls",
                caller.call_sid,
                cwd=tmp_path,
                env=env,
                capture=True,
            )
            shown = (await process.communicate())[0].decode()
            assert process.returncode == 0
            assert session.responses[0].transcript in shown and "cost $" in shown


async def test_a_record_is_kept_and_retried_while_the_webhook_is_down():
    port = free_port()
    received: list = []
    settings = {"call_webhook_url": f"http://127.0.0.1:{port}/records"}
    async with phone_call(settings=settings) as (emulator, runner, caller):
        runner.webhook = WebhookSender(
            runner.webhook.url, attempts=2, first_delay_s=0.05, timeout_s=1
        )
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        await caller.hangup()
        store = CallStore(runner.settings.database_url)
        await caller.wait_until(lambda: store.get(caller.call_sid), timeout=5)
        await asyncio.sleep(0.5)  # both tries failed: nothing listens
        assert [r.call_sid for r in store.undelivered()] == [caller.call_sid]

        # The receiver comes up: the next pass delivers, and the record is kept.
        async with LocalServer(receiver_app(received, fail_first=1), port=port):
            await runner.webhook.deliver_pending(runner.store)
            await caller.wait_until(lambda: received, timeout=5)
        assert json.loads(received[0][0])["call_sid"] == caller.call_sid
        assert store.undelivered() == [] and store.get(caller.call_sid).webhook_delivered


#
# outbound
#


async def test_outbound_call_through_the_rest_api_then_the_bot_greets(tmp_path):
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        settings = {
            "twilio_account_sid": rest.account_sid,
            "twilio_api_url": rest.url,
            "twilio_phone_number": "+15550009999",
            "runner_api_key": "runner-key",
        }
        async with phone_call(settings=settings) as (emulator, runner, caller):
            async with httpx.AsyncClient(base_url=caller.server_url) as client:
                refused = await client.post("/calls", json={"to": "+15551112222"})
                assert refused.status_code == 401
                created = await client.post(
                    "/calls",
                    json={"to": "+15551112222", "bot": "default"},
                    headers={"Authorization": "Bearer runner-key"},
                )
            assert created.status_code == 201, created.text
            call_sid = created.json()["call_sid"]
            [create] = rest.requests_to(method="POST")
            assert create.form["To"] == "+15551112222" and create.form["From"] == "+15550009999"
            assert create.form["Url"] == f"{runner.settings.public_origin}/incoming?bot=default"

            # Twilio: the callee answers, Twilio requests the URL and opens the stream.
            answered = TwilioCaller(
                server_url=caller.server_url,
                public_url=caller.public_url,
                auth_token=AUTH_TOKEN,
                call_sid=call_sid,
                account_sid=rest.account_sid,
                from_number="+15550009999",
                to_number="+15551112222",
            )
            try:
                await answered.dial({"Direction": "outbound-api"}, url=create.form["Url"])
                await answered.connect()
                await answered.wait_quiet(quiet_ms=500, timeout=10)
                assert bytes(answered.heard) == bytes(emulator.sessions[0].responses[0].audio)
                await answered.hangup()
                await answered.wait_until(lambda: runner.finished, timeout=5)
                assert runner.finished[0].direction == "outbound"
                assert runner.finished[0].call_sid == call_sid
            finally:
                await answered.close()

            # The CLI places calls the same way.
            env = clean_env(
                DATABASE_URL=runner.settings.database_url,
                PUBLIC_URL=runner.settings.public_origin,
                TWILIO_ACCOUNT_SID=rest.account_sid,
                TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                TWILIO_API_URL=rest.url,
            )
            process = await spawn(
                "-m",
                "pipecat_realtime_twilio",
                "call",
                "+15553334444",
                "--from",
                "+15550009999",
                cwd=tmp_path,
                env=env,
                capture=True,
            )
            out, err = await process.communicate()
            assert process.returncode == 0, err.decode()
            new = [r for r in rest.requests_to(method="POST") if r.form.get("To") == "+15553334444"]
            assert len(new) == 1 and new[0].form["Url"].endswith("/incoming?bot=default")
            assert "Calling +15553334444" in out.decode()


#
# drain
#


def _said_in_a_second(session, trigger):
    """Say what the agent asks for, each line in one second of audio (a fast talker)."""
    words = words_to_say(session, trigger)
    return Reply(text=words or "I heard you.", duration_ms=1000)


async def test_sigterm_drains_active_calls_then_exits_zero(tmp_path):
    # The whole drain ends within DRAIN_TIMEOUT_SECS; its last third (3 s here) is kept for the
    # closing line (a second long) and the records.
    async with RealtimeEmulator(replies=_said_in_a_second) as emulator:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = serve_env(emulator, port, tmp_path, DRAIN_TIMEOUT_SECS="9")
        process = await spawn("-m", "pipecat_realtime_twilio", "serve", cwd=tmp_path, env=env)
        callers = [
            TwilioCaller(server_url=public, public_url=public, auth_token=AUTH_TOKEN)
            for _ in range(4)
        ]
        try:
            await wait_for_port(port, process)
            active = callers[:3]
            await asyncio.gather(*(c.call() for c in active))
            await asyncio.gather(*(c.wait_quiet(quiet_ms=300, timeout=10) for c in active))
            greeted = [len(c.heard) for c in active]

            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=public) as client:
                assert (await client.get("/readyz")).status_code == 503
                assert (await client.get("/healthz")).status_code == 200
            late = await callers[3].dial()
            assert late.stream_url is None and [v.name for v in late.verbs] == ["Say", "Hangup"]

            # Active calls go on until the drain's last third, then hear the closing line and end.
            await asyncio.gather(*(c.wait_ended(timeout=15) for c in active))
            for caller, before in zip(active, greeted, strict=True):
                assert caller.stream_ended_at - caller.started_at >= 6
                assert len(caller.heard) > before and caller.hung_up_at is None
            said = [r.transcript for s in emulator.sessions for r in s.responses]
            assert said.count(SHUTDOWN_LINE) == 3
            assert await asyncio.wait_for(process.wait(), timeout=20) == 0
            with CallStore(env["DATABASE_URL"]) as store:
                reasons = {r.end_reason for r in store.list()}
            assert reasons == {"runner shutting down"}
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await asyncio.gather(*(c.close() for c in callers))
