"""Tests for the fake Twilio REST API, driven by the official twilio package's async client."""

import asyncio
import base64

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest

pytestmark = pytest.mark.call

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-auth-token"


def twilio_client(account_sid: str, auth_token: str, api_url: str) -> Client:
    """A twilio Client whose 2010-04-01 API requests go to ``api_url``.

    Every Calls URL is built as ``client.api.base_url + "/2010-04-01/Accounts/..."``,
    and ``base_url`` is a plain attribute, so overriding it redirects the client.
    """
    client = Client(account_sid, auth_token, http_client=AsyncTwilioHttpClient())
    client.api.base_url = api_url.rstrip("/")
    return client


@pytest.fixture
async def fake():
    async with FakeTwilioRest(ACCOUNT_SID, AUTH_TOKEN) as fake:
        yield fake


@pytest.fixture
async def client(fake):
    client = twilio_client(ACCOUNT_SID, AUTH_TOKEN, fake.url)
    yield client
    await client.http_client.close()


async def test_create_fetch_and_hang_up_an_outbound_call(fake, client):
    created: list[dict] = []
    fake.on_create = lambda info: asyncio.sleep(0, created.append(info))

    twiml = '<Response><Connect><Stream url="wss://bot.example.com/ws"/></Connect></Response>'
    call = await client.calls.create_async(
        to="+15550002222",
        from_="+15550001111",
        twiml=twiml,
        status_callback="https://bot.example.com/status",
    )
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert call.status == "queued"
    assert call.direction == "outbound-api"
    assert (call.to, call._from) == ("+15550002222", "+15550001111")
    assert call.to_formatted == "(555) 000-2222"
    assert call.account_sid == ACCOUNT_SID
    assert call.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call.sid}.json"
    assert call.date_created is not None  # RFC 2822 dates parse

    request = fake.requests[0]
    assert (request.method, request.path) == (
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
    )
    assert request.form["Twiml"] == twiml
    assert request.form["StatusCallback"] == "https://bot.example.com/status"
    assert request.username == ACCOUNT_SID and request.status == 201
    assert fake.call_params[call.sid]["To"] == "+15550002222"

    await asyncio.wait_for(_until(lambda: created), timeout=2)
    assert created[0]["CallSid"] == call.sid and created[0]["Twiml"] == twiml

    fake.set_call_status(call.sid, "in-progress")
    fetched = await client.calls(call.sid).fetch_async()
    assert fetched.status == "in-progress" and fetched.start_time is not None

    ended = await client.calls(call.sid).update_async(status="completed")
    assert ended.status == "completed"
    assert ended.end_time is not None and ended.duration is not None
    assert fake.calls[call.sid]["status"] == "completed"


async def test_hang_up_a_registered_inbound_call(fake, client):
    updates: list[dict] = []
    fake.on_update = lambda info: asyncio.sleep(0, updates.append(info))
    sid = fake.add_call(direction="inbound")["sid"]

    call = await client.calls(sid).update_async(status="completed")
    assert call.sid == sid and call.status == "completed" and call.direction == "inbound"
    (request,) = fake.requests_to(sid, method="POST")
    assert request.form == {"Status": "completed"}
    await asyncio.wait_for(_until(lambda: updates), timeout=2)
    assert updates[0]["CallSid"] == sid and updates[0]["CallStatus"] == "completed"

    # Redirecting a call that has ended fails as on Twilio.
    with pytest.raises(TwilioRestException) as error:
        await client.calls(sid).update_async(twiml="<Response><Hangup/></Response>")
    assert (error.value.status, error.value.code) == (400, 21220)


async def test_redirect_in_progress_call_and_cancel_queued_call(fake, client):
    sid = fake.add_call()["sid"]
    redirected = await client.calls(sid).update_async(twiml="<Response><Say>Hi</Say></Response>")
    assert redirected.status == "in-progress"

    queued = fake.add_call(status="queued", direction="outbound-api")["sid"]
    canceled = await client.calls(queued).update_async(status="canceled")
    assert canceled.status == "canceled"


async def test_bad_credentials_get_401(fake):
    client = twilio_client(ACCOUNT_SID, "wrong-token", fake.url)
    try:
        with pytest.raises(TwilioRestException) as error:
            await client.calls.create_async(to="+15550002222", from_="+15550001111", url="x")
    finally:
        await client.http_client.close()
    assert (error.value.status, error.value.code) == (401, 20003)
    assert fake.calls == {}
    assert fake.requests[0].status == 401


async def test_api_key_credentials(fake):
    fake.api_key_sid, fake.api_key_secret = "SK" + "1" * 32, "key-secret"
    http_client = AsyncTwilioHttpClient()
    client = Client(fake.api_key_sid, "key-secret", ACCOUNT_SID, http_client=http_client)
    client.api.base_url = fake.url
    try:
        call = await client.calls.create_async(
            to="+15550002222", from_="+15550001111", url="https://bot.example.com/twiml"
        )
    finally:
        await client.http_client.close()
    assert call.status == "queued"
    assert fake.requests[0].username == fake.api_key_sid


async def test_unknown_call_gets_404_with_twilio_error(fake, client):
    missing = "CA" + "f" * 32
    with pytest.raises(TwilioRestException) as error:
        await client.calls(missing).update_async(status="completed")
    assert (error.value.status, error.value.code) == (404, 20404)
    assert "was not found" in error.value.msg

    with pytest.raises(TwilioRestException) as error:
        await client.calls(missing).fetch_async()
    assert error.value.code == 20404


async def test_error_bodies_have_twilio_shape(fake):
    calls_url = f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    async with aiohttp.ClientSession() as session:
        async with session.post(calls_url, data={"To": "+1"}) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            assert await response.json() == {
                "code": 20003,
                "message": "Authenticate",
                "more_info": "https://www.twilio.com/docs/errors/20003",
                "status": 401,
            }
        token = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        auth = {"Authorization": f"Basic {token}"}
        async with session.post(calls_url, data={"From": "+1"}, headers=auth) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 21201
        async with session.get(f"{fake.url}/2010-04-01/Nope.json", headers=auth) as response:
            body = await response.json()
            assert response.status == 404 and body["code"] == 20404
            assert body["more_info"] == "https://www.twilio.com/docs/errors/20404"


async def test_hook_errors_are_recorded(fake, client):
    async def broken(info: dict) -> None:
        raise RuntimeError("hook failed")

    fake.on_create = broken
    await client.calls.create_async(to="+15550002222", from_="+15550001111", url="https://x/y")
    await asyncio.wait_for(_until(lambda: fake.hook_errors), timeout=2)
    assert str(fake.hook_errors[0]) == "hook failed"


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


async def test_updates_are_retried_on_twilio_errors_but_not_forever():
    from pipecat_realtime_twilio.phone.rest import TwilioRest

    async with FakeTwilioRest() as fake:
        call = fake.add_call()
        rest = TwilioRest(fake.account_sid, fake.auth_token, api_url=fake.url)
        try:
            fake.fail_next(2)
            await rest.hang_up(call["sid"])  # two 503s, then it goes through
            assert fake.calls[call["sid"]]["status"] == "completed"
            assert [r.status for r in fake.requests_to(call["sid"])] == [503, 503, 200]

            other = fake.add_call()
            fake.fail_next(3)
            with pytest.raises(TwilioRestException) as failed:
                await rest.hang_up(other["sid"])
            assert failed.value.status == 503
            assert len(fake.requests_to(other["sid"])) == 3  # bounded
        finally:
            await rest.close()


async def test_an_update_that_only_hangs_up_completes_the_call(fake, client):
    fake.add_call("CA" + "1" * 32)
    await client.calls("CA" + "1" * 32).update_async(twiml="<Response><Hangup/></Response>")
    assert fake.calls["CA" + "1" * 32]["status"] == "completed"
    fake.add_call("CA" + "2" * 32)
    await client.calls("CA" + "2" * 32).update_async(twiml="<Response><Say>Hi</Say></Response>")
    assert fake.calls["CA" + "2" * 32]["status"] == "in-progress"


async def test_attach_registers_a_callers_call_and_updates_end_its_stream(fake, client):
    ended: list[tuple] = []

    class Caller:  # what attach() needs of a TwilioCaller
        call_sid = "CA" + "3" * 32
        to_number, from_number = "+15550002222", "+15550001111"

        async def end_stream_by_twilio(self, twiml=None, *, url=None, method="POST"):
            ended.append((twiml, url, method))

    call = fake.attach(Caller())
    assert (call["status"], call["to"], call["from"]) == (
        "in-progress",
        "+15550002222",
        "+15550001111",
    )
    await client.calls(Caller.call_sid).update_async(
        url="https://bot.example.com/next", method="GET"
    )
    await client.calls(Caller.call_sid).update_async(status="completed")
    for _ in range(100):
        if len(ended) == 2:
            break
        await asyncio.sleep(0.01)
    assert ended == [(None, "https://bot.example.com/next", "GET"), (None, None, "POST")]
    assert fake.hook_errors == []
