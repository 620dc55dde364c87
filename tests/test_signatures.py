"""Twilio's two ways of signing: the auth token (HMAC-SHA1) and a SharedKey (HMAC-SHA256)."""

import httpx
import pytest
from conftest import AUTH_TOKEN, LocalServer, runner_settings
from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from pipecat_realtime_twilio.phone.signatures import signature_valid
from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import CallRejected, TwilioCaller

SHARED_SECRET = "shared-key-secret-1"
OLD_SECRET = "shared-key-secret-0"
URL = "https://bot.example.com/incoming"
FORM = {"CallSid": "CA" + "1" * 32, "From": "+15550001111", "To": "+15550002222"}
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


def settings(**values) -> Settings:
    return Settings(
        _env_file=None,
        twilio_auth_token=AUTH_TOKEN,
        public_url="https://bot.example.com",
        **values,
    )


def signed(secret: str, algorithm: str, *, key: str | None = "webhooks_sharedkey_1") -> dict:
    """Headers of a request to URL with FORM, signed with ``secret`` in ``algorithm``."""
    headers = {
        "X-Twilio-Signature": RequestValidator(secret).compute_signature(URL, FORM, algorithm)
    }
    if key is not None:
        headers[SETTINGS_HEADER] = f"key={key},algorithm={algorithm}"
    return headers


def test_the_auth_tokens_sha1_signature_is_accepted_without_the_settings_header():
    assert signature_valid(URL, FORM, signed(AUTH_TOKEN, HMAC_SHA1, key=None), settings())


def test_a_shared_keys_sha256_signature_is_accepted():
    config = settings(twilio_shared_key_secret=SHARED_SECRET)
    assert signature_valid(URL, FORM, signed(SHARED_SECRET, HMAC_SHA256), config)


def test_during_a_rotation_either_shared_key_is_accepted():
    config = settings(twilio_shared_key_secret=f"{SHARED_SECRET}, {OLD_SECRET}")
    assert signature_valid(URL, FORM, signed(OLD_SECRET, HMAC_SHA256), config)
    assert signature_valid(URL, FORM, signed(SHARED_SECRET, HMAC_SHA256), config)


@pytest.mark.parametrize(
    "headers, why",
    [
        (signed("another-secret", HMAC_SHA256), "signed with a secret we do not have"),
        (signed(AUTH_TOKEN, HMAC_SHA256), "the auth token is not the shared key"),
        (signed(SHARED_SECRET, HMAC_SHA256, key=None), "SHA256 without the settings header"),
        (
            {**signed(SHARED_SECRET, HMAC_SHA1), SETTINGS_HEADER: "key=k,algorithm=HMAC_SHA256"},
            "the header names another algorithm than the one used",
        ),
        (
            {**signed(SHARED_SECRET, HMAC_SHA256), SETTINGS_HEADER: "key=k,algorithm=HMAC_MD5"},
            "an algorithm the validator does not know",
        ),
        ({SETTINGS_HEADER: "key=k,algorithm=HMAC_SHA256"}, "no signature at all"),
    ],
)
def test_wrong_signatures_are_refused(headers, why):
    config = settings(twilio_shared_key_secret=SHARED_SECRET)
    assert not signature_valid(URL, FORM, headers, config), why


def test_a_shared_key_signature_is_refused_when_no_shared_key_is_configured():
    assert not signature_valid(URL, FORM, signed(SHARED_SECRET, HMAC_SHA256), settings())


def test_without_an_auth_token_nothing_is_accepted():
    config = Settings(_env_file=None, public_url="https://bot.example.com")
    assert not signature_valid(URL, FORM, signed("", HMAC_SHA1, key=None), config)


@pytest.mark.call
async def test_sha256_signed_webhook_and_stream_upgrade_are_accepted_wrong_ones_refused(emulator):
    server = LocalServer()
    config = runner_settings(emulator, server.url, twilio_shared_key_secret=SHARED_SECRET)
    server.app = create_app(config, load_bots(config.bots_dir))
    async with server:
        url = f"{server.url}/incoming"
        form = {**FORM, "AccountSid": "AC" + "2" * 32, "Direction": "inbound"}
        validator = RequestValidator(SHARED_SECRET)
        good = {
            "X-Twilio-Signature": validator.compute_signature(url, form, HMAC_SHA256),
            SETTINGS_HEADER: "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
        }
        bad = {**good, "X-Twilio-Signature": validator.compute_signature(url, form, HMAC_SHA1)}
        async with httpx.AsyncClient() as client:
            accepted = await client.post(url, data=form, headers=good)
            refused = await client.post(url, data=form, headers=bad)
        assert accepted.status_code == 200 and "<Stream" in accepted.text
        assert refused.status_code == 403

        stream_url = f"{config.websocket_origin}/media-stream"
        upgrade = {
            "X-Twilio-Signature": validator.compute_signature(stream_url, {}, HMAC_SHA256),
            SETTINGS_HEADER: "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
        }
        async with ws_connect(stream_url, additional_headers=upgrade) as websocket:
            await websocket.send('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
        with pytest.raises(InvalidStatus) as refusal:
            wrong = {**upgrade, "X-Twilio-Signature": upgrade["X-Twilio-Signature"][::-1]}
            async with ws_connect(stream_url, additional_headers=wrong):
                pass
        assert refusal.value.response.status_code == 403


@pytest.mark.call
async def test_a_whole_call_signed_with_a_shared_key(emulator):
    server = LocalServer()
    config = runner_settings(emulator, server.url, twilio_shared_key_secret=SHARED_SECRET)
    server.app = create_app(config, load_bots(config.bots_dir))
    runner = server.app.state.runner
    async with server:
        # Webhook, stream upgrade, status callbacks: all signed with the SharedKey.
        async with TwilioCaller(
            server_url=server.url,
            public_url=server.url,
            auth_token="not-the-key-twilio-signs-with",
            shared_key_secret=SHARED_SECRET,
        ) as caller:
            await caller.call()
            await caller.wait_quiet()
            assert len(caller.heard) > 0  # the greeting
            await caller.hangup()
            await caller.wait_until(lambda: runner.finished, timeout=5)
            await caller.wait_until(
                lambda: (
                    {e["event"] for e in runner.finished[0].stream_events}
                    >= {"stream-started", "stream-stopped"}
                ),
                timeout=5,
            )
            assert {status for _, _, status in caller.stream_callbacks} == {204}  # accepted
        # A caller whose SharedKey secret is not ours is refused at the webhook.
        async with TwilioCaller(
            server_url=server.url,
            public_url=server.url,
            auth_token=AUTH_TOKEN,
            shared_key_secret="a-secret-we-do-not-have",
        ) as stranger:
            with pytest.raises(CallRejected) as refusal:
                await stranger.dial()
            assert refusal.value.status == 403
    assert emulator.validation_errors == []
