"""The fault matrix on GPT-Live: every stage of a Live call against the failures it can meet.

As ``test_fault_matrix.py`` does for Realtime: each case places a call over real
sockets (the runner, the emulator speaking GPT-Live and the simulated Twilio caller
on 127.0.0.1), makes one stage fail the way the real service fails, and measures, on
the event loop's clock all three share, the time from the failure to the first help
the caller hears: the bot's speech, or the TwiML Twilio runs once the stream ends (the
fallback line in Twilio's voice, or a transfer). It asserts the bound, that what the
caller heard is the model's own μ-law (only quiet left out), that nothing was sent
before ``session.started``, that every client event was valid, and that the call
record and ``prt_call_failures_total`` say what failed.

Live differs from Realtime where the protocol does: the model decides when it speaks,
so a stall is only seen after ``first_byte_timeout_secs`` (a silent model is nudged
once after the caller's turn, then the call falls back), and a session the server
closes (``expired``, ``connection_lost``) is replaced by a new one with the
conversation so far.

Set ``FAULT_MATRIX_LOG=path`` to have each case append its measured time as a JSON line.
"""

import asyncio
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import phone_call

from pipecat_realtime_twilio.agent.live import LiveAgent
from pipecat_realtime_twilio.agent.live_ledger import is_quiet
from pipecat_realtime_twilio.agent.live_session import STREAM_STALL_SECS
from pipecat_realtime_twilio.agent.tools import realtime_tool
from pipecat_realtime_twilio.failures import FALLBACK_LINE
from pipecat_realtime_twilio.testing.emulator import FunctionCall, RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

FIRST_SPEECH_SECS = 1.0
"""The bots' first-speech bound in these tests (the default is 3 s)."""
HELP_SECS = 2.0
"""Most seconds from a failure to help heard."""
RETRIED_HELP_SECS = 5.0
"""The same while a refusal that a wait may cure is retried."""
NUDGED_HELP_SECS = 2 * FIRST_SPEECH_SECS + 0.6
"""A model silent after the caller's turn: nudged after one bound, given up after two."""

SPEECH = tone(600) + silence(700)
GREETING = "Hello, you are through to the test line."
ANSWER = "Yes, I can help with that."
FALLBACK_NUMBER = "+15550001234"


@realtime_tool
def look_up_order() -> str:
    """Look up the caller's order."""
    raise RuntimeError("the order service is down")


def bot(**options: Any):
    """A Live test bot: a greeting, a tool that fails, a short first-speech bound."""

    def pipeline(call):
        agent = LiveAgent(
            instructions="You are a test bot.",
            greeting=GREETING,
            tools=[look_up_order],
            first_byte_timeout_secs=FIRST_SPEECH_SECS,
            **options,
        )
        return [call.input(), agent, call.output()]

    return pipeline


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
        arrange: Sets the fault up on the emulator (before the call, or mid-call).
        expect: ``"fallback"`` (with ``code``), ``"transfer"`` or ``"works"``.
        code: The failure code the record and metric must name.
        when: ``"start"`` (armed before the call), ``"turn"`` (armed after the
            greeting; the caller speaks), ``"drop"`` (the socket drops after the
            greeting; the caller speaks), ``"close"`` (``arrange`` ends the session
            after the greeting; the caller speaks), ``"stall"`` (``arrange`` stops the
            session's audio stream after the greeting; once a new session took over,
            the caller speaks).
        bound: Seconds allowed from the failure to help.
        bot: The bot builder.
        tool: Whether the caller's turn makes the model call the failing tool.
    """

    stage: str
    failure: str
    arrange: Callable[[RealtimeEmulator], Any] | None
    expect: str
    code: str | None = None
    when: str = "start"
    bound: float = HELP_SECS
    bot: Callable = field(default_factory=bot)
    tool: bool = False

    @property
    def id(self) -> str:
        return f"{self.stage}-{self.failure}"


def _refuse(status: int, n: int = 99, code: str | None = None):
    return lambda e: e.refuse_handshakes(n, status, code=code)


def refused_bot(call):
    """The test bot on a Live URL where nothing listens: every TCP connect is refused."""
    held = socket.socket()  # bound, never listening: kept open while the call runs
    held.bind(("127.0.0.1", 0))
    refused_bot.held = held  # type: ignore[attr-defined]
    return bot(base_url=f"ws://127.0.0.1:{held.getsockname()[1]}/v1/live/sessions")(call)


CASES = [
    # connect: refused and hanging handshakes
    Case("connect", "401", _refuse(401), "fallback", "invalid_api_key"),
    Case(
        "connect",
        "401 to the fallback number",
        _refuse(401),
        "transfer",
        "invalid_api_key",
        bot=bot(fallback_number=FALLBACK_NUMBER),
    ),
    Case("connect", "403", _refuse(403), "fallback", "unsupported_country_region_territory"),
    Case("connect", "404", _refuse(404), "fallback", "model_not_found"),
    Case(
        "connect",
        "429 quota",
        _refuse(429, code="insufficient_quota"),
        "fallback",
        "insufficient_quota",
    ),
    Case("connect", "429 retried then open", _refuse(429, n=2), "works", bound=RETRIED_HELP_SECS),
    Case(
        "connect",
        "500 retried, no luck",
        _refuse(500),
        "fallback",
        "server_error",
        bound=RETRIED_HELP_SECS,
    ),
    Case(
        "connect",
        "handshake hangs",
        lambda e: e.hang_handshakes(99),
        "fallback",
        "timeout",
        bound=RETRIED_HELP_SECS,
    ),
    Case(
        "connect",
        "TCP refused",
        None,
        "fallback",
        "unreachable",
        bound=RETRIED_HELP_SECS,
        bot=refused_bot,
    ),
    # configure: session.start
    Case(
        "configure",
        "session.start rejected",
        lambda e: e.reject_session_starts(9, "session.audio.format"),
        "fallback",
        "invalid_value",
    ),
    Case(
        "configure",
        "retired model",
        lambda e: e.retired_models.add("gpt-live-1.1"),
        "fallback",
        "model_not_found",
    ),
    # the greeting: the model never speaks
    Case("greet", "no speech", lambda e: e.stall_next_responses(1), "fallback", "no_first_byte"),
    # later turns
    Case(
        "respond",
        "no speech, nudged in vain",
        lambda e: e.stall_next_responses(1),
        "fallback",
        "no_first_byte",
        when="turn",
        bound=NUDGED_HELP_SECS,
    ),
    Case(
        "respond",
        "slow to speak, nudged",
        lambda e: e.stall_next_responses(1, secs=1.3),
        "works",
        when="turn",
        bound=NUDGED_HELP_SECS,
    ),
    Case(
        "respond",
        "session.closed: content",
        lambda e: e.close_on_next_turns(1, "content"),
        "fallback",
        "closed_content",
        when="turn",
    ),
    Case(
        "respond",
        "delegated response failed once",
        lambda e: e.fail_next_delegations(1, "server_error"),
        "works",
        when="turn",
        tool=True,
    ),
    Case(
        "respond",
        "delegated response: insufficient_quota",
        lambda e: e.fail_next_delegations(1, "insufficient_quota"),
        "fallback",
        "insufficient_quota",
        when="turn",
        tool=True,
    ),
    # tools
    Case("tool", "the tool raises", None, "works", when="turn", tool=True),
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
        "reconnect", "socket dropped, 401", _refuse(401), "fallback", "invalid_api_key", when="drop"
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
    Case(
        "reconnect",
        "audio stream stopped",
        lambda e: setattr(e, "live_silence", False),
        "works",
        when="stall",
    ),
    Case(
        "reconnect",
        "session.closed: connection_lost",
        lambda e: e.end_live_sessions("connection_lost"),
        "works",
        when="close",
    ),
    # the session's cap
    Case(
        "rotate",
        "session.closed: expired",
        lambda e: e.end_live_sessions("expired"),
        "works",
        when="close",
    ),
]


@dataclass
class Help:
    """The first help the caller got after a failure."""

    at: float
    kind: str  # "audio", "say", "dial"
    verbs: list = field(default_factory=list)


def _speech_after(caller, after_byte: int) -> float | None:
    """When the caller first heard speech (not quiet) past byte ``after_byte``, if they did."""
    heard = bytes(caller.heard)
    first = next((i for i in range(after_byte, len(heard)) if not is_quiet(heard[i : i + 1])), None)
    if first is None:
        return None
    return next(when for when, played, start in caller.playback if start + played > first)


async def first_help(caller, *, after_byte: int, timeout: float = 15) -> Help:
    """Wait for the first help: bot speech past ``after_byte``, or the TwiML after the stream."""
    await caller.wait_until(
        lambda: _speech_after(caller, after_byte) is not None or caller.stream_ended_at is not None,
        timeout=timeout,
        message="help (speech or the end of the stream)",
    )
    at = _speech_after(caller, after_byte)
    if at is not None:
        return Help(at=at, kind="audio")
    result = await caller.follow_action()
    verbs = [(v.name, v.text) for v in result.verbs]
    return Help(
        at=asyncio.get_running_loop().time(),
        kind="dial" if verbs[0][0] == "Dial" else "say",
        verbs=verbs,
    )


def assert_spliced(heard: bytes, sent: bytes) -> None:
    """``heard`` is ``sent`` in order, byte for byte, with only quiet bytes left out."""
    j = 0
    for i, byte in enumerate(heard):
        while j < len(sent) and sent[j] != byte:
            assert is_quiet(sent[j : j + 1]), f"heard byte {i}: sent byte {j} skipped, not quiet"
            j += 1
        assert j < len(sent), f"heard byte {i} ({byte:#x}) was never sent after sent byte {j}"
        j += 1


def assert_phone_format(emulator: RealtimeEmulator, caller) -> None:
    """The caller heard only the sessions' own ``audio/pcmu`` output, in order."""
    sessions = emulator.live_sessions
    assert all(s.audio_format == ("audio/pcmu", 8000) for s in sessions if s.started)
    assert_spliced(bytes(caller.heard), b"".join(bytes(s.output_audio) for s in sessions))


def assert_nothing_before_started(emulator: RealtimeEmulator) -> None:
    """No caller audio, commentary or other command before ``session.started``."""
    for session in emulator.live_sessions:
        started = [e.sent_at for e in session.sent_of_type("session.started") if e.sent_at]
        early = [
            e
            for e in session.client_events
            if e.get("type") != "session.start" and (not started or e.received_at < started[0])
        ]
        assert early == [], f"{session.id}: {[e.get('type') for e in early]} before it started"


def _log(case: Case, secs: float | None, help: Help | None) -> None:
    path = os.environ.get("FAULT_MATRIX_LOG")
    if not path:
        return
    row = {
        "engine": "live",
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
async def test_the_caller_hears_help_in_time_on_gpt_live(case: Case):
    async with phone_call(pipeline=case.bot, replies=replies(case.tool)) as (
        emulator,
        runner,
        caller,
    ):
        if case.when == "start" and case.arrange is not None:
            case.arrange(emulator)
        since, after_byte = await _fail(case, emulator, caller)
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
        assert_nothing_before_started(emulator)
        assert emulator.validation_errors == []
        assert emulator.server_event_errors == []

        if case.expect == "works" and case.when in ("drop", "close", "stall"):
            # A new session, given the conversation so far (the greeting, as the bot's).
            assert len(emulator.live_sessions) == 2
            history = emulator.live_sessions[1].config.get("input") or []
            said = {"type": "message", "role": "assistant"}
            assert {**said, "content": [{"type": "output_text", "text": GREETING}]} in history
        if case.expect == "works":
            await _still_works(caller)
            await caller.hangup()
        await caller.wait_until(lambda: runner.finished, timeout=10)
        record = runner.finished[0]
        assert record.engine == "live"
        if case.expect == "works":
            assert not record.end_reason.startswith("failed"), record.end_reason
            reopened = runner.metrics.registry.get_sample_value("prt_realtime_reconnects_total")
            assert reopened == (1 if case.stage == "reconnect" else 0)
            return
        assert record.end_reason == f"failed: {case.stage}: {case.code}"
        labels = {"stage": case.stage, "code": case.code}
        assert runner.metrics.registry.get_sample_value("prt_call_failures_total", labels) == 1
        await caller.wait_until(lambda: runner.store.get(caller.call_sid), timeout=5)
        assert runner.store.get(caller.call_sid).end_reason == record.end_reason


async def _fail(case: Case, emulator: RealtimeEmulator, caller) -> tuple[float, int]:
    """Place the call and make the case's failure happen; return when, and the bytes heard."""
    loop = asyncio.get_running_loop()
    await caller.call()
    if case.when == "start":
        return caller.started_at, 0
    await caller.wait_heard(300, timeout=10)
    await caller.wait_quiet(quiet_ms=600, timeout=10)  # past the greeting's trailing quiet
    heard, at = len(caller.heard), loop.time()
    if case.when == "drop":
        if case.arrange is not None:
            case.arrange(emulator)
        await emulator.drop_connections()
    elif case.when == "stall" and case.arrange is not None:
        case.arrange(emulator)  # no audio at all now: the agent gives the session up
        await emulator.wait_for_live_session(1, timeout=STREAM_STALL_SECS + 3)
        heard, at = len(caller.heard), loop.time()
    elif case.arrange is not None:
        result = case.arrange(emulator)
        if asyncio.iscoroutine(result):
            await result
    if caller.stream_ended_at is None:
        speaking = caller.say(SPEECH)  # the call may end before the caller is done
        speaking.add_done_callback(lambda f: f.cancelled() or f.exception())
    return at, heard


def _failure_time(case: Case, emulator: RealtimeEmulator, since: float) -> float:
    """The moment the failure happened (or help became owed), from the emulator's records."""
    turns = [r for s in emulator.live_sessions for r in s.responses]
    stalled = [r for r in turns if r.stall_secs]
    if stalled:
        return stalled[-1].triggered_at
    failed = [r for r in turns if r.status == "failed" and r.done_at]
    if failed:
        return failed[-1].done_at
    closed = [r for r in turns if r.status == "closed" and r.done_at]
    if closed:
        return closed[-1].done_at
    if case.stage == "tool":
        calls = [r for r in turns if r.reply and r.reply.function_call and r.done_at]
        return calls[0].done_at
    if case.when in ("drop", "close", "stall"):
        # The caller's turn ended (the answer is owed from then), or a fallback from the drop.
        answered = [r for r in turns if r.trigger == "vad" and r.triggered_at > since]
        return max([since, *(r.triggered_at for r in answered[:1])])
    return since


async def _still_works(caller) -> None:
    """The call goes on: the caller's next turn is answered and heard."""
    await caller.wait_quiet(quiet_ms=600, timeout=10)
    heard = len(caller.heard)
    await caller.say(SPEECH)
    await caller.wait_until(
        lambda: _speech_after(caller, heard) is not None, timeout=10, message="an answer"
    )
