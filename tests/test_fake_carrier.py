"""The fake carrier plays Twilio's side of outbound calls: callbacks, AMD, TwiML, updates."""

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from conftest import AUTH_TOKEN
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import SIGNATURE_HEADER, RequestValidator
from twilio.rest import Client

from pipecat_realtime_twilio.testing.fake_carrier import INVALID_NUMBER_CODE, FakeCarrier
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.server import LocalServer

pytestmark = pytest.mark.call

FROM = "+15550009999"
EVENTS = ["initiated", "ringing", "answered", "completed"]
WAIT_FOR_AMD = '<Response><Pause length="600"/><Redirect>/fallback</Redirect></Response>'
VOICEMAIL = "Hello, this is the clinic. Please call us back."


@dataclass
class Dialer:
    """A small stand-in for the runner's side: signed routes that answer as the runner will.

    ``/answer`` waits for AMD (a long ``<Pause>``, then a ``<Redirect>`` that should never
    be reached); on AMD ``human`` the call is redirected (REST ``Url``) to ``human_url``,
    on a machine's beep the voicemail is said (REST ``Twiml``), on a fax it is hung up.
    """

    rest: FakeTwilioRest
    human_url: str = ""
    server: LocalServer | None = None
    client: Client | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    unsigned: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/answer", self.answer, methods=["POST"]),
                Route("/fallback", self.answer, methods=["POST"]),
                Route("/human", self.answer, methods=["POST"]),
                Route("/status", self.answer, methods=["POST"]),
                Route("/amd", self.answer, methods=["POST"]),
            ]
        )

    async def answer(self, request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        url = str(request.url)
        valid = RequestValidator(AUTH_TOKEN).validate(
            url, form, request.headers.get(SIGNATURE_HEADER, "")
        )
        if not valid:
            self.unsigned.append(url)
            return PlainTextResponse("bad signature", status_code=403)
        path = request.url.path
        self.requests.append((path, form))
        if path == "/answer":
            return Response(WAIT_FOR_AMD, media_type="application/xml")
        if path in ("/human", "/fallback"):
            return Response(
                "<Response><Say>Hi, a person!</Say><Hangup/></Response>",
                media_type="application/xml",
            )
        if path == "/amd":
            return Response(status_code=204, background=BackgroundTask(self.on_amd, form))
        return Response(status_code=204)

    async def on_amd(self, form: dict[str, str]) -> None:
        assert self.client is not None
        calls = self.client.calls(form["CallSid"])
        try:
            if form["AnsweredBy"] in ("human", "unknown"):
                await calls.update_async(url=self.human_url or f"{self.url}/human", method="POST")
            elif form["AnsweredBy"].startswith("machine_end"):
                twiml = f"<Response><Say>{VOICEMAIL}</Say><Hangup/></Response>"
                await calls.update_async(twiml=twiml)
            else:
                await calls.update_async(status="completed")
        except Exception as exc:  # noqa: BLE001 - kept for the test to report
            self.errors.append(exc)

    def of(self, call_sid: str, path: str) -> list[dict[str, str]]:
        return [form for p, form in self.requests if p == path and form["CallSid"] == call_sid]

    async def place(self, to: str, *, drop: tuple[str, ...] = (), **overrides) -> str:
        assert self.client is not None
        options = {
            "to": to,
            "from_": FROM,
            "url": f"{self.url}/answer?campaign=1&number=7",
            "method": "POST",
            "status_callback": f"{self.url}/status?campaign=1&number=7",
            "status_callback_method": "POST",
            "status_callback_event": EVENTS,
            "timeout": 25,
            "machine_detection": "DetectMessageEnd",
            "async_amd": "true",
            "async_amd_status_callback": f"{self.url}/amd?campaign=1&number=7",
            "async_amd_status_callback_method": "POST",
            **overrides,
        }
        for name in drop:
            del options[name]
        return (await self.client.calls.create_async(**options)).sid


@asynccontextmanager
async def dialing(behaviours: dict[str, list[str]], **options):
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        dialer = Dialer(rest)
        async with LocalServer(dialer.app()) as server:
            dialer.server = server
            dialer.client = Client(
                rest.account_sid, AUTH_TOKEN, http_client=AsyncTwilioHttpClient()
            )
            dialer.client.api.base_url = rest.url
            try:
                async with FakeCarrier(rest, behaviours=behaviours, **options) as carrier:
                    yield dialer, carrier
            finally:
                await dialer.client.http_client.close()


def statuses(forms: list[dict[str, str]]) -> list[str]:
    return [form["CallStatus"] for form in forms]


async def test_each_behaviour_gives_twilios_signed_callbacks_and_rest_view():
    numbers = {
        "+15550100001": "busy",
        "+15550100002": "no_answer",
        "+15550100003": "failed",
        "+15550100004": "machine_hangup",
        "+15550100005": "fax",
        "+15550100006": "machine",
        "+15550100007": "human",
    }
    behaviours = {number: [behaviour] for number, behaviour in numbers.items()}
    async with dialing(behaviours, time_scale=0.04) as (dialer, carrier):
        sids = {behaviour: await dialer.place(number) for number, behaviour in numbers.items()}
        await carrier.wait_idle(timeout=20)

    assert carrier.problems == [] and dialer.unsigned == [] and dialer.errors == []
    expected = {
        "busy": ["initiated", "ringing", "busy"],
        "no_answer": ["initiated", "ringing", "no-answer"],
        "failed": ["initiated", "failed"],
        "machine_hangup": ["initiated", "ringing", "in-progress", "completed"],
        "fax": ["initiated", "ringing", "in-progress", "completed"],
        "machine": ["initiated", "ringing", "in-progress", "completed"],
        "human": ["initiated", "ringing", "in-progress", "completed"],
    }
    answered_by = {"fax": "fax", "machine": "machine_end_beep", "human": "human"}
    for behaviour, sid in sids.items():
        forms = dialer.of(sid, "/status")
        assert statuses(forms) == expected[behaviour], behaviour
        assert [form["SequenceNumber"] for form in forms] == [str(i) for i in range(len(forms))]
        assert {form["CallbackSource"] for form in forms} == {"call-progress-events"}
        assert all(form["Direction"] == "outbound-api" and form["Timestamp"] for form in forms)
        final = forms[-1]
        assert carrier.final_status[sid] == final["CallStatus"]
        call = dialer.rest.calls[sid]
        assert call["status"] == final["CallStatus"], behaviour  # the REST view agrees
        assert final["CallDuration"] == (call["duration"] or "0")
        assert final.get("AnsweredBy") == answered_by.get(behaviour) == call["answered_by"]
        amd = dialer.of(sid, "/amd")
        assert [form["AnsweredBy"] for form in amd] == (
            [answered_by[behaviour]] if behaviour in answered_by else []
        )
        if expected[behaviour][-1] != "completed":
            assert final["CallDuration"] == "0" and "SipResponseCode" in final
        # A <Pause length=600> would have lasted 24 s: AMD's redirect interrupted it, or the
        # callee hung up during it; it never ran out into its <Redirect>.
        assert dialer.of(sid, "/fallback") == []

    machine_amd = dialer.of(sids["machine"], "/amd")[0]
    assert int(machine_amd["MachineDetectionDuration"]) >= 1000  # after the 1 s greeting
    assert carrier.voicemails == {"+15550100006": [VOICEMAIL]}  # the human's <Say> is not kept
    assert len(dialer.of(sids["human"], "/human")) == 1
    assert dialer.of(sids["human"], "/human")[0]["CallStatus"] == "in-progress"
    # No answer rang Timeout × time_scale seconds (a lower bound only).
    [placed] = [p for p in carrier.placed if p.call_sid == sids["no_answer"]]
    assert placed.behaviour == "no_answer" and placed.params["Timeout"] == "25"
    assert ("StatusCallbackEvent", "answered") in placed.fields


async def test_invalid_numbers_are_refused_and_attempts_follow_the_list():
    behaviours = {"+15550100010": ["invalid"], "+15550100011": ["busy", "human"]}
    async with dialing(behaviours) as (dialer, carrier):
        with pytest.raises(TwilioRestException) as refused:
            await dialer.place("+15550100010")
        assert (refused.value.status, refused.value.code) == (400, INVALID_NUMBER_CODE)
        first = await dialer.place("+15550100011")
        await carrier.wait_idle(timeout=10)
        second = await dialer.place("+15550100011")
        await carrier.wait_idle(timeout=10)

    assert carrier.refused == ["+15550100010"]
    assert [call["to"] for call in dialer.rest.calls.values()] == ["+15550100011"] * 2
    assert [p.behaviour for p in carrier.calls_to("+15550100011")] == ["busy", "human"]
    assert (carrier.final_status[first], carrier.final_status[second]) == ("busy", "completed")
    assert carrier.problems == []


async def test_missing_parameters_and_failing_callbacks_are_problems():
    async with dialing({}, default="busy") as (dialer, carrier):
        await dialer.place(
            "+15550100020",
            status_callback=f"{dialer.url}/nowhere",
            drop=("machine_detection", "async_amd", "async_amd_status_callback", "timeout"),
        )
        await carrier.wait_idle(timeout=10)
    problems = "\n".join(carrier.problems)
    assert "MachineDetection=None" in problems and "Timeout=None" in problems
    assert "status callback busy" in problems and "HTTP 404" in problems
    assert carrier.final_status and list(carrier.final_status.values()) == ["busy"]


async def test_a_human_redirected_to_the_runner_hears_the_bot(runner, emulator):
    number = "+15550100030"
    async with dialing({number: ["human"]}, human_hangup_after_secs=0.5) as (dialer, carrier):
        dialer.human_url = f"{runner.url}/incoming?bot=default"
        sid = await dialer.place(number)
        await carrier.wait_idle(timeout=30)

    assert carrier.problems == [] and dialer.errors == []
    [human] = carrier.conversations[number]
    assert human.call_sid == sid and human.hung_up_at is not None
    assert bytes(human.heard) == bytes(emulator.sessions[0].responses[0].audio)
    assert statuses(dialer.of(sid, "/status"))[-1] == "completed"
    await human.wait_until(lambda: runner.app.state.runner.finished, timeout=5)
    [record] = runner.app.state.runner.finished
    assert record.call_sid == sid and record.direction == "outbound"


async def test_a_long_pause_is_scaled_and_runs_into_its_redirect():
    # A number that answers but no AMD verdict ever redirects it: the <Pause length=600>
    # runs out (scaled) and its <Redirect> is followed, as Twilio would after 600 s.
    async with dialing({}, default="human", time_scale=0.001) as (dialer, carrier):
        sid = await dialer.place("+15550100040", drop=("machine_detection", "async_amd"))
        await carrier.wait_idle(timeout=10)
    assert len(dialer.of(sid, "/fallback")) == 1
    assert carrier.final_status[sid] == "completed"
    assert any("MachineDetection=None" in problem for problem in carrier.problems)


async def test_a_rest_update_ends_a_live_stream_from_twilios_side(runner):
    number = "+15550100050"
    async with dialing({number: ["human"]}, human_hangup_after_secs=60) as (dialer, carrier):
        dialer.human_url = f"{runner.url}/incoming?bot=default"
        sid = await dialer.place(number)
        async with asyncio.timeout(15):
            while not (carrier.conversations[number] and carrier.conversations[number][0].heard):
                await asyncio.sleep(0.02)
        await dialer.client.calls(sid).update_async(status="completed")
        await carrier.wait_idle(timeout=10)

    [human] = carrier.conversations[number]
    assert human.ended_by_twilio_at is not None and human.hung_up_at is None
    assert human.sent[-1][1]["event"] == "stop"  # as Twilio ends a stream
    assert carrier.final_status[sid] == "completed" == dialer.rest.calls[sid]["status"]
    assert carrier.problems == []


async def test_a_pause_that_is_not_positive_is_a_problem():
    # Twilio refuses <Pause length="0"> (warning 13910: a positive integer); so does the fake.
    async with dialing({}, default="human") as (dialer, carrier):
        await dialer.place(
            "+15550100060",
            twiml='<Response><Pause length="0"/><Hangup/></Response>',
            drop=("url", "method"),
        )
        await carrier.wait_idle(timeout=10)
    assert any("<Pause length='0'>" in problem for problem in carrier.problems), carrier.problems
