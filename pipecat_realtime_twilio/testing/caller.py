#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A phone caller that behaves like Twilio placing a call to a bot.

`TwilioCaller` plays Twilio's side of an inbound call against a locally
running bot server:

1. ``dial()`` POSTs the signed voice webhook (``X-Twilio-Signature`` computed
   over the *public* URL, exactly as Twilio signs it) and parses the TwiML that
   comes back (``<Connect><Stream url="wss://...">`` with its ``<Parameter>``
   elements, the Connect ``action`` and any verbs after it).
2. ``connect()`` opens the Media Streams websocket with a signed upgrade
   request, sends the ``connected`` and ``start`` messages and then, like
   Twilio, streams 20 ms μ-law ``media`` packets in real time, silence included.
3. Audio the server sends is played by a simulated phone: a playback buffer
   drained by a real-time clock, 160 bytes every 20 ms. ``mark`` messages are
   echoed when playback reaches them and ``clear`` empties the buffer and
   echoes every pending mark at once, just as Twilio does.

Everything is recorded with event-loop timestamps (``loop.time()``) so tests
can check what the phone heard, when, and what was sent.

Example::

    async with TwilioCaller(
        server_url=server.url, public_url="https://bot.example.com", auth_token=TOKEN
    ) as caller:
        await caller.call()
        await caller.say(tone(500))
        await caller.wait_heard(1000)
        await caller.hangup()

Caller speech comes from :mod:`pipecat_realtime_twilio.testing.sounds` (``tone``,
``silence``, WAV files); TwiML parsing from :mod:`pipecat_realtime_twilio.testing.twiml`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipecat_realtime_twilio.audio import (
    BYTES_PER_MS,
    ULAW_SILENCE,
)
from pipecat_realtime_twilio.testing.twilio_side import (
    STREAM_CLOSE_ERROR,
    STREAM_HANDSHAKE_ERROR,
    TwilioSide,
)
from pipecat_realtime_twilio.testing.twiml import DialResult, parse_twiml

SIGNATURE_HEADER = "X-Twilio-Signature"
"""The header carrying Twilio's request signature."""

DTMF_DIGITS = "0123456789*#"
"""The digits a Media Stream ``dtmf`` event can carry."""


def make_sid(prefix: str) -> str:
    """Make a Twilio-style SID: a two-letter prefix and 32 lowercase hex digits.

    Args:
        prefix: The resource prefix, e.g. ``"CA"`` (call), ``"MZ"`` (stream), ``"AC"``.

    Returns:
        A random SID such as ``"CA5f0c..."``.
    """
    return prefix + secrets.token_hex(16)


# --------------------------------------------------------------------------------------------
# TwiML
# --------------------------------------------------------------------------------------------


class CallRejected(Exception):
    """The voice webhook answered with a non-2xx status, as Twilio would report an error."""

    def __init__(self, status: int, body: str):
        """Initialize the error.

        Args:
            status: The HTTP status the webhook returned.
            body: The response body.
        """
        super().__init__(f"voice webhook answered HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


# --------------------------------------------------------------------------------------------
# The caller
# --------------------------------------------------------------------------------------------


@dataclass
class _Mark:
    name: str
    target: int  # playback position (played + cleared bytes) the mark sits at
    due: float | None = None  # loop time its echo is due, once playback reached it


class TwilioCaller(TwilioSide):
    """Plays Twilio's side of a phone call against a local bot server.

    The caller sends what Twilio sends (signed webhook, signed websocket upgrade,
    ``connected``/``start``/``media``/``dtmf``/``stop`` messages with increasing
    sequence numbers) and reacts to the server the way a Twilio Media Stream
    does: server audio is played in real time by a simulated phone, marks are
    echoed when playback reaches them and ``clear`` flushes the buffer.

    Recordings (times are ``loop.time()`` of the running event loop):

    - ``sent_audio``: every μ-law byte sent in ``media`` events, silence included.
    - ``heard``: every μ-law byte of server audio the phone played, in order.
    - ``playback``: one ``(time, bytes_played, offset_in_heard)`` per playback tick,
      where ``time`` is the tick's slot on the drift-free ``frame_ms`` grid. A tick
      plays (up to a frame of) the audio that had arrived by its time, over
      ``[time, time + bytes_played / 8 ms)``. :meth:`played_runs` gives the same on
      the stream's clock (samples since ``started_at``, as ``media`` timestamps count).
    - ``received``: every message from the server as ``(time, message)``; messages
      that are not JSON objects are recorded as ``{"_raw": ..., "_error": ...}``.
    - ``marks_received``/``marks_echoed``: ``(time, name)`` pairs.
    - ``clears``: times a ``clear`` was applied.
    - ``lead``: ``(time, ms)`` for each ``media`` message: the audio waiting in the
      phone's playback buffer right after it arrived (what the server keeps ahead).
    - ``sent``: every message sent to the server as ``(time, message)``.
    - ``errors``: ``(time, description)`` of protocol errors by the server.
    - ``stream_ended_at``/``close_code``/``close_reason``: set when the *server*
      closed the stream; ``hung_up_at`` when the caller hung up.
    - ``ended_by_twilio_at``/``redirect_result``: set when a REST update of the live
      call ended the stream from Twilio's side (:meth:`end_stream_by_twilio`), with
      the new TwiML parsed (None for ``Status=completed``).
    - ``debugger_errors``, ``stream_callbacks``: see
      :class:`~pipecat_realtime_twilio.testing.twilio_side.TwilioSide` (signing with a
      SharedKey, stream status callbacks).
    """

    def __init__(
        self,
        *,
        server_url: str,
        public_url: str,
        auth_token: str,
        account_sid: str | None = None,
        from_number: str = "+15550001111",
        to_number: str = "+15550002222",
        call_sid: str | None = None,
        webhook_path: str = "/incoming",
        sign: bool = True,
        frame_ms: int = 20,
        shared_key_secret: str | None = None,
        shared_key_id: str = "webhooks_sharedkey_test",
    ):
        """Initialize the caller.

        Args:
            server_url: Where the bot server really listens, e.g. ``http://127.0.0.1:8765``.
            public_url: The origin the bot believes Twilio reaches it at, e.g.
                ``https://bot.example.com``; signatures are computed over public URLs and
                every public URL is mapped onto ``server_url`` to be requested.
            auth_token: The account's auth token, used to sign requests.
            account_sid: The account SID; a random ``AC...`` SID by default.
            from_number: The caller's number (``From``).
            to_number: The number called (``To``).
            call_sid: The call SID; a random ``CA...`` SID by default.
            webhook_path: Path of the voice webhook below ``public_url``.
            sign: Whether to send ``X-Twilio-Signature`` headers.
            frame_ms: Duration of one media packet and one playback tick.
            shared_key_secret: Sign with this SharedKey secret (HMAC-SHA256, with the
                ``X-Twilio-Webhooks-Signature-Settings`` header) instead of the auth token.
            shared_key_id: The SharedKey's id, named in that header.
        """
        if frame_ms <= 0:
            raise ValueError("frame_ms must be positive")
        self.server_url = server_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid or make_sid("AC")
        self.from_number = from_number
        self.to_number = to_number
        self.call_sid = call_sid or make_sid("CA")
        self.webhook_path = webhook_path if webhook_path.startswith("/") else "/" + webhook_path
        self.sign = sign
        self.frame_ms = frame_ms
        self.frame_bytes = frame_ms * BYTES_PER_MS
        self.poll_interval = 0.005  # how often the wait_* methods check (seconds)
        self.stream_sid: str | None = None
        self.dial_result: DialResult | None = None
        self._init_twilio_side(auth_token, shared_key_secret, shared_key_id)

        # Recordings.
        self.sent_audio = bytearray()
        self.heard = bytearray()
        self.playback: list[tuple[float, int, int]] = []
        self.received: list[tuple[float, dict]] = []
        self.sent: list[tuple[float, dict]] = []
        self.marks_received: list[tuple[float, str]] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.clears: list[float] = []
        self.lead: list[tuple[float, float]] = []
        self.errors: list[tuple[float, str]] = []
        self.started_at: float | None = None
        self.stream_ended_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.hung_up_at: float | None = None
        self.ended_by_twilio_at: float | None = None
        self.redirect_result: DialResult | None = None

        # Websocket and tasks.
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task] = []
        self._media_task: asyncio.Task | None = None
        self._playback_task: asyncio.Task | None = None
        self._receive_task: asyncio.Task | None = None
        self._side_tasks: set[asyncio.Task] = set()
        self._send_lock = asyncio.Lock()
        self._sequence = 1
        self._chunk = 0
        self._ended = asyncio.Event()
        self._hanging_up = False
        self._closed = False

        # Caller speech waiting to be sent.
        self._outgoing = bytearray()
        self._said_total = 0  # bytes ever queued with say()
        self._said_sent = 0  # of those, bytes already sent
        self._say_waiters: deque[tuple[int, asyncio.Future]] = deque()

        # Phone playback.
        self._playbuf = bytearray()
        self._arrivals: deque[tuple[int, float]] = deque()  # (end position, arrival time)
        self._arrived = 0  # end position of the audio that had arrived by the last tick
        self._consumed = 0  # bytes played or cleared
        self._marks: deque[_Mark] = deque()
        self._mark_timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------------------------------
    # URLs and signatures
    # ---------------------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str:
        """The public voice webhook URL, e.g. ``https://bot.example.com/incoming``."""
        return self.public_url + self.webhook_path

    @property
    def action_url(self) -> str | None:
        """The public ``<Connect action>`` URL from the TwiML, if there was one."""
        return self.dial_result.action_url if self.dial_result else None

    @property
    def ended(self) -> bool:
        """Whether the media stream is over (server closed it or the caller hung up)."""
        return self._ended.is_set()

    def local_url(self, url: str, *, websocket: bool = False) -> str:
        """Map a public URL onto ``server_url``, where the bot really listens.

        The path and query are kept; a path prefix of ``public_url`` is replaced by
        ``server_url``'s path. Relative URLs resolve against the webhook URL.

        Args:
            url: A public URL (``https://...`` or ``wss://...``) or a relative one.
            websocket: Whether to produce a ``ws://`` (or ``wss://``) URL.

        Returns:
            The URL to actually request.
        """
        parts = urlsplit(urljoin(self.webhook_url, url))
        public = urlsplit(self.public_url)
        server = urlsplit(self.server_url)
        path = parts.path
        prefix = public.path.rstrip("/")
        if prefix and parts.netloc == public.netloc and path.startswith(prefix):
            path = path[len(prefix) :]
        path = server.path.rstrip("/") + (path if path.startswith("/") else "/" + path)
        scheme = server.scheme
        if websocket:
            scheme = "wss" if server.scheme in ("https", "wss") else "ws"
        return urlunsplit((scheme, server.netloc, path, parts.query, ""))

    def webhook_params(self, call_status: str = "ringing") -> dict[str, str]:
        """The form parameters Twilio posts to the voice webhook of an inbound call.

        Args:
            call_status: The ``CallStatus`` to report.

        Returns:
            The parameters (extend or override them with ``dial(extra_params=...)``).
        """
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": call_status,
            "Called": self.to_number,
            "CalledCountry": "US",
            "Caller": self.from_number,
            "CallerCountry": "US",
            "Direction": "inbound",
            "From": self.from_number,
            "FromCountry": "US",
            "To": self.to_number,
            "ToCountry": "US",
        }

    # ---------------------------------------------------------------------------------------
    # Placing the call
    # ---------------------------------------------------------------------------------------

    async def request_twiml(
        self, url: str, params: Mapping[str, str], *, method: str = "POST"
    ) -> DialResult:
        """Request a TwiML document from the bot as Twilio does, signed.

        Args:
            url: The public URL to request (relative URLs resolve against the webhook).
            params: The parameters to send (form body for POST, query for GET).
            method: ``"POST"`` or ``"GET"``.

        Returns:
            The parsed answer.

        Raises:
            CallRejected: If the server answers with a non-2xx status.
            TwimlError: If the answer is not TwiML.
        """
        answer = await self.send_signed(url, params, method=method)
        if not 200 <= answer.status < 300:
            raise CallRejected(answer.status, answer.text)
        result = parse_twiml(
            answer.text, url=answer.url, status=answer.status, content_type=answer.content_type
        )
        result.params = answer.params
        result.signature = answer.signature
        return result

    async def dial(
        self,
        extra_params: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
        method: str = "POST",
    ) -> DialResult:
        """Ring the bot: request the signed voice webhook and parse its TwiML.

        Args:
            extra_params: Parameters to add to (or override in) `webhook_params`, e.g.
                ``{"Direction": "outbound-api", "CallStatus": "in-progress"}`` when
                answering an outbound call.
            url: The public URL to request instead of `webhook_url` (e.g. the ``Url``
                of an outbound call).
            method: ``"POST"`` (Twilio's default) or ``"GET"``.

        Returns:
            The parsed answer, also kept as `dial_result`.

        Raises:
            CallRejected: If the webhook answers with a non-2xx status.
            TwimlError: If the answer is not TwiML.
        """
        params = self.webhook_params()
        params.update(extra_params or {})
        self.dial_result = await self.request_twiml(url or self.webhook_url, params, method=method)
        return self.dial_result

    def load_twiml(self, twiml: str) -> DialResult:
        """Use TwiML given directly (e.g. an outbound call's ``Twiml`` parameter).

        Args:
            twiml: The TwiML document.

        Returns:
            The parsed document, also kept as `dial_result`.
        """
        self.dial_result = parse_twiml(twiml, url=self.webhook_url)
        return self.dial_result

    async def connect(self) -> None:
        """Open the media stream named by the TwiML and start streaming, as Twilio does.

        Connects to the ``<Stream url>`` (mapped onto ``server_url``) with the upgrade
        request signed over the URL exactly as written in the TwiML, sends
        ``connected`` and ``start``, then starts three tasks: the real-time media
        sender (one packet per ``frame_ms``, silence when nothing is queued), the
        receiver and the phone's playback clock.

        Raises:
            RuntimeError: If there is no TwiML with a ``<Connect><Stream>`` yet, or the
                caller is already connected.
        """
        if self.dial_result is None or not self.dial_result.stream_url:
            raise RuntimeError("no <Connect><Stream url> to connect to; call dial() first")
        if self._ws is not None:
            raise RuntimeError("already connected")
        stream_url = self.dial_result.stream_url
        try:
            self._ws = await ws_connect(
                self.local_url(stream_url, websocket=True),
                additional_headers=self.signed_headers(stream_url),
                user_agent_header="Twilio.TmeWs/1.0",
                compression=None,
                max_size=None,
                ping_interval=None,
                open_timeout=10,
            )
        except InvalidStatus:
            self.debugger_error(*STREAM_HANDSHAKE_ERROR)
            raise
        loop = asyncio.get_running_loop()
        self.stream_sid = make_sid("MZ")
        await self._send_message({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send_event(
            {
                "event": "start",
                "sequenceNumber": None,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": dict(self.dial_result.parameters),
                },
                "streamSid": self.stream_sid,
            }
        )
        self.started_at = start = loop.time()
        self._stream_status("stream-started")
        self._receive_task = asyncio.create_task(self._receive_loop(), name="caller-receive")
        self._media_task = asyncio.create_task(self._media_loop(start), name="caller-media")
        self._playback_task = asyncio.create_task(self._playback_loop(start), name="caller-play")
        self._tasks = [self._receive_task, self._media_task, self._playback_task]

    async def call(self) -> DialResult:
        """Dial the webhook, then connect the media stream.

        Returns:
            The parsed webhook answer.
        """
        result = await self.dial()
        await self.connect()
        return result

    async def follow_action(self, extra_params: Mapping[str, str] | None = None) -> DialResult:
        """Request the ``<Connect action>`` URL, as Twilio does once the stream has ended.

        Args:
            extra_params: Parameters to add to (or override in) the call parameters.

        Returns:
            The parsed TwiML of the action URL.

        Raises:
            RuntimeError: If the TwiML had no Connect action.
        """
        if self.dial_result is None or not self.dial_result.action_url:
            raise RuntimeError("the TwiML had no <Connect action>")
        status = "completed" if self.hung_up_at is not None else "in-progress"
        params = self.webhook_params(status)
        params.update(extra_params or {})
        return await self.request_twiml(
            self.dial_result.action_url, params, method=self.dial_result.connect_method
        )

    # ---------------------------------------------------------------------------------------
    # Caller actions
    # ---------------------------------------------------------------------------------------

    def say(self, ulaw: bytes) -> asyncio.Future:
        """Queue caller audio to send after whatever is already queued.

        Args:
            ulaw: 8 kHz μ-law audio (see `tone`, `silence`, `load_wav_as_ulaw`).

        Returns:
            A future that completes when the last packet carrying this audio was sent.
            It is cancelled if the call ends first.

        Raises:
            RuntimeError: If the call has already ended.
        """
        if self.ended or self._closed:
            raise RuntimeError("the call has ended")
        future = asyncio.get_running_loop().create_future()
        if not ulaw:
            future.set_result(None)
            return future
        self._outgoing += ulaw
        self._said_total += len(ulaw)
        self._say_waiters.append((self._said_total, future))
        return future

    @property
    def pending_speech_ms(self) -> float:
        """Milliseconds of queued caller audio not yet sent."""
        return len(self._outgoing) / BYTES_PER_MS

    async def press(self, digits: str, gap_ms: int = 100) -> None:
        """Press keys: send one ``dtmf`` event per digit.

        Args:
            digits: Digits from ``0123456789*#``.
            gap_ms: Pause between digits in milliseconds.

        Raises:
            ValueError: On a digit Twilio cannot report.
        """
        bad = [digit for digit in digits if digit not in DTMF_DIGITS]
        if bad:
            raise ValueError(f"not DTMF digits: {''.join(bad)!r}")
        for index, digit in enumerate(digits):
            if index:
                await asyncio.sleep(gap_ms / 1000)
            await self._send_event(
                {
                    "event": "dtmf",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": None,
                    "dtmf": {"track": "inbound_track", "digit": digit},
                }
            )

    async def send_raw(self, data: str | bytes) -> None:
        """Send anything on the websocket, e.g. a malformed message.

        Args:
            data: A text (str) or binary (bytes) frame.
        """
        ws = self._require_ws()
        async with self._send_lock:
            await ws.send(data)

    async def hangup(self) -> None:
        """Hang up: stop streaming, send ``stop`` and close the websocket, as Twilio does.

        Does nothing if the stream already ended.
        """
        if await self._stop_stream():
            self.hung_up_at = asyncio.get_running_loop().time()
            await self._stream_stopped()

    async def end_stream_by_twilio(
        self, twiml: str | None = None, *, url: str | None = None, method: str = "POST"
    ) -> None:
        """The live call was updated (REST API): Twilio leaves the stream for what is new.

        Like Twilio, sends ``stop`` and closes the websocket (code 1000), and records
        :attr:`ended_by_twilio_at` and the new TwiML in :attr:`redirect_result`
        (``url``: requested, signed, as Twilio does); neither for ``Status=completed``.
        Does nothing if the stream already ended.

        Args:
            twiml: The update's ``Twiml``.
            url: The update's ``Url``, requested for the new TwiML.
            method: The update's ``Method`` for ``url``.
        """
        if not await self._stop_stream():
            return
        self.ended_by_twilio_at = asyncio.get_running_loop().time()
        await self._stream_stopped()
        if twiml is not None:
            self.redirect_result = parse_twiml(twiml, url=self.webhook_url)
        elif url is not None:
            params = self.webhook_params("in-progress")
            self.redirect_result = await self.request_twiml(url, params, method=method)

    async def _stop_stream(self) -> bool:
        """End the stream from Twilio's side: ``stop``, then close; whether it was live."""
        if self._ws is None or self.ended or self._hanging_up:
            return False
        self._hanging_up = True
        await self._cancel_tasks([self._media_task, self._playback_task])
        with contextlib.suppress(ConnectionClosed):
            await self._send_event(
                {
                    "event": "stop",
                    "sequenceNumber": None,
                    "streamSid": self.stream_sid,
                    "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                }
            )
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            await asyncio.wait_for(self._ws.close(1000), timeout=5)
        return True

    async def _stream_stopped(self) -> None:
        if self._receive_task is not None:
            await self._cancel_tasks([self._receive_task], wait=2.0)
        self._finish()
        self._stream_status("stream-stopped")

    async def close(self) -> None:
        """Stop all tasks and close the websocket quietly. Safe to call repeatedly."""
        if self._closed:
            return
        self._closed = True
        await self._settle_callbacks()
        await self._cancel_tasks(list(self._tasks) + list(self._side_tasks))
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), timeout=2)
        self._finish()

    async def __aenter__(self) -> TwilioCaller:
        """Return the caller; `close` runs on exit."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the caller."""
        await self.close()

    # ---------------------------------------------------------------------------------------
    # Inspection
    # ---------------------------------------------------------------------------------------

    @property
    def heard_ms(self) -> float:
        """Milliseconds of server audio the phone has played."""
        return len(self.heard) / BYTES_PER_MS

    @property
    def buffered_ms(self) -> float:
        """Milliseconds of server audio waiting in the phone's playback buffer."""
        return len(self._playbuf) / BYTES_PER_MS

    def events(self, event: str) -> list[dict]:
        """Messages received from the server with the given ``event``.

        Args:
            event: E.g. ``"media"``, ``"mark"`` or ``"clear"``.

        Returns:
            The messages, in arrival order.
        """
        return [msg for _, msg in self.received if msg.get("event") == event]

    def gaps(self, min_ms: float = 0.0) -> list[tuple[float, float]]:
        """Silent stretches between played server audio, e.g. to find buffer underruns.

        A tick that played a full frame is continuous sound; silence starts where a
        tick played less (the rest of that tick) and lasts until a later tick plays
        server audio again. Silence before the first and after the last played audio
        is not a gap.

        Args:
            min_ms: Only report gaps longer than this.

        Returns:
            ``(start_time, duration_ms)`` for each gap, in order.
        """
        found: list[tuple[float, float]] = []
        silent_since: float | None = None
        seen_audio = False
        for when, played, _ in self.playback:
            if played > 0:
                if seen_audio and silent_since is not None:
                    duration = (when - silent_since) * 1000
                    if duration > min_ms and duration > 1e-6:
                        found.append((silent_since, duration))
                seen_audio = True
                silent_since = None
                if played < self.frame_bytes:
                    silent_since = when + played / BYTES_PER_MS / 1000
            elif seen_audio and silent_since is None:
                silent_since = when
        return found

    def played_runs(self) -> list[tuple[int, bytes]]:
        """What the phone played, on the stream's clock, as runs of unbroken sound.

        The stream's clock is the one of the ``media`` timestamps: 8 kHz samples since
        the stream started (playback ticks on the same grid as the media packets).

        Returns:
            ``(sample, ulaw)`` per run: where it started and what was played, in order.
        """
        if self.started_at is None:
            return []
        runs: list[tuple[int, bytearray]] = []
        end: int | None = None
        for when, played, start in self.playback:
            if not played:
                continue
            sample = round((when - self.started_at) * 1000 * BYTES_PER_MS)
            audio = self.heard[start : start + played]
            if runs and sample == end:
                runs[-1][1].extend(audio)
            else:
                runs.append((sample, bytearray(audio)))
            end = sample + played
        return [(sample, bytes(audio)) for sample, audio in runs]

    def play_time_of(self, offset: int) -> float | None:
        """The loop time at which byte ``offset`` of `heard` was played.

        Args:
            offset: An index into `heard`.

        Returns:
            The time, or None if that byte has not been played.
        """
        for when, played, start in self.playback:
            if start <= offset < start + played:
                return when + (offset - start) / BYTES_PER_MS / 1000
        return None

    async def wait_until(
        self,
        predicate: Callable[[], Any],
        timeout: float = 5.0,
        *,
        interval: float | None = None,
        message: str | None = None,
    ) -> None:
        """Wait until ``predicate()`` is true.

        Args:
            predicate: A function of no arguments, polled every ``interval`` seconds.
            timeout: Seconds to wait at most.
            interval: Seconds between polls; :attr:`poll_interval` by default.
            message: Describes the condition in the timeout error.

        Raises:
            TimeoutError: If the predicate is still false after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() >= deadline:
                what = message or getattr(predicate, "__name__", repr(predicate))
                raise TimeoutError(
                    f"timed out after {timeout:g} s waiting for {what} "
                    f"(heard {self.heard_ms:.0f} ms, {len(self.received)} messages received, "
                    f"ended={self.ended})"
                )
            await asyncio.sleep(interval or self.poll_interval)

    async def wait_heard(self, ms: float, timeout: float = 5.0) -> None:
        """Wait until the phone has played at least ``ms`` of server audio.

        Args:
            ms: Milliseconds of played server audio to wait for.
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: If not enough audio was played in time.
        """
        need = round(ms * BYTES_PER_MS)
        await self.wait_until(
            lambda: len(self.heard) >= need, timeout, message=f"{ms:g} ms of played audio"
        )

    async def wait_quiet(
        self, after: int = 0, quiet_ms: float = 600.0, timeout: float = 10.0
    ) -> None:
        """Wait until audio past byte ``after`` of :attr:`heard` was played, then silence.

        Silence means nothing is buffered and nothing was played for ``quiet_ms``:
        the bot has finished saying what it started to say.

        Args:
            after: Byte offset in :attr:`heard` that new audio must pass.
            quiet_ms: How long the phone must stay silent.
            timeout: Seconds to wait at most, for each of the two conditions.

        Raises:
            TimeoutError: If no new audio played, or it did not stop, in time.
        """
        await self.wait_until(
            lambda: len(self.heard) > after, timeout, message=f"audio past byte {after}"
        )
        loop = asyncio.get_running_loop()

        def quiet() -> bool:
            last = next((t for t, played, _ in reversed(self.playback) if played), None)
            return (
                not self._playbuf and last is not None and (loop.time() - last) * 1000 >= quiet_ms
            )

        await self.wait_until(quiet, timeout, message=f"{quiet_ms:g} ms of silence")

    async def wait_event(self, event: str, count: int = 1, timeout: float = 5.0) -> dict:
        """Wait until ``count`` messages with ``event`` were received from the server.

        Args:
            event: The event name, e.g. ``"mark"``.
            count: How many such messages to wait for.
            timeout: Seconds to wait at most.

        Returns:
            The ``count``-th such message.
        """
        await self.wait_until(
            lambda: len(self.events(event)) >= count,
            timeout,
            message=f"{count} {event!r} message(s)",
        )
        return self.events(event)[count - 1]

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Wait until the stream is over (the server closed it or the caller hung up).

        Args:
            timeout: Seconds to wait at most.
        """
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"the stream did not end within {timeout:g} s") from None

    # ---------------------------------------------------------------------------------------
    # Internals: sending
    # ---------------------------------------------------------------------------------------

    def _require_ws(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("not connected; call connect() first")
        return self._ws

    async def _send_message(self, message: dict) -> None:
        ws = self._require_ws()
        async with self._send_lock:
            await ws.send(json.dumps(message))
            self.sent.append((asyncio.get_running_loop().time(), message))

    async def _send_event(self, message: dict) -> None:
        """Send a message, filling in its ``sequenceNumber`` in sending order."""
        ws = self._require_ws()
        async with self._send_lock:
            message["sequenceNumber"] = str(self._sequence)
            self._sequence += 1
            await ws.send(json.dumps(message))
            self.sent.append((asyncio.get_running_loop().time(), message))

    async def _media_loop(self, start: float) -> None:
        loop = asyncio.get_running_loop()
        period = self.frame_ms / 1000
        tick = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                delay = start + tick * period - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._send_media_packet(timestamp_ms=tick * self.frame_ms)
                tick += 1

    async def _send_media_packet(self, timestamp_ms: int) -> None:
        chunk = bytes(self._outgoing[: self.frame_bytes])
        del self._outgoing[: len(chunk)]
        self._said_sent += len(chunk)
        if len(chunk) < self.frame_bytes:
            chunk += bytes([ULAW_SILENCE]) * (self.frame_bytes - len(chunk))
        self._chunk += 1
        await self._send_event(
            {
                "event": "media",
                "sequenceNumber": None,
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(timestamp_ms),
                    "payload": base64.b64encode(chunk).decode("ascii"),
                },
                "streamSid": self.stream_sid,
            }
        )
        self.sent_audio += chunk
        while self._say_waiters and self._say_waiters[0][0] <= self._said_sent:
            _, future = self._say_waiters.popleft()
            if not future.done():
                future.set_result(None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        task.add_done_callback(_consume_exception)

    # ---------------------------------------------------------------------------------------
    # Internals: receiving and playback
    # ---------------------------------------------------------------------------------------

    def _error(self, description: str) -> None:
        self.errors.append((asyncio.get_running_loop().time(), description))

    async def _receive_loop(self) -> None:
        ws = self._require_ws()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                self._handle_message(loop.time(), raw)
        if not self._hanging_up and not self._closed:
            self.stream_ended_at = loop.time()
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason
            self.debugger_error(*STREAM_CLOSE_ERROR)  # the server closed the stream
            await self._cancel_tasks([self._media_task, self._playback_task])
            self._finish()
            self._stream_status("stream-stopped")

    def _handle_message(self, now: float, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            self.received.append((now, {"_raw": raw, "_error": "binary frame"}))
            self._error(f"binary frame of {len(raw)} bytes (Twilio expects JSON text)")
            return
        try:
            message = json.loads(raw)
        except ValueError as exc:
            self.received.append((now, {"_raw": raw, "_error": f"invalid JSON: {exc}"}))
            self._error(f"invalid JSON: {raw[:100]!r}")
            return
        if not isinstance(message, dict):
            self.received.append((now, {"_raw": raw, "_error": "not a JSON object"}))
            self._error(f"not a JSON object: {raw[:100]!r}")
            return
        self.received.append((now, message))
        event = message.get("event")
        if message.get("streamSid") != self.stream_sid:
            self._error(f"{event!r} message with wrong streamSid {message.get('streamSid')!r}")
            return
        if event == "media":
            self._on_media(message)
        elif event == "mark":
            self._on_mark(now, message)
        elif event == "clear":
            self._on_clear(now)
        else:
            self._error(f"unknown event {event!r}")

    def _on_media(self, message: dict) -> None:
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            self._error("media message without a media.payload string")
            return
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._error(f"media payload is not base64: {payload[:40]!r}")
            return
        self._playbuf += audio
        now = asyncio.get_running_loop().time()
        self._arrivals.append((self._consumed + len(self._playbuf), now))
        self.lead.append((now, len(self._playbuf) / BYTES_PER_MS))

    def _on_mark(self, now: float, message: dict) -> None:
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            self._error("mark message without a mark.name string")
            return
        self.marks_received.append((now, name))
        entry = _Mark(name=name, target=self._consumed + len(self._playbuf))
        if entry.target <= self._consumed:
            entry.due = now  # nothing queued before it: echo at once (after earlier marks)
        self._marks.append(entry)
        self._pump_marks()

    def _on_clear(self, now: float) -> None:
        self.clears.append(now)
        self._consumed += len(self._playbuf)
        self._playbuf.clear()
        self._arrivals.clear()
        self._arrived = self._consumed
        if self._mark_timer is not None:
            self._mark_timer.cancel()
            self._mark_timer = None
        while self._marks:
            self._echo_mark(self._marks.popleft())

    async def _playback_loop(self, start: float) -> None:
        loop = asyncio.get_running_loop()
        period = self.frame_ms / 1000
        tick = 0
        while True:
            delay = start + tick * period - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._play_tick(start + tick * period)
            tick += 1

    def _play_tick(self, now: float) -> None:
        """Play one frame at the scheduled tick time ``now``.

        Only audio that had arrived by ``now`` is played, so a tick that runs late
        does not play audio that arrived after its time.
        """
        while self._arrivals and self._arrivals[0][1] <= now:
            self._arrived = self._arrivals.popleft()[0]
        played = min(self.frame_bytes, max(0, self._arrived - self._consumed))
        before = self._consumed
        if played:
            self.heard += self._playbuf[:played]
            del self._playbuf[:played]
            self._consumed += played
        self.playback.append((now, played, len(self.heard) - played))
        for mark in self._marks:
            if mark.due is None and mark.target <= self._consumed:
                # The tick plays its bytes over [now, now + played / 8 ms).
                mark.due = now + max(0, mark.target - before) / BYTES_PER_MS / 1000
        self._pump_marks()

    def _pump_marks(self) -> None:
        """Echo, in order, every mark whose due time has come; arm a timer for the next."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._marks:
            mark = self._marks[0]
            if mark.due is None:
                return
            if mark.due > now:
                if self._mark_timer is None or self._mark_timer.when() != mark.due:
                    if self._mark_timer is not None:
                        self._mark_timer.cancel()
                    self._mark_timer = loop.call_at(mark.due, self._on_mark_timer)
                return
            self._echo_mark(self._marks.popleft())

    def _on_mark_timer(self) -> None:
        self._mark_timer = None
        self._pump_marks()

    def _echo_mark(self, mark: _Mark) -> None:
        if self._ws is None or self.ended or self._hanging_up:
            return
        self.marks_echoed.append((asyncio.get_running_loop().time(), mark.name))
        self._spawn(
            self._send_event(
                {
                    "event": "mark",
                    "sequenceNumber": None,
                    "streamSid": self.stream_sid,
                    "mark": {"name": mark.name},
                }
            )
        )

    # ---------------------------------------------------------------------------------------
    # Internals: shutdown
    # ---------------------------------------------------------------------------------------

    async def _cancel_tasks(self, tasks: Sequence[asyncio.Task | None], wait: float = 2.0) -> None:
        current = asyncio.current_task()
        pending = [task for task in tasks if task is not None and task is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=wait)

    def _finish(self) -> None:
        if self._mark_timer is not None:
            self._mark_timer.cancel()
            self._mark_timer = None
        while self._say_waiters:
            _, future = self._say_waiters.popleft()
            future.cancel()
        self._ended.set()


def _consume_exception(task: asyncio.Task) -> None:
    # A mark echo can race with the socket closing; the close itself is recorded elsewhere.
    if not task.cancelled():
        task.exception()
