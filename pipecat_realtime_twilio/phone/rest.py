#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Twilio's REST API, through the ``twilio`` package's async client, for what TwiML can't do."""

import asyncio

import aiohttp
from loguru import logger
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from pipecat_realtime_twilio.logs import masked_number
from pipecat_realtime_twilio.settings import DEFAULT_TWILIO_API_URL, Settings

REQUEST_TIMEOUT_SECS = 10.0
"""Most seconds one REST request may take."""

RETRY_DELAYS_SECS = (0.5, 1.0)
"""Waits before retrying an update that failed on Twilio's side (5xx) or timed out."""


class TwilioRest:
    """Updates live calls through Twilio's REST API.

    The HTTP session is opened on first use (it needs a running event loop).
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_url: str = DEFAULT_TWILIO_API_URL,
        timeout: float = REQUEST_TIMEOUT_SECS,
    ):
        """Initialize the client.

        Args:
            account_sid: The account SID (AC...).
            auth_token: The account's auth token.
            api_url: Base URL of the REST API (``TWILIO_API_URL``).
            timeout: Most seconds one request may take.
        """
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._api_url = api_url.rstrip("/")
        self._timeout = timeout
        self._client: Client | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "TwilioRest | None":
        """Build the client from ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``/``TWILIO_API_URL``.

        Args:
            settings: The settings.

        Returns:
            The client, or None if the account SID or auth token is not set.
        """
        if settings.twilio_account_sid is None or settings.twilio_auth_token is None:
            return None
        return cls(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            api_url=str(settings.twilio_api_url),
        )

    def _calls(self):
        if self._client is None:
            http_client = AsyncTwilioHttpClient(timeout=self._timeout)
            self._client = Client(self._account_sid, self._auth_token, http_client=http_client)
            # Every 2010-04-01 URL is built from this domain's base_url.
            self._client.api.base_url = self._api_url
        return self._client.calls

    def warm(self) -> None:
        """Build the client now (about 0.1 s of imports), not at a call's first update.

        Call it from a running event loop (the HTTP session needs one).
        """
        self._calls()

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Make a live call leave its stream and run ``twiml`` instead.

        Args:
            call_sid: The call.
            twiml: The TwiML document to run.

        Raises:
            TwilioRestException: If Twilio refuses the update.
        """
        logger.info(f"Redirecting call {call_sid} through the REST API")
        await self._update(call_sid, twiml=twiml)

    async def create_call(self, to: str, from_: str, url: str) -> str:
        """Place an outbound call; Twilio requests ``url`` for TwiML when it is answered.

        Args:
            to: The number to call.
            from_: The caller ID (a Twilio number of the account).
            url: The voice webhook for the call.

        Returns:
            The new call's SID.

        Raises:
            TwilioRestException: If Twilio refuses the call.
        """
        logger.info(f"Calling {masked_number(to)} from {masked_number(from_)} through the REST API")
        call = await asyncio.wait_for(
            self._calls().create_async(to=to, from_=from_, url=url, method="POST"),
            self._timeout + 1,
        )
        return call.sid

    async def create_campaign_call(
        self,
        to: str,
        from_: str,
        url: str,
        *,
        status_callback: str,
        amd_callback: str,
        ring_secs: int,
    ) -> str:
        """Place a campaign's call: status callbacks for every step, and async AMD.

        Twilio POSTs ``status_callback`` at ``initiated``, ``ringing``, ``answered`` and
        ``completed`` (a final ``busy``, ``no-answer``...), requests ``url`` once the call
        is answered, and POSTs ``amd_callback`` when its answering-machine detection
        (``DetectMessageEnd``: a machine's result comes at its beep) has a result. Not
        retried: a retry could ring someone twice.

        Args:
            to: The number to call (E.164).
            from_: The caller ID.
            url: The voice webhook of the answered call.
            status_callback: Where the call's status events go.
            amd_callback: Where the AMD result goes.
            ring_secs: How long the call rings before it is ``no-answer``.

        Returns:
            The new call's SID.

        Raises:
            TwilioRestException: If Twilio refuses the call (21211: an invalid number).
            TimeoutError: If Twilio does not answer in time.
        """
        logger.info(f"Campaign call to {masked_number(to)} through the REST API")
        call = await asyncio.wait_for(
            self._calls().create_async(
                to=to,
                from_=from_,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                timeout=ring_secs,
                machine_detection="DetectMessageEnd",
                async_amd="true",
                async_amd_status_callback=amd_callback,
                async_amd_status_callback_method="POST",
            ),
            self._timeout + 1,
        )
        return call.sid

    async def fetch_status(self, call_sid: str) -> tuple[str, str | None, int | None]:
        """A call's status as Twilio has it now.

        Args:
            call_sid: The call.

        Returns:
            Its status (``in-progress``, ``completed``, ``busy``...), its ``answered_by``
            (None before AMD has a result) and its duration in seconds (None while it lasts).

        Raises:
            TwilioRestException: If Twilio refuses (404: no such call).
            TimeoutError: If Twilio does not answer in time.
        """
        call = await asyncio.wait_for(self._calls()(call_sid).fetch_async(), self._timeout + 1)
        duration = int(call.duration) if call.duration not in (None, "") else None
        return str(call.status), call.answered_by, duration

    async def redirect_to(self, call_sid: str, url: str) -> None:
        """Make a live call request ``url`` (POST, signed) for its next TwiML.

        Args:
            call_sid: The call.
            url: The voice webhook to ask.

        Raises:
            TwilioRestException: If Twilio refuses the update (e.g. the call ended).
        """
        logger.info(f"Redirecting call {call_sid} to a webhook through the REST API")
        await self._update(call_sid, url=url, method="POST")

    async def start_recording(self, call_sid: str, status_callback: str) -> str:
        """Have Twilio record a live call, each side on its own channel.

        Twilio POSTs ``status_callback`` (signed) when the recording is ready
        (``RecordingStatus=completed``, ``RecordingUrl``), after the call ends. Not
        retried: a retry after a timeout could start a second recording.

        Args:
            call_sid: The call.
            status_callback: The URL of the recording's status callbacks.

        Returns:
            The recording's SID (``RE...``).

        Raises:
            TwilioRestException: If Twilio refuses (e.g. the call is not in progress).
            TimeoutError: If Twilio does not answer in time.
            aiohttp.ClientError: If Twilio cannot be reached.
        """
        recording = await asyncio.wait_for(
            self._calls()(call_sid).recordings.create_async(
                recording_status_callback=status_callback,
                recording_status_callback_method="POST",
                recording_status_callback_event=["completed", "absent"],
                recording_channels="dual",
            ),
            self._timeout + 1,
        )
        return recording.sid

    async def hang_up(self, call_sid: str) -> None:
        """End a live call.

        Args:
            call_sid: The call.

        Raises:
            TwilioRestException: If Twilio refuses the update.
        """
        logger.info(f"Hanging up call {call_sid} through the REST API")
        await self._update(call_sid, status="completed")

    async def _update(self, call_sid: str, **changes) -> None:
        """Update a call: each try bounded by the timeout, retried on 5xx and timeouts.

        An update says what the call should become, so repeating it is harmless;
        placing a call is not retried (a retry could ring someone twice).
        """
        for retry, delay in enumerate((*RETRY_DELAYS_SECS, None)):
            try:
                await asyncio.wait_for(
                    self._calls()(call_sid).update_async(**changes), self._timeout + 1
                )
                return
            except TwilioRestException as e:
                if delay is None or e.status < 500:
                    raise
                problem = f"HTTP {e.status}"
            except (TimeoutError, aiohttp.ClientError) as e:
                if delay is None:
                    raise
                problem = type(e).__name__
            logger.warning(f"REST update of call {call_sid} failed ({problem}); retry {retry + 1}")
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        if self._client is not None:
            http_client = self._client.http_client
            self._client = None
            if isinstance(http_client, AsyncTwilioHttpClient):
                await http_client.close()


__all__ = ["TwilioRest", "TwilioRestException"]
