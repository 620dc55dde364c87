"""The fault matrix: every stage of a call against the failures the real services produce.

Each case places a call over real sockets (the runner, the Realtime emulator and
the simulated Twilio caller on 127.0.0.1), makes one stage fail the way the real
service fails, and measures, on the event loop's clock that all three share, the
time from the failure to the first help the caller hears: the bot's audio, or
the TwiML Twilio runs once the stream ends (a spoken fallback line, a transfer).
It asserts that bound (2 s; 5 s while a refusal that a wait may cure is being
retried), that no audio other than the session's confirmed ``audio/pcmu`` reached
the phone, and that the call record and ``prt_call_failures_total`` say what failed.

Set ``FAULT_MATRIX_LOG=path`` to have each case append its measured time as a JSON
line (the README's table and the issue's closing note are made from it).
"""

import asyncio
import functools
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import phone_call

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.configuration import DEFAULT_TRANSCRIPTION_MODEL
from pipecat_realtime_twilio.agent.tools import realtime_tool
from pipecat_realtime_twilio.failures import FALLBACK_LINE
from pipecat_realtime_twilio.testing.emulator import FunctionCall, RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

HELP_SECS = 2.0
"""Most seconds from a failure to help heard."""
RETRIED_HELP_SECS = 5.0
"""The same while a refusal that a wait may cure is retried."""
FIRST_BYTE_SECS = 1.0
"""The bots' first-byte bound in these tests (the default is 3 s)."""

SPEECH = tone(600) + silence(700)
GREETING = "Hello, you are through to the test line."
ANSWER = "Yes, I can help with that."
FALLBACK_NUMBER = "+15550001234"


@realtime_tool
def look_up_order() -> str:
    """Look up the caller's order."""
    raise RuntimeError("the order service is down")


def bot(**options: Any):
    """A test bot: a greeting, a tool that fails, a short first-byte bound."""

    def pipeline(call):
        agent = RealtimeAgent(
            instructions="You are a test bot.",
            greeting=GREETING,
            tools=[look_up_order],
            first_byte_timeout_secs=FIRST_BYTE_SECS,
            **options,
        )
        return [call.input(), agent, call.output()]

    return pipeline


def broken_bot(call):
    """A bot whose ``pipeline()`` raises."""
    settings: dict[str, str] = {}
    return [call.input(), settings["voice"], call.output()]


class Boom(RuntimeError):
    """What the broken processor raises."""


def bot_with_broken_processor(call):
    """A bot with a processor that raises on the first audio it sees."""
    from pipecat.frames.frames import OutputAudioRawFrame
    from pipecat.processors.frame_processor import FrameProcessor

    class Breaks(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, OutputAudioRawFrame):
                raise Boom("a bug in the bot")
            await self.push_frame(frame, direction)

    agent = RealtimeAgent(instructions="You are a test bot.", greeting=GREETING)
    return [call.input(), agent, Breaks(), call.output()]


def bot_whose_processor_cannot_start(call):
    """A bot with a processor whose setup raises: the call's task fails as it starts."""
    from pipecat.processors.frame_processor import FrameProcessor

    class CannotStart(FrameProcessor):
        async def setup(self, setup):
            await super().setup(setup)
            raise Boom("cannot start")

    agent = RealtimeAgent(instructions="You are a test bot.", greeting=GREETING)
    return [call.input(), CannotStart(), agent, call.output()]


def replies(tool: bool):
    """Say what the agent asks for and answer the caller; with ``tool``, call the tool once."""
    asked = say_as_asked(Reply(ANSWER))
    called = False

    def reply(session, trigger):
        nonlocal called
        if tool and trigger == "vad" and not called:
            called = True
            return Reply(function_call=FunctionCall("look_up_order", {}))
        return asked(session, trigger)

    return reply


@dataclass
class Case:
    """One row of the matrix.

    Parameters:
        stage: The stage that fails.
        failure: What fails, as the real service does it.
        arrange: Sets the fault up on the emulator before the call (or mid-call: ``when``).
        expect: ``"fallback"`` (with ``code``), ``"transfer"`` or ``"works"``.
        code: The failure code the record and metric must name.
        when: ``"start"`` (the fault is there from the start), ``"turn"`` (it is
            armed after the greeting, and the caller speaks), ``"drop"`` (the socket
            drops after the greeting), ``"expire"`` (the session hits its cap).
        bound: Seconds allowed from the failure to help.
        bot: The bot builder.
        settings: Runner settings (a callable value is called when the case runs).
        emulator: ``RealtimeEmulator`` arguments.
    """

    stage: str
    failure: str
    arrange: Callable[[RealtimeEmulator], None] | None
    expect: str
    code: str | None = None
    when: str = "start"
    bound: float = HELP_SECS
    bot: Callable = field(default_factory=bot)
    settings: dict = field(default_factory=dict)
    emulator: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.stage}-{self.failure}"


def _refuse(status: int, n: int = 99, code: str | None = None):
    return lambda e: e.refuse_handshakes(n, status, code=code)


NO_PREWARM = {"prewarm": False}


@functools.cache
def refusing_port() -> int:
    """A port bound here and never listening: every TCP connect to it is refused."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    refusing_port.socket = held  # type: ignore[attr-defined]  # kept open: the port stays ours
    return held.getsockname()[1]


def refusing_url() -> str:
    """A Realtime URL where nothing listens, as with a wrong port in ``OPENAI_REALTIME_URL``."""
    return f"ws://127.0.0.1:{refusing_port()}/v1/realtime"


CASES = [
    # building the bot
    Case("build", "pipeline raises, pre-warmed", None, "fallback", "KeyError", bot=broken_bot),
    Case(
        "build",
        "pipeline raises, at the stream",
        None,
        "fallback",
        "KeyError",
        bot=broken_bot,
        settings=NO_PREWARM,
    ),
    # pre-warm and connect: refused handshakes
    Case("connect", "401 pre-warmed", _refuse(401), "fallback", "invalid_api_key"),
    Case("connect", "401", _refuse(401), "fallback", "invalid_api_key", settings=NO_PREWARM),
    Case(
        "connect",
        "401 to the fallback number",
        _refuse(401),
        "transfer",
        "invalid_api_key",
        bot=bot(fallback_number=FALLBACK_NUMBER),
        settings=NO_PREWARM,
    ),
    Case(
        "connect",
        "403",
        _refuse(403),
        "fallback",
        "unsupported_country_region_territory",
        settings=NO_PREWARM,
    ),
    Case("connect", "404 model", _refuse(404), "fallback", "model_not_found", settings=NO_PREWARM),
    Case(
        "connect",
        "429 quota",
        _refuse(429, code="insufficient_quota"),
        "fallback",
        "insufficient_quota",
        settings=NO_PREWARM,
    ),
    Case(
        "connect",
        "429 retried then open",
        _refuse(429, n=2),
        "works",
        bound=RETRIED_HELP_SECS,
        settings=NO_PREWARM,
    ),
    Case(
        "connect",
        "429 retried, no luck",
        _refuse(429),
        "fallback",
        "rate_limit_exceeded",
        bound=RETRIED_HELP_SECS,
        settings=NO_PREWARM,
    ),
    Case(
        "connect",
        "500 retried, no luck",
        _refuse(500),
        "fallback",
        "server_error",
        bound=RETRIED_HELP_SECS,
        settings=NO_PREWARM,
    ),
    Case(
        "connect",
        "503 retried then open",
        _refuse(503, n=1),
        "works",
        bound=RETRIED_HELP_SECS,
        settings=NO_PREWARM,
    ),
    Case(
        "connect",
        "TCP refused, pre-warmed",
        None,
        "fallback",
        "unreachable",
        bound=RETRIED_HELP_SECS,
        settings={"openai_realtime_url": refusing_url},
    ),
    Case(
        "connect",
        "TCP refused",
        None,
        "fallback",
        "unreachable",
        bound=RETRIED_HELP_SECS,
        settings={"openai_realtime_url": refusing_url, **NO_PREWARM},
    ),
    Case(
        "connect",
        "handshake hangs",
        lambda e: e.hang_handshakes(99),
        "fallback",
        "timeout",
        bound=RETRIED_HELP_SECS,
        settings=NO_PREWARM,
    ),
    Case(
        "connect",
        "handshake hangs, pre-warmed",
        lambda e: e.hang_handshakes(99),
        "fallback",
        "timeout",
        bound=RETRIED_HELP_SECS,
    ),
    Case(
        "connect",
        "503 retried, no luck, pre-warmed",
        _refuse(503),
        "fallback",
        "server_error",
        bound=RETRIED_HELP_SECS,
    ),
    # configure
    Case(
        "configure",
        "transcription model refused",
        lambda e: e.reject_session_updates(1, "session.audio.input.transcription.model"),
        "works",
    ),
    Case(
        "configure",
        "retired transcription model",
        lambda e: e.retired_models.add(DEFAULT_TRANSCRIPTION_MODEL),
        "works",
    ),
    Case(
        "configure",
        "session.update refused",
        lambda e: e.reject_session_updates(9, "session.audio.output.format"),
        "fallback",
        "invalid_value",
    ),
    Case(
        "configure",
        "session.update refused, not pre-warmed",
        lambda e: e.reject_session_updates(9, "session.audio.output.format"),
        "fallback",
        "invalid_value",
        settings=NO_PREWARM,
    ),
    Case(
        "configure",
        "no session.updated",
        lambda e: e.stall_session_updates(9),
        "fallback",
        "timeout",
        settings=NO_PREWARM,  # measured from the stream's start: the deadline is inside
    ),
    # the greeting
    Case(
        "greet",
        "failed: insufficient_quota",
        lambda e: e.fail_next_responses(1, "failed", "insufficient_quota"),
        "fallback",
        "insufficient_quota",
    ),
    Case(
        "greet",
        "failed: rate_limit_exceeded once",
        lambda e: e.fail_next_responses(1, "failed", "rate_limit_exceeded"),
        "works",
    ),
    Case(
        "greet",
        "failed: server_error twice",
        lambda e: e.fail_next_responses(2, "failed", "server_error"),
        "fallback",
        "server_error",
    ),
    Case(
        "greet",
        "incomplete: max_output_tokens",
        lambda e: e.fail_next_responses(1, "incomplete", "max_output_tokens"),
        "works",
    ),
    Case(
        "greet",
        "no first byte",
        lambda e: e.stall_next_responses(1),
        "fallback",
        "no_first_byte",
    ),
    # later responses
    Case(
        "respond",
        "failed: insufficient_quota",
        lambda e: e.fail_next_responses(1, "failed", "insufficient_quota"),
        "fallback",
        "insufficient_quota",
        when="turn",
    ),
    Case(
        "respond",
        "failed: rate_limit_exceeded once",
        lambda e: e.fail_next_responses(1, "failed", "rate_limit_exceeded"),
        "works",
        when="turn",
    ),
    Case(
        "respond",
        "incomplete: content_filter",
        lambda e: e.fail_next_responses(1, "incomplete", "content_filter"),
        "works",
        when="turn",
    ),
    Case(
        "respond",
        "no first byte",
        lambda e: e.stall_next_responses(1),
        "fallback",
        "no_first_byte",
        when="turn",
    ),
    Case(
        "respond",
        "transcription failed",
        lambda e: e.fail_transcriptions(1),
        "works",
        when="turn",
    ),
    # tools
    Case("tool", "the tool raises", None, "works", when="turn"),
    # reconnects
    Case("reconnect", "socket dropped, reopened", None, "works", when="drop"),
    Case(
        "reconnect",
        "socket dropped, 503 once",
        _refuse(503, n=1),
        "works",
        when="drop",
        bound=RETRIED_HELP_SECS,
    ),
    Case(
        "reconnect",
        "socket dropped, 401",
        _refuse(401),
        "fallback",
        "invalid_api_key",
        when="drop",
    ),
    Case(
        "reconnect",
        "socket dropped, 503 always",
        _refuse(503),
        "fallback",
        "server_error",
        when="drop",
        bound=RETRIED_HELP_SECS,
    ),
    Case("reconnect", "socket dropped mid-turn", None, "works", when="midturn-drop"),
    # rotation at the session's cap
    Case(
        "rotate", "session expires", None, "works", when="expire", emulator={"session_max_secs": 4}
    ),
    Case(
        "rotate",
        "session expires, 401",
        _refuse(401),
        "fallback",
        "invalid_api_key",
        when="expire",
        emulator={"session_max_secs": 4},
    ),
    Case("rotate", "session expires mid-turn", None, "works", when="midturn-expire"),
    # anything else in the call's task
    Case("task", "a processor raises", None, "fallback", "Boom", bot=bot_with_broken_processor),
    Case(
        "task",
        "a processor cannot start",
        None,
        "fallback",
        "Boom",
        bot=bot_whose_processor_cannot_start,
    ),
]


@dataclass
class Help:
    """The first help the caller got after a failure."""

    at: float
    kind: str  # "audio", "say", "dial"
    verbs: list = field(default_factory=list)


async def first_help(caller, *, after_byte: int, timeout: float = 15) -> Help:
    """Wait for the first help: bot audio past ``after_byte``, or the TwiML after the stream."""
    await caller.wait_until(
        lambda: len(caller.heard) > after_byte or caller.stream_ended_at is not None,
        timeout=timeout,
        message="help (audio or the end of the stream)",
    )
    if len(caller.heard) > after_byte:
        at = next(when for when, played, start in caller.playback if start + played > after_byte)
        return Help(at=at, kind="audio")
    result = await caller.follow_action()
    loop = asyncio.get_running_loop()
    verbs = [(v.name, v.text) for v in result.verbs]
    return Help(at=loop.time(), kind="dial" if verbs[0][0] == "Dial" else "say", verbs=verbs)


def assert_phone_format(emulator: RealtimeEmulator, caller) -> None:
    """Everything the caller heard came from ``audio/pcmu`` responses, bit for bit."""
    pcmu = b"".join(
        bytes(r.audio)
        for s in emulator.sessions
        for r in s.responses
        if r.output_format == "audio/pcmu"
    )
    heard = bytes(caller.heard)
    for offset in range(0, len(heard) - 160 + 1, 160):
        assert heard[offset : offset + 160] in pcmu, f"heard byte {offset} is no μ-law the bot sent"
    wrong = [
        r
        for s in emulator.sessions
        for r in s.responses
        if r.audio and r.output_format != "audio/pcmu"
    ]
    for response in wrong:
        assert bytes(response.audio[:160]) not in heard


def assert_nothing_before_pcmu(emulator: RealtimeEmulator) -> None:
    """No caller audio appended and no response asked for before ``audio/pcmu`` was confirmed."""
    for session in emulator.sessions:
        confirmed = [
            e.sent_at
            for e in session.sent_of_type("session.updated")
            if e["session"]["audio"]["input"]["format"]["type"] == "audio/pcmu"
            and e["session"]["audio"]["output"]["format"]["type"] == "audio/pcmu"
            and e.sent_at is not None
        ]
        asked = [
            e.received_at
            for e in session.client_events
            if e.get("type") in ("input_audio_buffer.append", "response.create")
        ]
        if not confirmed:
            assert asked == [], f"{session.id}: audio or a response before audio/pcmu"
        else:
            assert all(t >= confirmed[0] for t in asked), f"{session.id}: sent before pcmu"


def _log(case: Case, secs: float | None, help: Help | None) -> None:
    path = os.environ.get("FAULT_MATRIX_LOG")
    if not path:
        return
    row = {
        "stage": case.stage,
        "failure": case.failure,
        "expect": case.expect,
        "code": case.code,
        "help": help.kind if help else None,
        "secs": None if secs is None else round(secs, 3),
        "bound": case.bound,
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_the_caller_hears_help_in_time(case: Case):
    async with phone_call(
        pipeline=case.bot,
        replies=replies(tool=case.stage == "tool"),
        settings={k: v() if callable(v) else v for k, v in case.settings.items()},
        **case.emulator,
    ) as (emulator, runner, caller):
        if case.when == "start" and case.arrange is not None:
            case.arrange(emulator)
        since, after_byte, help = await _fail(case, emulator, caller)
        if help is None:
            help = await first_help(caller, after_byte=after_byte)
        since = _failure_time(case, emulator, since)
        secs = help.at - since
        _log(case, secs, help)
        print(f"\n{case.id}: help ({help.kind}) after {secs:.2f} s (bound {case.bound:g} s)")

        if case.expect == "works":
            assert help.kind == "audio", help
        elif case.expect == "transfer":
            assert help.verbs == [("Dial", FALLBACK_NUMBER)]
        else:
            assert help.verbs == [("Say", FALLBACK_LINE), ("Hangup", "")], help
        assert secs <= case.bound, f"{case.id}: help after {secs:.2f} s (bound {case.bound} s)"
        assert_phone_format(emulator, caller)
        assert_nothing_before_pcmu(emulator)
        assert emulator.validation_errors == []

        if case.when.startswith("midturn"):
            # The new session heard the whole turn, not only what came after the cut.
            said = [e.text for e in runner.active[caller.call_sid].agent.transcript]
            heard_ms = [int(t.split()[-2]) for t in said if t.startswith("(caller speech")]
            # The emulator transcribes a committed turn as its length: 300 ms of prefix,
            # the 600 ms tone, 500 ms of silence. Only the tone's last half is 800 ms.
            assert heard_ms and heard_ms[-1] >= 1300, said
        if case.expect == "works":
            await _still_works(emulator, caller)
            await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        record = runner.finished[0]
        if case.expect == "works":
            assert not record.end_reason.startswith("failed"), record.end_reason
            return
        assert record.end_reason == f"failed: {case.stage}: {case.code}"
        metric_code = "exception" if case.code in ("KeyError", "Boom") else case.code
        labels = {"stage": case.stage, "code": metric_code}
        assert runner.metrics.registry.get_sample_value("prt_call_failures_total", labels) == 1
        await caller.wait_until(lambda: runner.store.get(caller.call_sid), timeout=5)
        assert runner.store.get(caller.call_sid).end_reason == record.end_reason


async def _fail(case: Case, emulator: RealtimeEmulator, caller) -> tuple[float, int, Help | None]:
    """Place the call and make the case's failure happen.

    Returns:
        When it happened (refined by :func:`_failure_time`), the bytes heard by
        then, and the help if it came as the webhook's own answer.
    """
    loop = asyncio.get_running_loop()
    if case.stage == "build" and case.settings.get("prewarm", True):
        started = loop.time()
        result = await caller.dial()  # the webhook answers with the fallback itself
        verbs = [(v.name, v.text) for v in result.verbs]
        return started, 0, Help(at=loop.time(), kind="say", verbs=verbs)
    await caller.call()
    if case.when == "expire":
        # Only the first session has the short cap; the next one lives on, so the
        # test sees one rotation (a rotation in the middle of a caller's turn is
        # not covered: see the README).
        emulator.session_max_secs = 3600
    if case.when == "start":
        return caller.started_at, 0, None
    await caller.wait_heard(300, timeout=10)
    await caller.wait_quiet(quiet_ms=300, timeout=10)
    if case.arrange is not None:
        case.arrange(emulator)
    if case.when == "expire":
        first = emulator.sessions[0]
        await emulator.wait_for(lambda: first.closed, timeout=10)
    heard, at = len(caller.heard), loop.time()
    if case.when.startswith("midturn"):
        # The caller is 300 ms into their turn when the session goes.
        session = emulator.sessions[-1]
        speaking = caller.say(SPEECH)
        speaking.add_done_callback(lambda f: f.cancelled() or f.exception())
        started = len(session.sent_of_type("input_audio_buffer.speech_started"))
        await emulator.wait_for(
            lambda: len(session.sent_of_type("input_audio_buffer.speech_started")) > started,
            timeout=5,
        )
        cut_at = session.input_audio_ms + 240
        await emulator.wait_for(lambda: session.input_audio_ms >= cut_at, timeout=5)
        if case.when == "midturn-drop":
            await emulator.drop_connections()
        else:  # what the emulator does at the session's cap
            await session.send_error(
                "invalid_request_error", "session_expired", "Your session hit the maximum."
            )
            await session.close()
        return at, heard, None
    if case.when == "drop":
        await emulator.drop_connections()
    if caller.stream_ended_at is None:  # the fallback may have come already
        speaking = caller.say(SPEECH)  # the call may end before the caller is done speaking
        speaking.add_done_callback(lambda f: f.cancelled() or f.exception())
    return at, heard, None


def _failure_time(case: Case, emulator: RealtimeEmulator, since: float) -> float:
    """The moment the failure happened, from what the emulator recorded."""
    responses = [r for s in emulator.sessions for r in s.responses]
    if case.stage == "tool":
        return next(r.done_at for r in responses if r.kind == "function_call")
    stalled = [r for r in responses if r.stall_secs]
    if stalled:  # from the moment the response was owed: all the silence counts
        return stalled[-1].triggered_at
    failed = [r for r in responses if r.status == "failed"]
    if failed:
        return failed[-1].done_at
    if case.stage == "task":
        return responses[0].first_audio_at
    if case.when in ("turn", "drop", "expire", "midturn-drop", "midturn-expire") and (
        case.expect == "works"
    ):
        # The caller's turn ended: the answer is owed from then.
        stops = [
            e.sent_at
            for s in emulator.sessions
            for e in s.sent_of_type("input_audio_buffer.speech_stopped")
            if e.sent_at and e.sent_at > since
        ]
        return max([since, *stops])
    if case.when == "expire":
        return emulator.sessions[0].closed_at
    return since


async def _still_works(emulator: RealtimeEmulator, caller) -> None:
    """The call goes on: the caller's next turn is answered and heard."""
    await caller.wait_quiet(quiet_ms=300, timeout=10)
    heard = len(caller.heard)
    await caller.say(SPEECH)
    await caller.wait_heard(heard / 8 + 300, timeout=10)


async def test_an_exception_out_of_the_calls_task_still_gets_the_fallback(monkeypatch):
    """Whatever escapes the call's pipeline run (a bug of ours, say) ends in the fallback line."""
    from pipecat_realtime_twilio.phone.call import CallSession

    async def run(self, processors):
        raise KeyError("a bug in the runner")

    monkeypatch.setattr(CallSession, "run", run)
    async with phone_call(pipeline=bot(), replies=replies(tool=False)) as (_, runner, caller):
        await caller.call()
        help = await first_help(caller, after_byte=0)
        assert help.verbs == [("Say", FALLBACK_LINE), ("Hangup", "")]
        assert help.at - caller.started_at <= HELP_SECS
        await caller.wait_until(lambda: runner.finished, timeout=10)
        assert runner.finished[0].end_reason == "failed: task: KeyError"
        labels = {"stage": "task", "code": "exception"}
        assert runner.metrics.registry.get_sample_value("prt_call_failures_total", labels) == 1
