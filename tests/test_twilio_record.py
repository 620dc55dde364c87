"""TWILIO_RECORD: Twilio records the call too, and its recording's URL goes on the record."""

import contextlib

import aiohttp
import pytest
from conftest import AUTH_TOKEN, ROOT, phone_call
from loguru import logger

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.tools import end_call
from pipecat_realtime_twilio.phone.rest import TwilioRest, TwilioRestException
from pipecat_realtime_twilio.runner.app import CallRunner
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.runner.twilio_recording import STATUS_PATH
from pipecat_realtime_twilio.settings import Settings, SettingsError
from pipecat_realtime_twilio.testing.emulator import FunctionCall, Reply
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.sounds import silence, tone

SPEECH = tone(600) + silence(700)


def agent_bot(**options):
    def pipeline(call):
        return [
            call.input(),
            RealtimeAgent(instructions="You are a test bot.", **options),
            call.output(),
        ]

    return pipeline


@pytest.fixture
def logs():
    messages: list[tuple[str, str]] = []
    sink = logger.add(lambda m: messages.append((m.record["level"].name, m.record["message"])))
    yield messages
    logger.remove(sink)


@contextlib.asynccontextmanager
async def recorded_call(pipeline, **options):
    """A call to a runner with TWILIO_RECORD on, its REST API the fake, the caller attached."""
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        settings = {
            "twilio_account_sid": rest.account_sid,
            "twilio_api_url": rest.url,
            "twilio_record": True,
        }
        async with phone_call(pipeline=pipeline, settings=settings, **options) as (
            emulator,
            runner,
            caller,
        ):
            caller.account_sid = rest.account_sid
            rest.attach(caller)
            yield runner, caller, rest


@pytest.mark.call
async def test_twilio_records_the_call_and_the_url_goes_on_the_record():
    goodbye = Reply(text="Goodbye!", function_call=FunctionCall("end_call", {}))
    async with recorded_call(agent_bot(tools=[end_call()]), replies=[goodbye]) as (
        runner,
        caller,
        rest,
    ):
        await caller.call()
        await caller.wait_until(lambda: rest.recordings, timeout=10)
        [recording] = rest.recordings.values()
        assert recording["call_sid"] == caller.call_sid and recording["channels"] == 2
        [start] = [r for r in rest.requests if r.path.endswith("/Recordings.json")]
        assert start.form["RecordingChannels"] == "dual"
        assert start.form["RecordingStatusCallback"] == runner.settings.public_origin + STATUS_PATH
        assert start.status == 201

        await caller.say(SPEECH)  # the bot says goodbye and ends the call (REST: <Hangup/>)
        await caller.wait_ended(timeout=15)
        assert rest.calls[caller.call_sid]["status"] == "completed"
        await caller.wait_until(lambda: rest.recording_callbacks, timeout=10)
        [(form, status)] = rest.recording_callbacks
        assert status == 204 and form["RecordingStatus"] == "completed"
        assert form["RecordingSid"] == recording["sid"] and recording["status"] == "completed"

        url = form["RecordingUrl"]
        # On the record: amended, or made with it if the callback came first.
        await caller.wait_until(
            lambda: runner.finished and runner.finished[-1].twilio_recording_url == url, timeout=5
        )
        record = runner.finished[-1]
        assert record.call_sid == caller.call_sid
        await runner.records.settle(timeout=5)
        stored = runner.store.get(caller.call_sid)
        assert stored.twilio_recording_url == url and stored.revision >= record.revision


@pytest.mark.call
async def test_a_refused_recording_is_logged_and_the_call_goes_on(logs):
    goodbye = Reply(text="Goodbye!", function_call=FunctionCall("end_call", {}))
    async with recorded_call(agent_bot(tools=[end_call()]), replies=[goodbye]) as (
        runner,
        caller,
        rest,
    ):
        rest.fail_next(1, status=400)  # the first REST request: starting the recording
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[-1].end_reason == "bot ended the call"
        assert runner.finished[-1].twilio_recording_url is None
        assert rest.recordings == {} and rest.recording_callbacks == []
    warnings = [text for level, text in logs if level == "WARNING"]
    assert any(
        text.startswith(f"Call {caller.call_sid}: Twilio could not record it (HTTP 400, code 20500")
        and text.endswith("call goes on")
        for text in warnings
    ), warnings


@pytest.mark.call
async def test_recording_callbacks_before_the_record_bad_ones_and_unsigned_ones(logs):
    async with recorded_call(agent_bot()) as (runner, caller, rest):
        await caller.call()
        await caller.wait_until(lambda: rest.recordings, timeout=10)
        url = runner.settings.public_origin + STATUS_PATH
        base = {"AccountSid": rest.account_sid, "CallSid": caller.call_sid, "RecordingSid": "RE1"}
        # Twilio could not record: logged, nothing kept.
        answer = await caller.send_signed(
            url, {**base, "RecordingStatus": "absent", "ErrorCode": "13617"}
        )
        assert answer.status == 204
        # A URL that is no URL: logged and dropped.
        answer = await caller.send_signed(
            url, {**base, "RecordingStatus": "completed", "RecordingUrl": "javascript:x"}
        )
        assert answer.status == 204
        # Unsigned: refused.
        async with aiohttp.ClientSession() as session:
            form = {**base, "RecordingStatus": "completed", "RecordingUrl": "https://x"}
            async with session.post(caller.local_url(url), data=form) as response:
                assert response.status == 403
        # Completed while the call still runs: kept until its record is made.
        early = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"
        answer = await caller.send_signed(
            url, {**base, "RecordingStatus": "completed", "RecordingUrl": early}
        )
        assert answer.status == 204
        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[-1].twilio_recording_url == early
        made = runner.finished[-1]
        assert made.revision == 0  # made with it, not amended
        # After the record was made: amended, stored again one revision higher.
        late = early.replace("RE1", "RE2")
        answer = await caller.send_signed(
            url, {**base, "RecordingStatus": "completed", "RecordingUrl": late}
        )
        assert answer.status == 204
        amended = runner.finished[-1]
        assert amended.twilio_recording_url == late and amended.revision > made.revision
        await runner.records.settle(timeout=5)
        stored = runner.store.get(caller.call_sid)
        assert stored.twilio_recording_url == late and stored.revision >= amended.revision
    warnings = [text for level, text in logs if level == "WARNING"]
    assert f"Call {caller.call_sid}: Twilio's recording RE1 is absent (error 13617)" in warnings
    assert any("no usable RecordingUrl; dropped" in text for text in warnings)


def test_twilio_record_needs_rest_credentials(tmp_path):
    settings = Settings(
        _env_file=None,
        openai_api_key="sk-test",
        twilio_auth_token=AUTH_TOKEN,
        public_url="https://bot.example.com",
        bots_dir=str(ROOT / "bots"),
        database_url=f"sqlite:///{tmp_path}/calls.db",
        outbox_dir=str(tmp_path / "outbox"),
        twilio_record=True,
    )
    with pytest.raises(SettingsError, match="TWILIO_RECORD=true needs TWILIO_ACCOUNT_SID"):
        CallRunner(settings, load_bots(settings.bots_dir))


@pytest.mark.call
async def test_the_fake_api_refuses_to_record_a_call_not_in_progress():
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as fake:
        client = TwilioRest(fake.account_sid, AUTH_TOKEN, api_url=fake.url)
        try:
            ringing = fake.add_call(status="ringing")["sid"]
            with pytest.raises(TwilioRestException) as refused:
                await client.start_recording(ringing, "https://bot.example.com/recording-status")
            assert (refused.value.status, refused.value.code) == (400, 21220)
            with pytest.raises(TwilioRestException) as missing:
                await client.start_recording("CA" + "0" * 32, "https://bot.example.com/x")
            assert missing.value.status == 404
            # A recording whose call ends without a callback URL completes quietly.
            live = fake.add_call()["sid"]
            sid = await client.start_recording(live, "")
            fake.set_call_status(live, "completed")
            assert fake.recordings[sid]["status"] == "completed"
            assert fake.recording_callbacks == []
        finally:
            await client.close()
