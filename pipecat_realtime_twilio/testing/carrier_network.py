#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What the fake carrier's calls share: behaviours, times, signed requests and records.

`CarrierNetwork` is the part of `~pipecat_realtime_twilio.testing.fake_carrier.FakeCarrier`
each `~pipecat_realtime_twilio.testing.carrier_call.CarrierCall` uses: the REST fake, the
times, Twilio's signed requests (``X-Twilio-Signature`` over the full public URL) and what
is recorded. `create_problems` checks a create request's parameters.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from twilio.request_validator import SIGNATURE_HEADER, RequestValidator

from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest

BEHAVIOURS = ("human", "machine", "machine_hangup", "busy", "no_answer", "failed", "fax", "invalid")
"""What a number can do when called."""

CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
"""The ``StatusCallbackEvent`` values of a call."""

RING_SECS = 0.1
"""How long a call rings before it is answered, busy or failed (real seconds)."""

AMD_QUICK_SECS = 0.3
"""When AMD tells a human, a fax or a machine's start (``Enable``) after the answer."""

MACHINE_HANGUP_SECS = 0.5
"""When a ``machine_hangup`` hangs up after the answer."""

MACHINE_RECORD_SECS = 3.0
"""How long a machine records after its beep before it hangs up."""

FAX_SECS = 3.0
"""How long a fax whistles after the answer before it hangs up."""

LONG_PAUSE_SECS = 2.0
"""A ``<Pause>`` longer than this waits ``length × time_scale`` seconds (at least this)."""

SPEECH_SECS = 0.1
"""How long a ``<Say>`` or a ``<Play>`` lasts."""

GREETING_TIMEOUT_SECS = 15.0
"""How long a human on a stream waits for the bot to say something."""

SIP_RESPONSE_CODES = {"busy": "486", "no-answer": "487", "failed": "404"}
"""The ``SipResponseCode`` of the final callback of a call that was not answered."""

Source = tuple[str, str, str]
"""Where TwiML comes from: ``("url", url, method)`` or ``("twiml", document, "POST")``."""


@dataclass
class Answer:
    """The answer to a signed request.

    Parameters:
        status: The HTTP status.
        text: The body.
        url: The public URL requested (with the query of a GET).
    """

    status: int
    text: str
    url: str


class CarrierNetwork:
    """What the fake carrier's calls share: the REST fake, times, signing and records.

    Attributes:
        rest: The REST fake the calls are made on.
        final_status: The final ``CallStatus`` sent, by call SID.
        voicemails: What was said to each number's machine after its beep.
        conversations: Each number's callers that played a human on a stream.
        problems: The runner's protocol mistakes.
        callers: Every `TwilioCaller` started (closed when the carrier stops).
    """

    session: aiohttp.ClientSession | None = None

    def _init_network(
        self,
        rest: FakeTwilioRest,
        *,
        time_scale: float,
        voicemail_greeting_secs: float,
        human_hangup_after_secs: float,
        server_url: str | None,
    ) -> None:
        self.rest = rest
        self.time_scale = time_scale
        self.voicemail_greeting_secs = voicemail_greeting_secs
        self.human_hangup_after_secs = human_hangup_after_secs
        self.server_url = server_url.rstrip("/") if server_url else None
        self.final_status: dict[str, str] = {}
        self.voicemails: defaultdict[str, list[str]] = defaultdict(list)
        self.conversations: defaultdict[str, list[TwilioCaller]] = defaultdict(list)
        self.problems: list[str] = []
        self.callers: list[TwilioCaller] = []
        self._validator = RequestValidator(rest.auth_token)

    def local_url(self, url: str) -> str:
        """Where a public URL is really requested (`server_url`'s origin, if set).

        Args:
            url: A public ``http(s)`` URL.

        Returns:
            The URL to request.
        """
        if self.server_url is None:
            return url
        server, parts = urlsplit(self.server_url), urlsplit(url)
        return urlunsplit((server.scheme, server.netloc, parts.path, parts.query, ""))

    async def send_signed(
        self, url: str, params: dict[str, str], method: str = "POST"
    ) -> Answer | None:
        """Send a request as Twilio does, signed over the full public URL.

        Args:
            url: The public URL.
            params: The form (POST) or query parameters (GET).
            method: ``"POST"`` or ``"GET"``.

        Returns:
            The answer, or None if the request failed (refused, timed out...).
        """
        if method.upper() == "GET":
            url += ("&" if urlsplit(url).query else "?") + urlencode(params)
            body: dict[str, str] | None = None
            signature = self._validator.compute_signature(url, {})
        else:
            body = params
            signature = self._validator.compute_signature(url, params)
        headers = {SIGNATURE_HEADER: signature, "User-Agent": "TwilioProxy/1.1"}
        if self.session is None:
            raise RuntimeError("the carrier is not running; use it with `async with`")
        try:
            async with self.session.request(
                method.upper(), self.local_url(url), data=body, headers=headers
            ) as response:
                return Answer(response.status, await response.text(), url)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None


def create_problems(params: dict[str, str], events: set[str]) -> list[str]:
    """What is missing or odd in a campaign call's create parameters (Twilio's Calls API).

    Args:
        params: The create form (the last value of a repeated key).
        events: The ``StatusCallbackEvent`` values asked for.

    Returns:
        One line per mistake; empty when the call was placed as the contract says.
    """
    problems: list[str] = []
    url = params.get("Url")
    if url is not None and urlsplit(url).scheme not in ("http", "https"):
        problems.append(f"Url {url!r} is not an absolute http(s) URL")
    if not params.get("StatusCallback"):
        problems.append("no StatusCallback: the runner cannot learn how the call ended")
    odd = sorted(events - set(CALL_EVENTS))
    if odd:
        problems.append(f"unknown StatusCallbackEvent values {odd}")
    if events and "completed" not in events:
        problems.append("StatusCallbackEvent without 'completed': no final callback")
    for key in ("StatusCallbackMethod", "Method", "AsyncAmdStatusCallbackMethod"):
        if params.get(key, "POST").upper() not in ("GET", "POST"):
            problems.append(f"{key}={params[key]!r} is neither GET nor POST")
    detection = params.get("MachineDetection")
    if detection not in ("Enable", "DetectMessageEnd"):
        problems.append(f"MachineDetection={detection!r}: no answering machine detection")
    elif params.get("AsyncAmd") != "true":
        problems.append("AsyncAmd is not 'true' (the fake carrier runs only async AMD)")
    elif not params.get("AsyncAmdStatusCallback"):
        problems.append("AsyncAmd without AsyncAmdStatusCallback: the verdict goes nowhere")
    timeout = params.get("Timeout")
    if timeout is None or not timeout.isdigit() or not 5 <= int(timeout) <= 600:
        problems.append(f"Timeout={timeout!r} is not a whole number of seconds in 5..600")
    return problems
