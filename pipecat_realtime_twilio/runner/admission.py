#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Admission: who gets a line. Stream tokens, the account, capacity, replays, drain.

A webhook that Twilio signed reserves a line for its call and gets a one-use
stream token (:class:`StreamTokens`) to put in the stream's ``<Parameter>``; the
token is bound to the CallSid and to every other parameter of the stream (the
bot, the numbers, the direction), so the stream must bring back exactly what the
webhook said, from the right account and within capacity, before the call may
run (:meth:`Admission.check`). Calls streaming now are :attr:`Admission.active`;
a line held by a webhook is released when its stream starts, when its pre-warmed
session ends or when its token expires, whichever comes first.

Two caps apply: ``MAX_CALLS`` (this instance's lines, reserved and streaming) and
``MAX_CALLS_TOTAL`` (the account's, across every instance sharing ``REDIS_URL``:
leases in :class:`~pipecat_realtime_twilio.runner.shared_state.SharedState`). A
token is used up in the shared state too, so it is good once across instances;
every call that had its stream is remembered there (:meth:`Admission.had_call`):
a webhook replayed for it, on any instance, gets no new token. The methods that
may ask Redis are coroutines.
"""

import base64
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pipecat_realtime_twilio.logs import field
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.phone.signatures import account_allowed
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.shared_state import SharedState
from pipecat_realtime_twilio.settings import Settings

STREAM_TOKEN_TTL_SECS = 60.0
"""How long after the webhook a stream may start with its token."""

_MAX_TOKEN_CHARS = 128


@dataclass(frozen=True)
class Refusal:
    """Why a stream may not run its call.

    Parameters:
        reason: What was wrong, for the log.
        kind: The ``prt_calls_rejected_total`` label: ``token``, ``replay``, ``account``
            or ``busy``.
        close_code: The websocket close code the stream gets.
    """

    reason: str
    kind: str
    close_code: int


class Admission:
    """The runner's lines: reserved by webhooks, taken by streams, within both caps."""

    def __init__(
        self, settings: Settings, metrics: RunnerMetrics, shared: SharedState | None = None
    ):
        """Initialize the lines, all free.

        Args:
            settings: The runner's settings (``MAX_CALLS``, the auth token, the account).
            metrics: Where active calls and refusals are counted.
            shared: What the instances share; built from ``settings`` when None.
        """
        self._settings = settings
        self._metrics = metrics
        self.shared = shared if shared is not None else SharedState(settings, metrics)
        self.tokens = StreamTokens.from_settings(settings)
        self.active: dict[str, CallSession] = {}
        self.draining = False
        self._reserved: dict[str, float] = {}  # CallSid -> when its line is released

    def capacity_left(self) -> int:
        """Lines free on this instance now: ``MAX_CALLS`` minus active and reserved calls."""
        now = time.time()
        for call_sid, expiry in list(self._reserved.items()):
            if expiry < now:
                del self._reserved[call_sid]
        return self._settings.max_calls - len(self.active) - len(self._reserved)

    def describe(self) -> dict[str, int | bool]:
        """This instance's lines, for the registry: active, reserved, max_calls, draining."""
        self.capacity_left()  # expired reservations out
        return {
            "active": len(self.active),
            "reserved": len(self._reserved),
            "max_calls": self._settings.max_calls,
            "draining": self.draining,
        }

    async def busy_reason(self) -> str | None:
        """Why a new call would be turned away now (draining, or full here or account-wide)."""
        if self.draining:
            return "draining"
        if self.capacity_left() <= 0:
            return f"MAX_CALLS={self._settings.max_calls} reached"
        if await self.shared.account_full():
            return f"MAX_CALLS_TOTAL={self._settings.max_calls_total} reached"
        return None

    async def reserve(
        self, call_sid: str, parameters: Mapping[str, str], hold_secs: float | None = None
    ) -> str | None:
        """Hold a line for ``call_sid`` until its stream starts; return its stream token.

        Args:
            call_sid: The call the webhook announced.
            parameters: The stream's ``<Parameter>`` values the token is bound to.
            hold_secs: Hold the line at most this long (the pre-warmed session's
                life); at most until the token expires in any case.

        Returns:
            The token, or None when the account's lines (``MAX_CALLS_TOTAL``) are all
            in use.
        """
        hold = STREAM_TOKEN_TTL_SECS if hold_secs is None else min(hold_secs, STREAM_TOKEN_TTL_SECS)
        if not await self.shared.take_line(call_sid, hold):
            return None
        self._reserved[call_sid] = time.time() + hold
        return self.tokens.issue(call_sid, parameters)

    def had_call(self, call_sid: str) -> None:
        """Remember that ``call_sid`` had its call (its stream came, or it was answered).

        Args:
            call_sid: The call.
        """
        self.shared.remember_call(call_sid)

    async def seen(self, call_sid: str) -> bool:
        """Whether ``call_sid`` had its call already (streaming now or over, on any instance).

        Args:
            call_sid: The call.
        """
        return call_sid in self.active or await self.shared.call_seen(call_sid)

    def release(self, call_sid: str) -> None:
        """Free the line held for ``call_sid`` (its stream will not come).

        Args:
            call_sid: The call.
        """
        self._reserved.pop(call_sid, None)
        if call_sid not in self.active:
            self.shared.free_line(call_sid)

    def handed_over(self, call_sid: str) -> None:
        """Forget the line held here for ``call_sid``: another instance took it over.

        Its stream started there.

        Args:
            call_sid: The call.
        """
        if call_sid not in self.active and self._reserved.pop(call_sid, None) is not None:
            self.shared.forget_line(call_sid)

    async def check(self, call: CallSession) -> Refusal | None:
        """Check a started stream: its token (used up, on every instance), its account, capacity.

        Args:
            call: The call, its ``start`` read.

        Returns:
            None if the call may run (its reserved line is now its line), else why not.
        """
        if await self.seen(call.call_sid):
            return Refusal("this call had its stream already", "replay", 1008)
        token = call.parameters.get("token")
        problem = self.tokens.verify(token, call.call_sid, call.parameters)
        if problem is not None:
            return Refusal(problem, "token", 1008)
        expiry, signature = StreamTokens.parts(token or "")
        if not await self.shared.use_token(signature, expiry):
            return Refusal("stream token already used", "token", 1008)
        if not account_allowed(call.start.account_sid, self._settings):
            return Refusal(f"account {field(call.start.account_sid)} is not ours", "account", 1008)
        self._reserved.pop(call.call_sid, None)
        if len(self.active) >= self._settings.max_calls:
            self.shared.free_line(call.call_sid)
            return Refusal("MAX_CALLS reached", "busy", 1013)
        if not await self.shared.take_line(call.call_sid):  # renewed while it streams
            return Refusal("MAX_CALLS_TOTAL reached", "busy", 1013)
        return None

    def begin(self, call: CallSession) -> None:
        """A call starts streaming: it holds a line until :meth:`end`.

        Args:
            call: The admitted call.
        """
        self.active[call.call_sid] = call  # seen() while active; had_call() once recorded
        self._metrics.active.set(len(self.active))

    def end(self, call: CallSession) -> None:
        """A call is over (or never ran): its line is free.

        Args:
            call: The call.
        """
        self.active.pop(call.call_sid, None)
        self._metrics.active.set(len(self.active))
        self.shared.free_line(call.call_sid)


class StreamTokens:
    """Per-call media-stream tokens: HMAC-signed, bound, short-lived, one use.

    The webhook puts a token in the stream's ``<Parameter name="token">``; the
    stream must bring it back in its ``start`` message before any Realtime
    session is opened, so dialling the websocket directly gets nobody anything.
    A token signs the CallSid, its expiry and the stream's other parameters (bot,
    numbers, direction): a stream that claims anything else is refused.

    Instances that share the secret (derived from ``TWILIO_AUTH_TOKEN``) accept
    each other's tokens. :meth:`verify` checks a token; :class:`Admission` then uses
    it up in the shared state, once across every instance.
    """

    def __init__(self, secret: bytes, ttl_secs: float = STREAM_TOKEN_TTL_SECS):
        """Initialize the issuer.

        Args:
            secret: The HMAC key.
            ttl_secs: How long a token stays valid.
        """
        self._secret = secret
        self._ttl = ttl_secs

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

    def issue(
        self, call_sid: str, parameters: Mapping[str, str] | None = None, now: float | None = None
    ) -> str:
        """A token for ``call_sid``'s stream with ``parameters``.

        Args:
            call_sid: The call.
            parameters: The stream's other ``<Parameter>`` values (a ``token`` among
                them is left out).
            now: Unix time (for tests).

        Returns:
            The token: ``expiry.signature``.
        """
        expiry = int((time.time() if now is None else now) + self._ttl)
        return f"{expiry}.{self._sign(call_sid, expiry, parameters or {})}"

    def verify(
        self,
        token: str | None,
        call_sid: str,
        parameters: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> str | None:
        """Check a stream's token against its call and parameters, without using it up.

        Args:
            token: The token the stream brought (None if none).
            call_sid: The stream's call.
            parameters: The stream's ``<Parameter>`` values (its ``token`` included or not).
            now: Unix time (for tests).

        Returns:
            None if the token is good, otherwise why it is refused.
        """
        now = time.time() if now is None else now
        if not token:
            return "no stream token"
        expiry_text, _, signature = token.partition(".")
        if (
            len(token) > _MAX_TOKEN_CHARS
            or not expiry_text.isascii()
            or not expiry_text.isdigit()
            or not hmac.compare_digest(
                signature.encode(),
                self._sign(call_sid, int(expiry_text), parameters or {}).encode(),
            )
        ):
            return "forged stream token (or parameters not the webhook's)"
        if int(expiry_text) < now:
            return "expired stream token"
        return None

    @staticmethod
    def parts(token: str) -> tuple[int, str]:
        """A verified token's expiry (Unix time) and signature.

        Args:
            token: The token (``expiry.signature``).
        """
        expiry_text, _, signature = token.partition(".")
        return (int(expiry_text) if expiry_text.isdigit() else 0), signature

    def _sign(self, call_sid: str, expiry: int, parameters: Mapping[str, str]) -> str:
        bound = {k: v for k, v in parameters.items() if k != "token"}
        message = json.dumps([call_sid, expiry, bound], sort_keys=True, separators=(",", ":"))
        digest = hmac.new(self._secret, message.encode(), "sha256").digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
