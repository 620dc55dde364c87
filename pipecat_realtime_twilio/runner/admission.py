#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Admission: who gets a line. Stream tokens, the account, capacity, drain.

A webhook that Twilio signed reserves a line for its call and gets a one-use
stream token (:class:`StreamTokens`) to put in the stream's ``<Parameter>``; the
stream must bring it back in its ``start`` message, from the right account and
within capacity, before the call may run (:meth:`Admission.check`). Calls
streaming now are :attr:`Admission.active`; a line held by a webhook is released
when its stream starts or its token expires.
"""

import base64
import hmac
import secrets
import time
from dataclasses import dataclass

from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.phone.signatures import account_allowed
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.settings import Settings

STREAM_TOKEN_TTL_SECS = 60.0
"""How long after the webhook a stream may start with its token."""


@dataclass(frozen=True)
class Refusal:
    """Why a stream may not run its call.

    Parameters:
        reason: What was wrong, for the log.
        kind: The ``prt_calls_rejected_total`` label: ``token``, ``account`` or ``busy``.
        close_code: The websocket close code the stream gets.
    """

    reason: str
    kind: str
    close_code: int


class Admission:
    """The runner's lines: reserved by webhooks, taken by streams, counted against ``MAX_CALLS``."""

    def __init__(self, settings: Settings, metrics: RunnerMetrics):
        """Initialize the lines, all free.

        Args:
            settings: The runner's settings (``MAX_CALLS``, the auth token, the account).
            metrics: Where active calls and refusals are counted.
        """
        self._settings = settings
        self._metrics = metrics
        self.tokens = StreamTokens.from_settings(settings)
        self.active: dict[str, CallSession] = {}
        self.draining = False
        self._reserved: dict[str, float] = {}  # CallSid -> when its stream token expires

    def capacity_left(self) -> int:
        """Lines free now: ``MAX_CALLS`` minus active and reserved calls."""
        now = time.time()
        for call_sid, expiry in list(self._reserved.items()):
            if expiry < now:
                del self._reserved[call_sid]
        return self._settings.max_calls - len(self.active) - len(self._reserved)

    def busy_reason(self) -> str | None:
        """Why a new call would be turned away now (draining, or full), or None."""
        if self.draining:
            return "draining"
        if self.capacity_left() <= 0:
            return f"MAX_CALLS={self._settings.max_calls} reached"
        return None

    def reserve(self, call_sid: str) -> str:
        """Hold a line for ``call_sid`` until its stream starts; return its stream token.

        Args:
            call_sid: The call the webhook announced.
        """
        self._reserved[call_sid] = time.time() + STREAM_TOKEN_TTL_SECS
        return self.tokens.issue(call_sid)

    def release(self, call_sid: str) -> None:
        """Free the line held for ``call_sid`` (its stream will not come).

        Args:
            call_sid: The call.
        """
        self._reserved.pop(call_sid, None)

    def check(self, call: CallSession) -> Refusal | None:
        """Check a started stream: its token (used up here), its account, capacity.

        Args:
            call: The call, its ``start`` read.

        Returns:
            None if the call may run (its reserved line is released), else why not.
        """
        problem = self.tokens.redeem(call.parameters.get("token"), call.call_sid)
        if problem is not None:
            return Refusal(problem, "token", 1008)
        if not account_allowed(call.start.account_sid, self._settings):
            return Refusal(f"account {call.start.account_sid!r} is not ours", "account", 1008)
        self._reserved.pop(call.call_sid, None)
        if len(self.active) >= self._settings.max_calls:
            return Refusal("MAX_CALLS reached", "busy", 1013)
        return None

    def begin(self, call: CallSession) -> None:
        """A call starts streaming: it holds a line until :meth:`end`.

        Args:
            call: The admitted call.
        """
        self.active[call.call_sid] = call
        self._metrics.active.set(len(self.active))

    def end(self, call: CallSession) -> None:
        """A call is over: its line is free.

        Args:
            call: The call.
        """
        self.active.pop(call.call_sid, None)
        self._metrics.active.set(len(self.active))


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
