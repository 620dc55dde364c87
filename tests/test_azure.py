"""Azure OpenAI: its URLs, its ``api-key`` header, and whole calls against an Azure-mode emulator.

Azure's v1 Realtime endpoint is ``wss://<resource>.openai.azure.com/openai/v1/realtime``
with the deployment as ``?model=``; it takes the resource's key as an ``api-key``
header and refuses a Bearer key with 401 and its own error body.
"""

import json

import pytest
import websockets
from conftest import phone_call
from loguru import logger
from test_emulator import make_emulator
from test_fault_matrix import first_help
from websockets.exceptions import InvalidStatus

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.configuration import connection, is_azure_url, realtime_url
from pipecat_realtime_twilio.failures import FALLBACK_LINE
from pipecat_realtime_twilio.settings import Settings, SettingsError, settings_in_effect
from pipecat_realtime_twilio.testing.emulator.faults import AZURE_KEY_MESSAGE
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.server import free_port

__all__ = ["make_emulator"]  # the emulator tests' fixture

KEY = "azure-resource-key"
DEPLOYMENT = "my-deployment"
AZURE = "wss://my-resource.openai.azure.com/openai/v1/realtime"
GREETING = "Hello, you are through to the Azure line."


# -- URLs (no sockets) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "azure"),
    [
        (AZURE, True),
        (AZURE + "?model=d", True),
        ("wss://MY-RESOURCE.OpenAI.Azure.com/openai/v1/realtime", True),
        ("wss://x.cognitiveservices.azure.com/openai/v1/realtime", True),
        ("wss://x.services.ai.azure.com/openai/v1/realtime", True),
        ("ws://127.0.0.1:8765/openai/v1/realtime?model=d", True),  # an emulator standing in
        ("wss://api.openai.com/v1/realtime", False),
        ("ws://127.0.0.1:8765/v1/realtime", False),
        ("wss://openai.azure.com.example.com/v1/realtime", False),
        ("wss://gateway.example.com/v1/realtime?x=/openai/", False),
    ],
)
def test_is_azure_url(url, azure):
    assert is_azure_url(url) is azure


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://api.openai.com/v1/realtime", "wss://api.openai.com/v1/realtime?model=m"),
        (AZURE, AZURE + "?model=m"),
        (AZURE + "?model=" + DEPLOYMENT, AZURE + "?model=" + DEPLOYMENT),
        (AZURE + "?a=1&b=2", AZURE + "?a=1&b=2&model=m"),
        (
            "wss://r.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=d",
            "wss://r.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=d",
        ),
        (
            "wss://r.openai.azure.com/openai/realtime?api-version=2025-04-01-preview",
            "wss://r.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&model=m",
        ),
    ],
)
def test_realtime_url_keeps_the_query_and_names_the_model_only_when_absent(url, expected):
    assert realtime_url(url, "m") == expected


def test_realtime_url_encodes_the_model():
    assert realtime_url(AZURE, "a b&c") == AZURE + "?model=a+b%26c"


def settings(**values) -> Settings:
    return Settings(_env_file=None, **{"openai_api_key": None, **values})


def test_azure_without_a_key_is_a_settings_error():
    with settings_in_effect(settings(openai_realtime_url=AZURE)):
        with pytest.raises(SettingsError, match="Azure OpenAI needs the resource's key"):
            connection(None, None, None)
        # A keyless gateway or emulator elsewhere still needs none.
        assert connection(None, "ws://127.0.0.1:1/v1/realtime", None)[0] == "no-key-needed"


def test_azure_with_a_key_connects_with_it():
    with settings_in_effect(
        settings(openai_realtime_url=AZURE, openai_api_key=KEY, openai_realtime_model=DEPLOYMENT)
    ):
        assert connection(None, None, None) == (KEY, AZURE, DEPLOYMENT)


async def test_the_agent_sends_azure_its_key_as_api_key():
    agent = RealtimeAgent(instructions="x", api_key=KEY, base_url=AZURE, model=DEPLOYMENT)
    assert agent.base_url == f"{AZURE}?model={DEPLOYMENT}"
    assert await agent._auth_headers() == {"api-key": KEY}

    openai = RealtimeAgent(
        instructions="x", api_key="sk-test", base_url="wss://api.openai.com/v1/realtime", model="m"
    )
    assert openai.base_url == "wss://api.openai.com/v1/realtime?model=m"
    assert await openai._auth_headers() == {"Authorization": "Bearer sk-test"}


def test_a_preview_azure_url_is_warned_about_and_the_key_never_logged():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m}"), level="INFO")
    try:
        preview = (
            "wss://r.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=d"
        )
        agent = RealtimeAgent(instructions="x", api_key=KEY, base_url=preview, model="m")
    finally:
        logger.remove(sink)
    assert agent.base_url == preview
    assert any(line.startswith("WARNING") and "preview" in line for line in lines), lines
    assert any(line.startswith("INFO") and "api-key header" in line for line in lines), lines
    assert not any(KEY in line for line in lines)


# -- the Azure-mode emulator ---------------------------------------------------------------


def body_of(refused: pytest.ExceptionInfo[InvalidStatus]) -> dict:
    response = refused.value.response
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.body)


AZURE_401 = {"error": {"code": "401", "message": AZURE_KEY_MESSAGE}}


@pytest.mark.call
async def test_the_azure_emulator_takes_an_api_key_header(make_emulator):
    emulator = await make_emulator(azure=True, api_key=KEY)
    assert emulator.url.endswith("/openai/v1/realtime")
    async with websockets.connect(
        f"{emulator.url}?model={DEPLOYMENT}", additional_headers={"api-key": KEY}
    ) as ws:
        created = json.loads(await ws.recv())
    assert created["type"] == "session.created"
    assert created["session"]["model"] == DEPLOYMENT
    (session,) = emulator.sessions
    assert session.model == DEPLOYMENT
    assert session.api_key == KEY
    assert session.headers.get("api-key") == KEY
    assert session.authorization is None


@pytest.mark.call
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Authorization": f"Bearer {KEY}"}, "bearer key instead of api-key"),
        ({}, "missing api-key"),
        ({"api-key": "wrong"}, "wrong api key"),
    ],
)
async def test_the_azure_emulator_refuses_other_keys_as_azure_does(make_emulator, headers, reason):
    emulator = await make_emulator(azure=True, api_key=KEY)
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(f"{emulator.url}?model={DEPLOYMENT}", additional_headers=headers)
    assert refused.value.response.status_code == 401
    assert body_of(refused) == AZURE_401
    assert [(r.status, r.reason, r.code) for r in emulator.rejected_handshakes] == [
        (401, reason, "401")
    ]
    assert emulator.sessions == []


@pytest.mark.call
async def test_the_azure_emulator_serves_only_azures_path(make_emulator):
    emulator = await make_emulator(azure=True)
    openai_url = emulator.url.replace("/openai/v1/realtime", "/v1/realtime")
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(openai_url, additional_headers={"api-key": KEY})
    assert refused.value.response.status_code == 404
    assert body_of(refused) == {"error": {"code": "404", "message": "Resource not found"}}

    emulator.retired_models = {"gone"}
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(f"{emulator.url}?model=gone", additional_headers={"api-key": KEY})
    assert refused.value.response.status_code == 404
    assert body_of(refused)["error"]["code"] == "DeploymentNotFound"


# -- whole calls -----------------------------------------------------------------------------


def bot(agent_class: type[RealtimeAgent] = RealtimeAgent):
    def pipeline(call):
        agent = agent_class(instructions="You are a test bot.", greeting=GREETING)
        return [call.input(), agent, call.output()]

    return pipeline


class BearerAgent(RealtimeAgent):
    """An agent that knows no Azure: it sends its key as a Bearer token, as OpenAI wants."""

    async def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.mark.call
@pytest.mark.parametrize("deployment_in_url", [True, False], ids=["model-in-url", "model-setting"])
async def test_a_call_through_azure(deployment_in_url):
    port = free_port()
    url = f"ws://127.0.0.1:{port}/openai/v1/realtime"
    values = {"openai_api_key": KEY}
    if deployment_in_url:
        values["openai_realtime_url"] = f"{url}?model={DEPLOYMENT}"
    else:
        values |= {"openai_realtime_url": url, "openai_realtime_model": DEPLOYMENT}
    async with phone_call(
        pipeline=bot(),
        settings=values,
        azure=True,
        api_key=KEY,
        port=port,
        replies=say_as_asked(),
    ) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(timeout=10)
        assert len(caller.heard) > 0

        assert emulator.rejected_handshakes == []
        session = emulator.sessions[0]
        assert session.model == DEPLOYMENT
        assert session.query == {"model": DEPLOYMENT}
        assert session.headers.get("api-key") == KEY
        assert "authorization" not in {name.lower() for name in session.headers}
        assert session.responses[0].transcript == GREETING
        assert emulator.validation_errors == []
        assert emulator.server_event_errors == []

        await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        assert not runner.finished[0].end_reason.startswith("failed")


@pytest.mark.call
@pytest.mark.parametrize(
    ("agent_class", "key", "reason"),
    [
        (BearerAgent, KEY, "bearer key instead of api-key"),
        (RealtimeAgent, "wrong-key", "wrong api key"),
    ],
    ids=["bearer", "wrong-key"],
)
async def test_a_refused_azure_key_gets_the_fallback(agent_class, key, reason):
    async with phone_call(
        pipeline=bot(agent_class),
        settings={"openai_api_key": key},
        azure=True,
        api_key=KEY,
    ) as (emulator, runner, caller):
        assert runner.settings.openai_realtime_url == emulator.url
        await caller.call()
        help = await first_help(caller, after_byte=0)
        assert help.verbs == [("Say", FALLBACK_LINE), ("Hangup", "")], help
        assert caller.heard == bytearray()
        assert emulator.sessions == []
        assert [(r.status, r.reason, r.code) for r in emulator.rejected_handshakes] == [
            (401, reason, "401")
        ]
        await caller.wait_until(lambda: runner.finished, timeout=10)
        assert runner.finished[0].end_reason == "failed: connect: 401"
