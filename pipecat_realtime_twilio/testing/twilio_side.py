#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What Twilio does around a media stream, for the caller simulator (`TwilioCaller`).

:class:`TwilioSide` is mixed into :class:`~pipecat_realtime_twilio.testing.caller.TwilioCaller`:

- Signing: ``X-Twilio-Signature`` with the auth token (HMAC-SHA1) by default, or, with
  a SharedKey secret, HMAC-SHA256 plus ``X-Twilio-Webhooks-Signature-Settings:
  key=<id>,algorithm=HMAC_SHA256`` (what a Webhook Rule of Twilio's makes it send), on
  every signed request: webhook, action URL, status callbacks and the websocket upgrade.
- Stream status callbacks: when the ``<Stream>`` has a ``statusCallback``,
  ``stream-started`` after ``start``, ``stream-stopped`` when the stream ends (either
  side), ``stream-error`` for a stream that could not connect (:meth:`report_stream_error`).
- Twilio's debugger: :attr:`debugger_errors` gets ``31921`` when the *server* closes a
  stream (Twilio logs every such close as an error), ``31920`` when the websocket
  upgrade is refused; a stream that Twilio itself ended (hang-up, REST update) adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
from twilio.request_validator import (
    HMAC_SHA256,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
)

from pipecat_realtime_twilio.testing.twiml import DialResult

STREAM_HANDSHAKE_ERROR = (31920, "Stream - WebSocket - Handshake Error")
"""Twilio's debugger error for a stream whose websocket upgrade did not answer 101."""

STREAM_CLOSE_ERROR = (31921, "Stream - WebSocket - Close Error")
"""Twilio's debugger error for a stream whose websocket the server closed."""


@dataclass
class SignedAnswer:
    """The answer to a signed request.

    Parameters:
        status: The HTTP status.
        text: The body.
        content_type: The Content-Type header.
        url: The public URL requested (and signed), query included.
        params: The parameters sent.
        signature: The ``X-Twilio-Signature`` sent, if signing.
    """

    status: int
    text: str
    content_type: str | None
    url: str
    params: dict[str, str]
    signature: str | None


class TwilioSide:
    """Signing, stream status callbacks and the debugger's errors, as Twilio has them.

    Recordings (times are ``loop.time()``):

    - ``debugger_errors``: ``(time, code, text)`` as Twilio's debugger would list them.
    - ``stream_callbacks``: ``(time, event, status)`` for each status callback sent;
      ``status`` is the HTTP status, or None if the request failed.
    """

    # Set by TwilioCaller.
    account_sid: str
    call_sid: str
    stream_sid: str | None
    dial_result: DialResult | None
    sign: bool
    # TwilioCaller's: a public URL mapped onto the server, and the public voice webhook URL.
    local_url: Callable[..., str]

    if TYPE_CHECKING:

        @property
        def webhook_url(self) -> str:
            """The public voice webhook URL (TwilioCaller's)."""
            ...

    def _init_twilio_side(
        self, auth_token: str, shared_key_secret: str | None, shared_key_id: str
    ) -> None:
        self.shared_key_secret = shared_key_secret
        self.shared_key_id = shared_key_id
        self._validator = RequestValidator(shared_key_secret or auth_token)
        self.debugger_errors: list[tuple[float, int, str]] = []
        self.stream_callbacks: list[tuple[float, str, int | None]] = []
        self._callback_tasks: set[asyncio.Task] = set()
        self._stream_stopped_sent = False
        self._unconnected_sid = "MZ" + secrets.token_hex(16)

    # ---------------------------------------------------------------------------------------
    # Signing
    # ---------------------------------------------------------------------------------------

    def signature(self, url: str, params: Mapping[str, str] | None = None) -> str:
        """Compute the ``X-Twilio-Signature`` Twilio sends for a request.

        Args:
            url: The full public URL Twilio requests.
            params: The POST form parameters (none for GET and websocket upgrades).

        Returns:
            The base64 HMAC-SHA1 signature (auth token), or HMAC-SHA256 with a SharedKey.
        """
        algorithm = HMAC_SHA256 if self.shared_key_secret else None
        return self._validator.compute_signature(url, dict(params or {}), algorithm)

    def signed_headers(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, str]:
        """The signature headers of a request (none when not signing).

        Args:
            url: The full public URL.
            params: The POST form parameters.

        Returns:
            ``X-Twilio-Signature``, and with a SharedKey ``X-Twilio-Webhooks-Signature-Settings``.
        """
        if not self.sign:
            return {}
        headers = {SIGNATURE_HEADER: self.signature(url, params)}
        if self.shared_key_secret:
            headers[SIGNATURE_SETTINGS_HEADER] = f"key={self.shared_key_id},algorithm={HMAC_SHA256}"
        return headers

    async def send_signed(
        self, url: str, params: Mapping[str, str], *, method: str = "POST"
    ) -> SignedAnswer:
        """Send a request as Twilio does: signed over the public URL, to the local server.

        Args:
            url: The public URL (relative URLs resolve against the webhook).
            params: The parameters (form body for POST, query for GET).
            method: ``"POST"`` or ``"GET"``.

        Returns:
            The answer.
        """
        method = method.upper()
        public = urljoin(self.webhook_url, url)
        params = dict(params)
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
            "Cache-Control": "max-age=259200",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        body: dict[str, str] | None = params
        signed_params = params
        if method == "GET":
            sep = "&" if urlsplit(public).query else "?"
            public = public + sep + urlencode(params) if params else public
            body, signed_params = None, {}
        signing = self.signed_headers(public, signed_params)
        headers.update(signing)
        async with aiohttp.ClientSession() as session:
            async with session.request(
                method, self.local_url(public), data=body, headers=headers, allow_redirects=False
            ) as response:
                text = await response.text()
                return SignedAnswer(
                    response.status,
                    text,
                    response.headers.get("Content-Type"),
                    public,
                    params,
                    signing.get(SIGNATURE_HEADER),
                )

    # ---------------------------------------------------------------------------------------
    # Stream status callbacks and the debugger
    # ---------------------------------------------------------------------------------------

    def debugger_error(self, code: int, text: str) -> None:
        """Note an error as Twilio's debugger would show it.

        Args:
            code: Twilio's error number.
            text: Its title.
        """
        self.debugger_errors.append((asyncio.get_running_loop().time(), code, text))

    async def report_stream_error(self, error: str) -> int | None:
        """POST ``stream-error``, as Twilio does for a stream that could not connect.

        Args:
            error: The ``StreamError`` text, e.g. ``"31920 Stream - WebSocket - Handshake Error"``.

        Returns:
            The callback's HTTP status (None without a ``statusCallback`` or if it failed).
        """
        return await self._post_stream_status("stream-error", error)

    def _stream_status(self, event: str) -> None:
        """Send a status callback in the background (stream-stopped: once)."""
        if event == "stream-stopped":
            if self._stream_stopped_sent:
                return
            self._stream_stopped_sent = True
        if not self._status_callback():
            return
        task = asyncio.create_task(self._post_stream_status(event))
        self._callback_tasks.add(task)
        task.add_done_callback(self._callback_tasks.discard)

    def _status_callback(self) -> str | None:
        attributes = self.dial_result.stream_attributes if self.dial_result else {}
        return attributes.get("statusCallback") or None

    async def _post_stream_status(self, event: str, error: str | None = None) -> int | None:
        url = self._status_callback()
        if url is None or self.dial_result is None:
            return None
        attributes = self.dial_result.stream_attributes
        stream_sid = self.stream_sid or self._unconnected_sid  # Twilio names even those
        params = {
            "AccountSid": self.account_sid,
            "CallSid": self.call_sid,
            "StreamSid": stream_sid,
            "StreamName": attributes.get("name") or stream_sid,
            "StreamEvent": event,
            "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        if error is not None:
            params["StreamError"] = error
        status: int | None = None
        with contextlib.suppress(aiohttp.ClientError, OSError):
            method = attributes.get("statusCallbackMethod") or "POST"
            status = (await self.send_signed(url, params, method=method)).status
        self.stream_callbacks.append((asyncio.get_running_loop().time(), event, status))
        return status

    async def _settle_callbacks(self, timeout: float = 2.0) -> None:
        """Let status callbacks in flight finish (up to ``timeout``), then cancel the rest."""
        if self._callback_tasks:
            await asyncio.wait(list(self._callback_tasks), timeout=timeout)
        for task in list(self._callback_tasks):
            task.cancel()
