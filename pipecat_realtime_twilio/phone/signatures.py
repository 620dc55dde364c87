#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Checks that a request really comes from Twilio: ``X-Twilio-Signature`` and the account.

Twilio signs each request over its full URL and its form parameters, in one of
two ways, and the ``twilio`` package's ``RequestValidator`` checks both:

- By default with the account's auth token and HMAC-SHA1 (``TWILIO_AUTH_TOKEN``).
- When a Webhook Rule of the account's Webhooks configuration matches the URL,
  with that rule's SharedKey and its algorithm (HMAC-SHA256); the request then
  carries ``X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256``
  and is checked with ``TWILIO_SHARED_KEY_SECRET`` (several, comma-separated,
  while a key is rotated).
"""

from collections.abc import Mapping
from urllib.parse import parse_qsl

from fastapi import Request, WebSocket
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from pipecat_realtime_twilio.logs import Throttled, field
from pipecat_realtime_twilio.phone.requests import MAX_WEBHOOK_BODY_BYTES, read_body, refusal
from pipecat_realtime_twilio.settings import Settings

_unconfigured = Throttled()


def public_request_url(request: Request, settings: Settings) -> str:
    """Return the URL Twilio requested: ``PUBLIC_URL`` plus the path and query.

    Behind a tunnel or proxy the local URL differs from the one Twilio signed,
    so the signature is checked over the public one.
    """
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{settings.public_origin}{request.url.path}{query}"


async def verified_form(request: Request, settings: Settings) -> dict[str, str]:
    """Read a Twilio webhook's form parameters, checking its signature.

    What can be checked before the body is read is checked first, so a stranger
    cannot make the runner read, hold or parse a large or slow body:

    1. With signature checks on, a request without ``X-Twilio-Signature`` gets 403.
    2. The body is read with :func:`~pipecat_realtime_twilio.phone.requests.read_body`:
       over ``MAX_WEBHOOK_BODY_BYTES`` 413 (before reading it when its
       ``Content-Length`` says so), not all there within ``HTTP_BODY_TIMEOUT_SECS`` 408.
    3. Then the form is parsed and the signature checked over it (403), and the account.

    Refusals close the connection and log one short line (method, path, reason),
    rate limited.

    Args:
        request: The incoming webhook request.
        settings: The runner's settings (auth token, public URL, switch, body deadline).

    Returns:
        The form parameters.

    Raises:
        HTTPException: 403 if the signature is missing or wrong, or the account
            another; 413 or 408 for a body too large or too slow; 400 for a
            malformed ``Content-Length``.
    """
    validate = settings.twilio_validate_signatures
    if validate and not request.headers.get(SIGNATURE_HEADER):
        raise refusal(request, 403, "no X-Twilio-Signature", kind="unsigned")
    body = await read_body(request, MAX_WEBHOOK_BODY_BYTES, settings.http_body_timeout_secs)
    # Twilio posts application/x-www-form-urlencoded; the stdlib parses it exactly.
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if not validate:
        return form
    url = public_request_url(request, settings)
    if not signature_valid(url, form, request.headers, settings):
        raise refusal(request, 403, "wrong X-Twilio-Signature", kind="bad-signature")
    if not account_allowed(form.get("AccountSid"), settings):
        account = field(form.get("AccountSid"), 40)
        raise refusal(request, 403, f"account {account} is not ours", kind="account")
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
    query = f"?{websocket.url.query}" if websocket.url.query else ""
    url = f"{settings.websocket_origin}{websocket.url.path}{query}"
    return signature_valid(url, {}, websocket.headers, settings)


def signature_valid(
    url: str, params: Mapping[str, str], headers: Mapping[str, str], settings: Settings
) -> bool:
    """Whether ``X-Twilio-Signature`` signs ``url`` and ``params``, either way Twilio signs.

    Without ``X-Twilio-Webhooks-Signature-Settings`` the signature must be the auth
    token's HMAC-SHA1; with it, that of a SharedKey secret (``TWILIO_SHARED_KEY_SECRET``)
    in the algorithm the header names. The ``twilio`` package's validator decides; an
    algorithm it does not know fails.

    Args:
        url: The public URL Twilio requested.
        params: The form parameters (none for a websocket upgrade).
        headers: The request's headers (case-insensitive, as Starlette's are).
        settings: The runner's settings (auth token, shared key secrets).

    Returns:
        True if a configured secret produced the signature.
    """
    signature = headers.get(SIGNATURE_HEADER, "")
    if not signature:
        return False
    signing = headers.get(SIGNATURE_SETTINGS_HEADER)
    if signing:
        secrets = _shared_key_secrets(settings)
        if not secrets:
            key = field(signing.split(",", 1)[0], 40)
            _unconfigured.warning(
                "shared-key",
                f"A request signed with a Twilio SharedKey ({key}) was refused: "
                "TWILIO_SHARED_KEY_SECRET is not set",
            )
            return False
    else:
        token = settings.twilio_auth_token
        secrets = [token.get_secret_value()] if token is not None else []
    algorithm = get_signature_algorithm(signing)
    params = dict(params)
    return any(
        RequestValidator(secret).validate(url, params, signature, algorithm) for secret in secrets
    )


def _shared_key_secrets(settings: Settings) -> list[str]:
    """The SharedKey secrets of ``TWILIO_SHARED_KEY_SECRET`` (comma-separated)."""
    if settings.twilio_shared_key_secret is None:
        return []
    value = settings.twilio_shared_key_secret.get_secret_value()
    return [secret.strip() for secret in value.split(",") if secret.strip()]
