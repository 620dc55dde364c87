#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""One outbound call on the fake carrier: ringing, the callee, async AMD and the TwiML run.

`CarrierCall` is one call `~pipecat_realtime_twilio.testing.fake_carrier.FakeCarrier`
accepted, from its create to its final status callback; what the calls share (the REST
fake, times, signing, records) is `~pipecat_realtime_twilio.testing.carrier_network`.
The protocol is Twilio's: see the fake carrier's module docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urljoin, urlsplit, urlunsplit

from websockets.exceptions import WebSocketException

from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.carrier_network import (
    AMD_QUICK_SECS,
    FAX_SECS,
    GREETING_TIMEOUT_SECS,
    LONG_PAUSE_SECS,
    MACHINE_HANGUP_SECS,
    MACHINE_RECORD_SECS,
    RING_SECS,
    SIP_RESPONSE_CODES,
    SPEECH_SECS,
    CarrierNetwork,
    Source,
    create_problems,
)
from pipecat_realtime_twilio.testing.fake_rest import ACTIVE_STATUSES, API_VERSION
from pipecat_realtime_twilio.testing.twiml import DialResult, TwimlError, TwimlVerb, parse_twiml


class CarrierCall:
    """One outbound call: what Twilio and the callee do, from create to final callback.

    Attributes:
        call_sid: The call's SID.
        number: The number called.
        behaviour: What the callee does (see `BEHAVIOURS`).
        task: The task running `run`, set by the carrier.
        answered_by: The AMD verdict sent, if any.
        finished: Whether the final callback went out.
    """

    def __init__(
        self,
        network: CarrierNetwork,
        call_sid: str,
        behaviour: str,
        params: dict[str, str],
        fields: list[tuple[str, str]],
    ):
        """Initialize the call and check the runner's create parameters.

        Args:
            network: The carrier.
            call_sid: The call's SID.
            behaviour: What the callee does.
            params: The create form.
            fields: The create form with repeated keys.
        """
        self.net = network
        self.rest = network.rest
        self.call_sid = call_sid
        self.number = params["To"]
        self.behaviour = behaviour
        self.params = params
        self.task: asyncio.Task | None = None
        self.answered_by: str | None = None
        self.finished = False
        self._events = {
            event
            for key, value in fields
            if key == "StatusCallbackEvent"
            for event in value.split()
        }
        self._sequence = 0
        self._answered_at: float | None = None
        self._beeped = False
        self._source: Source | None = None
        self._ended = asyncio.Event()
        self._end_status = "completed"
        self._by_update = False
        self._script: asyncio.Task | None = None
        self._callee: asyncio.Task | None = None
        self._caller: TwilioCaller | None = None
        self._lock = asyncio.Lock()
        for problem in create_problems(params, self._events):
            self.problem(problem)

    # ---------------------------------------------------------------------------------------
    # The runner's parameters
    # ---------------------------------------------------------------------------------------

    def problem(self, text: str) -> None:
        """Note a protocol mistake of the runner's on this call.

        Args:
            text: What was wrong.
        """
        self.net.problems.append(f"{self.number} {self.call_sid}: {text}")

    @property
    def _amd(self) -> str | None:
        """The AMD mode that runs (async), if any."""
        detection = self.params.get("MachineDetection")
        return detection if detection in ("Enable", "DetectMessageEnd") else None

    @property
    def _ring_timeout(self) -> int:
        timeout = self.params.get("Timeout", "")
        return int(timeout) if timeout.isdigit() else 60

    # ---------------------------------------------------------------------------------------
    # The call's life
    # ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Ring, answer (or not), run the TwiML until the call ends, send the final callback."""
        try:
            status = await self._progress()
        except Exception as exc:  # a bug of the carrier's: end the call, and say so
            self.problem(f"the fake carrier failed: {exc!r}")
            status = "failed"
        try:
            await self._finish(status)
        finally:
            for task in (self._script, self._callee):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()

    def end(self, status: str = "completed", *, by_update: bool = False) -> None:
        """End the call (first reason wins): a hang-up, an update, the TwiML ran out.

        Args:
            status: The final status, e.g. ``"completed"`` or ``"canceled"``.
            by_update: Whether a REST update ended it (the stream ends from Twilio's side).
        """
        if not self._ended.is_set():
            self._end_status, self._by_update = status, by_update
            self._ended.set()

    async def redirect(self, source: Source) -> None:
        """A REST update gave the call new TwiML: stop what runs, then run it.

        Args:
            source: Where the new TwiML comes from.
        """
        async with self._lock:
            if self._ended.is_set():
                return
            if self._answered_at is None:
                self._source = source  # runs when the call is answered
                return
            await self._stop_script()
            await self._stop_stream(by_twilio=True)
            self._script = asyncio.create_task(self._run_twiml(source))

    async def _sleep(self, secs: float) -> bool:
        """Wait ``secs``; whether the call ended meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), secs)
        return self._ended.is_set()

    async def _progress(self) -> str:
        """Everything up to the end; the final status."""
        if "initiated" in self._events:
            await self._status("initiated")
        if self.behaviour == "failed":
            return "failed" if not await self._sleep(RING_SECS) else self._end_status
        self.rest.set_call_status(self.call_sid, "ringing")
        if "ringing" in self._events:
            await self._status("ringing")
        if self.behaviour == "busy":
            return "busy" if not await self._sleep(RING_SECS) else self._end_status
        if self.behaviour == "no_answer":
            ring = self._ring_timeout * self.net.time_scale
            return "no-answer" if not await self._sleep(ring) else self._end_status
        if await self._sleep(RING_SECS):
            return self._end_status
        self.rest.set_call_status(self.call_sid, "in-progress")
        self._answered_at = asyncio.get_running_loop().time()
        if "answered" in self._events:
            await self._status("in-progress")
        self._callee = asyncio.create_task(self._callee_acts())
        async with self._lock:
            if not self._ended.is_set() and self._script is None:  # else an update came first
                source = self._source or self._initial_source()
                self._script = asyncio.create_task(self._run_twiml(source))
        await self._ended.wait()
        await self._stop_script()
        await self._stop_stream(by_twilio=self._by_update)
        return self._end_status

    def _initial_source(self) -> Source:
        if "Twiml" in self.params:
            return ("twiml", self.params["Twiml"], "POST")
        return ("url", self.params.get("Url", ""), (self.params.get("Method") or "POST").upper())

    async def _finish(self, status: str) -> None:
        call = self.rest.calls[self.call_sid]
        if call["status"] in ACTIVE_STATUSES:
            self.rest.set_call_status(self.call_sid, status)
        final = call["status"]
        seconds = int(call["duration"] or 0) if self._answered_at is not None else 0
        minutes = max(1, math.ceil(seconds / 60)) if self._answered_at is not None else 0
        extra = {"CallDuration": str(seconds), "Duration": str(minutes)}
        if final in SIP_RESPONSE_CODES:
            extra["SipResponseCode"] = SIP_RESPONSE_CODES[final]
        if self.answered_by is not None:
            extra["AnsweredBy"] = self.answered_by
        if "completed" in self._events or not self._events:
            await self._status(final, extra)
        self.net.final_status[self.call_sid] = final
        self.finished = True

    # ---------------------------------------------------------------------------------------
    # Callbacks
    # ---------------------------------------------------------------------------------------

    def _call_form(self, status: str) -> dict[str, str]:
        params = self.params
        return {
            "AccountSid": self.rest.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self.call_sid,
            "CallStatus": status,
            "Called": params["To"],
            "Caller": params["From"],
            "Direction": "outbound-api",
            "From": params["From"],
            "To": params["To"],
        }

    async def _status(self, status: str, extra: dict[str, str] | None = None) -> None:
        url = self.params.get("StatusCallback")
        if not url:
            return
        form = self._call_form(status)
        form.update(
            CallbackSource="call-progress-events",
            SequenceNumber=str(self._sequence),
            Timestamp=format_datetime(datetime.now(UTC)),
            **(extra or {}),
        )
        self._sequence += 1
        await self._callback(f"status callback {status}", url, form, "StatusCallbackMethod")

    async def _callback(self, what: str, url: str, form: dict[str, str], method_key: str) -> None:
        method = (self.params.get(method_key) or "POST").upper()
        answer = await self.net.send_signed(url, form, method)
        if answer is None:
            self.problem(f"{what}: the request to {url} failed")
        elif not 200 <= answer.status < 300:
            self.problem(f"{what}: {url} answered HTTP {answer.status}")

    async def _amd_verdict(self, answered_by: str) -> None:
        assert self._answered_at is not None
        self.answered_by = answered_by
        self.rest.calls[self.call_sid]["answered_by"] = answered_by
        url = self.params.get("AsyncAmdStatusCallback")
        if self.params.get("AsyncAmd") != "true" or not url:
            return
        elapsed = asyncio.get_running_loop().time() - self._answered_at
        form = {
            "AccountSid": self.rest.account_sid,
            "AnsweredBy": answered_by,
            "CallSid": self.call_sid,
            "MachineDetectionDuration": str(round(elapsed * 1000)),
        }
        await self._callback(f"AMD {answered_by}", url, form, "AsyncAmdStatusCallbackMethod")

    # ---------------------------------------------------------------------------------------
    # The callee
    # ---------------------------------------------------------------------------------------

    async def _callee_acts(self) -> None:
        """What the one who answered does on their own: AMD's verdict, hanging up."""
        try:
            await self._callee_timeline()
        except Exception as exc:  # a bug of the carrier's: end the call, and say so
            self.problem(f"the fake carrier's callee failed: {exc!r}")
            self.end("completed")

    async def _callee_timeline(self) -> None:
        behaviour, amd = self.behaviour, self._amd
        if behaviour == "human":
            if amd:
                await asyncio.sleep(AMD_QUICK_SECS)
                await self._amd_verdict("human")
        elif behaviour == "fax":
            await asyncio.sleep(AMD_QUICK_SECS)
            if amd:
                await self._amd_verdict("fax")
            await asyncio.sleep(max(0.0, FAX_SECS - AMD_QUICK_SECS))
            self.end("completed")
        elif behaviour == "machine_hangup":
            await asyncio.sleep(MACHINE_HANGUP_SECS)
            self.end("completed")
        elif behaviour == "machine":
            greeting = self.net.voicemail_greeting_secs
            if amd == "Enable":
                await asyncio.sleep(min(AMD_QUICK_SECS, greeting))
                await self._amd_verdict("machine_start")
                greeting -= min(AMD_QUICK_SECS, greeting)
            await asyncio.sleep(greeting)
            self._beeped = True
            if amd == "DetectMessageEnd":
                await self._amd_verdict("machine_end_beep")
            await asyncio.sleep(MACHINE_RECORD_SECS)
            self.end("completed")

    # ---------------------------------------------------------------------------------------
    # TwiML
    # ---------------------------------------------------------------------------------------

    async def _stop_script(self) -> None:
        script, self._script = self._script, None
        if script is not None and script is not asyncio.current_task():
            script.cancel()
            await asyncio.wait([script])

    async def _run_twiml(self, source: Source | None) -> None:
        """Fetch and run TwiML, following redirects; the call ends when it runs out."""
        try:
            while source is not None:
                document = await self._fetch(source)
                if document is None:
                    break  # Twilio: "an application error has occurred", then it hangs up
                source = await self._execute(document)
        except Exception as exc:  # a bug of the carrier's: end the call, and say so
            self.problem(f"the fake carrier failed running TwiML: {exc!r}")
        self.end("completed")

    async def _fetch(self, source: Source) -> DialResult | None:
        kind, where, method = source
        if kind == "twiml":
            try:
                return parse_twiml(where, url=self.params.get("Url", ""))
            except TwimlError as exc:
                self.problem(f"the Twiml of an update is not TwiML: {exc}")
                return None
        answer = await self.net.send_signed(where, self._call_form("in-progress"), method)
        if answer is None or not 200 <= answer.status < 300:
            status = "no answer" if answer is None else f"HTTP {answer.status}"
            self.problem(f"TwiML at {where} could not be fetched ({status})")
            return None
        try:
            return parse_twiml(answer.text, url=answer.url, status=answer.status)
        except TwimlError as exc:
            self.problem(f"{where} did not answer TwiML: {exc}")
            return None

    async def _execute(self, document: DialResult) -> Source | None:
        """Run a document's verbs; the next TwiML to fetch, or None when the call ends."""
        for verb in document.verbs:
            if verb.name == "Pause":
                await asyncio.sleep(self._pause_secs(verb))
            elif verb.name == "Say":
                if self.behaviour == "machine" and self._beeped:
                    self.net.voicemails[self.number].append(verb.text)
                await asyncio.sleep(SPEECH_SECS)
            elif verb.name == "Play":
                await asyncio.sleep(SPEECH_SECS)
            elif verb.name in ("Hangup", "Reject"):
                return None
            elif verb.name == "Redirect":
                if not verb.text:
                    self.problem("<Redirect> without a URL")
                    return None
                method = (verb.attributes.get("method") or "POST").upper()
                return ("url", urljoin(document.url, verb.text), method)
            elif verb.name == "Connect":
                if await self._stream(document) == "hung up":
                    return None
                if document.action_url:
                    return ("url", document.action_url, document.connect_method)
            else:
                self.problem(f"<{verb.name}> is not a verb the fake carrier runs")
        return None

    def _pause_secs(self, verb: TwimlVerb) -> float:
        length = verb.attributes.get("length", "1")
        if not length.isdigit() or int(length) < 1:  # Twilio: warning 13910, a positive integer
            self.problem(f"<Pause length={length!r}> is not a positive whole number of seconds")
            return 1.0
        secs = float(length)
        if secs <= LONG_PAUSE_SECS:
            return secs
        return max(LONG_PAUSE_SECS, secs * self.net.time_scale)

    async def _stream(self, document: DialResult) -> str:
        """Play ``<Connect><Stream>``: ``"hung up"`` (the callee did) or ``"ended"``."""
        if not document.stream_url:
            self.problem("<Connect> without a <Stream url>")
            return "ended"
        parts = urlsplit(urljoin(document.url, document.stream_url))
        scheme = "https" if parts.scheme in ("wss", "https") else "http"
        server = self.net.local_url(urlunsplit((scheme, parts.netloc, "", "", "")))
        public = urlsplit(document.url)
        caller = TwilioCaller(
            server_url=server,
            public_url=urlunsplit((public.scheme, public.netloc, "", "", "")) or server,
            auth_token=self.rest.auth_token,
            account_sid=self.rest.account_sid,
            call_sid=self.call_sid,
            from_number=self.params["From"],
            to_number=self.number,
        )
        caller.dial_result = document
        self.net.callers.append(caller)
        if self.behaviour == "human":
            self.net.conversations[self.number].append(caller)
        try:
            await caller.connect()
        except (WebSocketException, OSError, TimeoutError) as exc:
            self.problem(f"the stream {document.stream_url} did not connect: {exc!r}")
            return "ended"
        self._caller = caller
        if self.behaviour != "human":
            await caller.wait_ended(timeout=3600)  # the callee's own timer ends the call
            return "ended"
        try:
            await caller.wait_until(
                lambda: caller.heard_ms > 0 or caller.ended, GREETING_TIMEOUT_SECS
            )
        except TimeoutError:
            self.problem(f"the bot said nothing to the human in {GREETING_TIMEOUT_SECS:g} s")
        with contextlib.suppress(TimeoutError):  # a greeting that goes on: stay anyway
            await caller.wait_until(lambda: caller.ended or _quiet(caller), GREETING_TIMEOUT_SECS)
        with contextlib.suppress(TimeoutError):
            await caller.wait_ended(self.net.human_hangup_after_secs)
        if caller.ended:
            return "ended"
        await caller.hangup()
        return "hung up"

    async def _stop_stream(self, *, by_twilio: bool) -> None:
        caller, self._caller = self._caller, None
        if caller is None or caller.ended:
            return
        if by_twilio:
            await caller.end_stream_by_twilio()
        else:
            await caller.hangup()


def _quiet(caller: TwilioCaller, quiet_secs: float = 0.3) -> bool:
    """Whether the phone played something, then nothing for ``quiet_secs``."""
    last = next((time for time, played, _ in reversed(caller.playback) if played), None)
    now = asyncio.get_running_loop().time()
    return not caller.buffered_ms and last is not None and now - last >= quiet_secs
