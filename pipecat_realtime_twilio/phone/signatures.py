#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Checks that a request really comes from Twilio: signatures and per-call stream tokens."""

import base64
import hmac
import secrets
import time
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, WebSocket
from loguru import logger
from twilio.request_validator import RequestValidator

from pipecat_realtime_twilio.settings import Settings

STREAM_TOKEN_TTL_SECS = 60.0
"""How long after the webhook a stream may start with its token."""


def public_request_url(request: Request, settings: Settings) -> str:
    """Return the URL Twilio requested: ``PUBLIC_URL`` plus the path and query.

    Behind a tunnel or proxy the local URL differs from the one Twilio signed,
    so the signature is checked over the public one.
    """
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{settings.public_origin}{request.url.path}{query}"


async def verified_form(request: Request, settings: Settings) -> dict[str, str]:
    """Read a Twilio webhook's form parameters, checking its signature.

    Args:
        request: The incoming webhook request.
        settings: The runner's settings (auth token, public URL, switch).

    Returns:
        The form parameters.

    Raises:
        HTTPException: 403 if the signature is missing or wrong.
    """
    # Twilio posts application/x-www-form-urlencoded; the stdlib parses it exactly.
    form = dict(
        parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    )
    if not settings.twilio_validate_signatures:
        return form
    signature = request.headers.get("x-twilio-signature", "")
    url = public_request_url(request, settings)
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    if not signature or not RequestValidator(token).validate(url, form, signature):
        logger.warning(f"Refused a request to {url}: missing or wrong X-Twilio-Signature")
        raise HTTPException(status_code=403, detail="invalid Twilio signature")
    if not account_allowed(form.get("AccountSid"), settings):
        logger.warning(f"Refused a request to {url} from account {form.get('AccountSid')!r}")
        raise HTTPException(status_code=403, detail="unknown Twilio account")
    return form


def account_allowed(account_sid: str | None, settings: Settings) -> bool:
    """Whether a request or stream of ``account_sid`` may use this runner.

    With ``TWILIO_ACCOUNT_SID`` set, only that account may; otherwise any.
    """
    return settings.twilio_account_sid is None or account_sid == settings.twilio_account_sid


def websocket_signature_valid(websocket: WebSocket, settings: Settings) -> bool:
    """Whether a media-stream upgrade carries Twilio's signature over its public ``wss://`` URL.

    Twilio signs the upgrade request like a webhook without parameters.

    Args:
        websocket: The websocket, before it is accepted.
        settings: The runner's settings.

    Returns:
        True if valid (or validation is switched off).
    """
    if not settings.twilio_validate_signatures:
        return True
    signature = websocket.headers.get("x-twilio-signature", "")
    query = f"?{websocket.url.query}" if websocket.url.query else ""
    url = f"{settings.websocket_origin}{websocket.url.path}{query}"
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    return bool(signature) and RequestValidator(token).validate(url, {}, signature)


class StreamTokens:
    """Per-call media-stream tokens: HMAC-signed, bound to a CallSid, short-lived, one use.

    The webhook puts a token in the stream's ``<Parameter name="token">``; the
    stream must bring it back in its ``start`` message before any Realtime
    session is opened, so dialling the websocket directly gets nobody anything.

    Instances that share the secret (derived from ``TWILIO_AUTH_TOKEN``) accept
    each other's tokens; "one use" is enforced per instance.
    """

    def __init__(self, secret: bytes, ttl_secs: float = STREAM_TOKEN_TTL_SECS):
        """Initialize the issuer.

        Args:
            secret: The HMAC key.
            ttl_secs: How long a token stays valid.
        """
        self._secret = secret
        self._ttl = ttl_secs
        self._used: dict[str, float] = {}  # token -> its expiry

    @classmethod
    def from_settings(cls, settings: Settings) -> "StreamTokens":
        """Tokens keyed on ``TWILIO_AUTH_TOKEN`` (a random key per process without one).

        Args:
            settings: The runner's settings.
        """
        if settings.twilio_auth_token is None:
            return cls(secrets.token_bytes(32))
        auth_token = settings.twilio_auth_token.get_secret_value().encode()
        return cls(hmac.new(auth_token, b"pipecat-realtime-twilio stream token", "sha256").digest())

    def issue(self, call_sid: str, now: float | None = None) -> str:
        """A token for ``call_sid``'s stream.

        Args:
            call_sid: The call.
            now: Unix time (for tests).

        Returns:
            The token: ``expiry.signature``.
        """
        expiry = int((time.time() if now is None else now) + self._ttl)
        return f"{expiry}.{self._sign(call_sid, expiry)}"

    def redeem(self, token: str | None, call_sid: str, now: float | None = None) -> str | None:
        """Check a stream's token and use it up.

        Args:
            token: The token the stream brought (None if none).
            call_sid: The stream's call.
            now: Unix time (for tests).

        Returns:
            None if the token is good, otherwise why it is refused.
        """
        now = time.time() if now is None else now
        for used, expiry in list(self._used.items()):
            if expiry < now:
                del self._used[used]
        if not token:
            return "no stream token"
        expiry_text, _, signature = token.partition(".")
        if not expiry_text.isdigit() or not hmac.compare_digest(
            signature, self._sign(call_sid, int(expiry_text))
        ):
            return "forged stream token"
        if int(expiry_text) < now:
            return "expired stream token"
        if token in self._used:
            return "stream token already used"
        self._used[token] = int(expiry_text)
        return None

    def _sign(self, call_sid: str, expiry: int) -> str:
        digest = hmac.new(self._secret, f"{call_sid}.{expiry}".encode(), "sha256").digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
