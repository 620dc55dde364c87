#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Checks that a request really comes from Twilio: ``X-Twilio-Signature`` and the account."""

from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, WebSocket
from loguru import logger
from twilio.request_validator import RequestValidator

from pipecat_realtime_twilio.settings import Settings


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
