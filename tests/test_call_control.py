"""Call control over real sockets: end_call, transfer_call, keypad input, tools, limits."""

import asyncio
import contextlib
import json

import aiohttp
import pytest
from conftest import AUTH_TOKEN, phone_call
from pipecat.frames.frames import Frame, InputDTMFFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_realtime_twilio import RealtimeAgent
from pipecat_realtime_twilio.agent.limits import CallLimits
from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT, TOOL_ERROR_MESSAGE
from pipecat_realtime_twilio.agent.tools import end_call, realtime_tool, transfer_call
from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.failures import FALLBACK_LINE
from pipecat_realtime_twilio.phone.twiml import hangup_twiml, say_twiml
from pipecat_realtime_twilio.testing.emulator import FunctionCall, Reply
from pipecat_realtime_twilio.testing.fake_rest import FakeTwilioRest
from pipecat_realtime_twilio.testing.model import last_keypad_input, say_as_asked, words_to_say
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

INSTRUCTIONS = "You are a test bot."
SPEECH = tone(600) + silence(700)


def agent_bot(agents=None, **agent_options):
    """A bot builder: the three-entry pipeline with an agent made of ``agent_options``."""

    def pipeline(call):
        agent = RealtimeAgent(instructions=INSTRUCTIONS, **agent_options)
        if agents is not None:
            agents.append(agent)
        return [call.input(), agent, call.output()]

    return pipeline


def foreign_twiml(runner, caller, after: str = "") -> str:
    """TwiML not written by the runner: a stream to it (with a valid token), no action URL."""
    token = runner.tokens.issue(caller.call_sid)
    return (
        "<Response><Connect>"
        f'<Stream url="{runner.settings.websocket_origin}/media-stream">'
        f'<Parameter name="token" value="{token}"/></Stream>'
        f"</Connect>{after}</Response>"
    )


def end_of_audio(caller) -> float:
    """Loop time at which the phone finished playing the last byte it heard."""
    return caller.play_time_of(len(caller.heard) - 1) + 1 / BYTES_PER_MS / 1000


@contextlib.asynccontextmanager
async def with_credentials(pipeline, settings: dict | None = None, *, attach=True, **options):
    """A call whose runner has Twilio REST credentials: the fake REST API, the caller attached.

    With ``attach=False`` the fake takes updates but never ends the caller's stream.
    """
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as rest:
        settings = {
            "twilio_account_sid": rest.account_sid,
            "twilio_api_url": rest.url,
            **(settings or {}),
        }
        async with phone_call(pipeline=pipeline, settings=settings, **options) as (
            emulator,
            runner,
            caller,
        ):
            caller.account_sid = rest.account_sid
            if attach:
                rest.attach(caller)
            else:
                rest.add_call(caller.call_sid)
            yield emulator, runner, caller, rest


def debugger_codes(caller) -> list[int]:
    return [code for _, code, _ in caller.debugger_errors]


async def metric(runner, caller, sample: str) -> float | None:
    """A sample of GET /metrics, e.g. ``prt_stream_events_total{event="stream-started"}``."""
    async with aiohttp.ClientSession() as session:
        async with session.get(caller.server_url + "/metrics") as response:
            text = await response.text()
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample)]
    return float(values[0]) if values else None


def dialled(result) -> tuple[str, str]:
    """(what is dialled, how): ``("+1555...", "number")`` or ``("sip:...", "Sip")``."""
    [dial] = result.verbs
    assert dial.name == "Dial", result.twiml
    if dial.children:
        [noun] = dial.children
        return noun.text, noun.name
    return dial.text, "number"


async def test_end_call_hangs_up_only_after_the_goodbye_was_heard():
    goodbye = Reply(text="Goodbye, have a lovely day!", function_call=FunctionCall("end_call", {}))
    async with phone_call(pipeline=agent_bot(tools=[end_call()]), replies=[goodbye]) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)

        response = emulator.sessions[0].responses[0]
        assert response.status == "completed" and response.call_id
        # The whole goodbye was heard, and only then did the stream close.
        assert bytes(caller.heard) == bytes(response.audio)
        goodbye_heard_at = end_of_audio(caller)
        assert caller.stream_ended_at is not None and caller.hung_up_at is None
        assert caller.stream_ended_at >= goodbye_heard_at, (
            caller.stream_ended_at,
            goodbye_heard_at,
        )
        # ... and not long after (the last mark echo is what it waits for).
        assert caller.stream_ended_at - goodbye_heard_at < 0.5

        # The function call got its output; no further response was asked for.
        outputs = emulator.sessions[0].function_outputs
        assert [o.call_id for o in outputs] == [response.call_id]
        assert len(emulator.sessions[0].responses) == 1

        # Twilio then asks the <Connect action> URL, which hangs up.
        after = await caller.follow_action()
        assert [verb.name for verb in after.verbs] == ["Hangup"]
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "bot ended the call"
        assert emulator.validation_errors == []
        # Without REST credentials the runner closes the stream itself, and Twilio's
        # debugger logs every such close as error 31921: why credentials matter.
        assert debugger_codes(caller) == [31921]
        assert caller.ended_by_twilio_at is None


async def test_transfer_call_dials_the_configured_number_through_the_action_url():
    transfer = Reply(
        text="Let me put you through.", function_call=FunctionCall("transfer_call", {})
    )
    bot = agent_bot(tools=[transfer_call("+15557654321")])
    async with phone_call(pipeline=bot, replies=[transfer]) as (emulator, runner, caller):
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)
        response = emulator.sessions[0].responses[0]
        assert bytes(caller.heard) == bytes(response.audio)
        assert caller.stream_ended_at >= end_of_audio(caller)

        after = await caller.follow_action()
        [dial] = after.verbs
        assert dial.name == "Dial" and dial.text == "+15557654321"
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "transferred to +15557654321"


async def test_transfer_call_uses_the_rest_api_without_our_action_url():
    transfer = Reply(text="Transferring you now.", function_call=FunctionCall("transfer_call", {}))
    bot = agent_bot(tools=[transfer_call("+15557654321")])
    async with with_credentials(bot, replies=[transfer]) as (emulator, runner, caller, rest):
        # TwiML of someone else's: a stream to our runner, no action URL of ours.
        caller.load_twiml(foreign_twiml(runner, caller))
        await caller.connect()
        await caller.say(SPEECH)
        await caller.wait_until(lambda: rest.requests_to(caller.call_sid, "POST"), timeout=15)

        [update] = rest.requests_to(caller.call_sid, "POST")
        assert "<Dial>+15557654321</Dial>" in update.form["Twiml"]
        assert update.time >= end_of_audio(caller)
        await caller.wait_ended(timeout=5)
        assert caller.ended_by_twilio_at is not None and debugger_codes(caller) == []
        assert dialled(caller.redirect_result) == ("+15557654321", "number")


async def test_end_call_hangs_up_through_the_rest_api_without_our_action_url():
    goodbye = Reply(text="Goodbye!", function_call=FunctionCall("end_call", {}))
    bot = agent_bot(tools=[end_call()])
    async with with_credentials(bot, replies=[goodbye]) as (emulator, runner, caller, rest):
        caller.load_twiml(foreign_twiml(runner, caller, after="<Say>More TwiML.</Say>"))
        await caller.connect()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)
        [update] = rest.requests_to(caller.call_sid, "POST")
        assert update.form == {"Twiml": hangup_twiml()}
        assert update.time >= end_of_audio(caller)
        assert rest.calls[caller.call_sid]["status"] == "completed"
        assert caller.ended_by_twilio_at is not None and debugger_codes(caller) == []


async def test_end_call_with_credentials_goes_through_rest_and_twilio_ends_the_stream():
    goodbye = Reply(text="Goodbye, have a lovely day!", function_call=FunctionCall("end_call", {}))
    bot = agent_bot(tools=[end_call()])
    async with with_credentials(bot, replies=[goodbye]) as (emulator, runner, caller, rest):
        await caller.call()  # the runner's own TwiML: <Connect action>, a statusCallback
        assert caller.dial_result.stream_attributes["statusCallback"].endswith("/stream-status")
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)

        response = emulator.sessions[0].responses[0]
        assert bytes(caller.heard) == bytes(response.audio)
        # The goodbye was heard, then the call was updated with <Hangup/>, at once.
        [update] = rest.requests_to(caller.call_sid, "POST")
        assert update.form == {"Twiml": hangup_twiml()}
        heard_at = end_of_audio(caller)
        assert heard_at <= update.time < heard_at + 0.5, (update.time, heard_at)
        # Twilio ended the stream (stop, then the socket closed): nothing in its debugger.
        assert caller.ended_by_twilio_at is not None and caller.ended_by_twilio_at >= update.time
        assert caller.stream_ended_at is None and caller.hung_up_at is None
        assert debugger_codes(caller) == []
        assert [v.name for v in caller.redirect_result.verbs] == ["Hangup"]
        assert rest.calls[caller.call_sid]["status"] == "completed"

        # The end is the bot's, though Twilio's stop came after; both stream events are
        # on the record (stream-stopped usually after it was kept: the record is amended).
        def events():
            kept = [r for r in runner.finished if r.call_sid == caller.call_sid]
            return [e["event"] for e in kept[0].stream_events] if kept else []

        await caller.wait_until(lambda: "stream-stopped" in events(), timeout=5)
        assert events() == ["stream-started", "stream-stopped"]
        [record] = runner.finished
        assert record.end_reason == "bot ended the call"
        assert {e["stream_sid"] for e in record.stream_events} == {caller.stream_sid}
        assert all(abs(e["at"] - record.started_at) < 30 for e in record.stream_events)
        assert [status for _, _, status in caller.stream_callbacks] == [204, 204]
        await runner.records.settle(timeout=5)
        stored = runner.store.get(caller.call_sid)
        assert stored.end_reason == "bot ended the call"
        assert [e["event"] for e in stored.stream_events] == events()
        for event in ("stream-started", "stream-stopped"):
            sample = f'prt_stream_events_total{{event="{event}"}}'
            assert await metric(runner, caller, sample) == 1.0
        assert emulator.validation_errors == []


@pytest.mark.parametrize("credentials", [False, True], ids=["action-url", "rest"])
async def test_transfer_call_to_a_sip_address_dials_sip(credentials):
    transfer = Reply(text="Putting you through.", function_call=FunctionCall("transfer_call", {}))
    bot = agent_bot(tools=[transfer_call("sip:alice@example.com")])
    if credentials:
        call = with_credentials(bot, replies=[transfer])
    else:
        call = phone_call(pipeline=bot, replies=[transfer])
    async with call as (emulator, runner, caller, *rest):
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)
        sip = "<Dial><Sip>sip:alice@example.com</Sip></Dial>"
        if credentials:
            [update] = rest[0].requests_to(caller.call_sid, "POST")
            assert sip in update.form["Twiml"]
            after = caller.redirect_result
        else:
            after = await caller.follow_action()
            assert sip in after.twiml
        assert dialled(after) == ("sip:alice@example.com", "Sip")
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "transferred to sip:alice@example.com"


@pytest.mark.parametrize("credentials", [False, True], ids=["action-url", "rest"])
async def test_a_sip_fallback_number_is_dialled_as_sip(credentials):
    bot = agent_bot(greeting="Hello.", fallback_number="sip:desk@example.com")
    settings = {"prewarm": False}
    if credentials:
        call = with_credentials(bot, settings)
    else:
        call = phone_call(pipeline=bot, settings=settings)
    async with call as (emulator, runner, caller, *rest):
        emulator.refuse_handshakes(99, 401)
        await caller.call()
        await caller.wait_ended(timeout=15)
        if credentials:
            [update] = rest[0].requests_to(caller.call_sid, "POST")
            assert "<Dial><Sip>sip:desk@example.com</Sip></Dial>" in update.form["Twiml"]
            assert debugger_codes(caller) == []
            after = caller.redirect_result
        else:
            after = await caller.follow_action()
        assert dialled(after) == ("sip:desk@example.com", "Sip")
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "failed: connect: invalid_api_key"


async def test_a_failing_rest_update_falls_back_to_the_action_url():
    goodbye = Reply(text="Goodbye, have a lovely day!", function_call=FunctionCall("end_call", {}))
    bot = agent_bot(tools=[end_call()])
    async with with_credentials(bot, replies=[goodbye]) as (emulator, runner, caller, rest):
        rest.fail_next(3, 503)  # every try of the update (TwilioRest retries twice)
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)

        assert [r.status for r in rest.requests_to(caller.call_sid, "POST")] == [503] * 3
        response = emulator.sessions[0].responses[0]
        assert bytes(caller.heard) == bytes(response.audio)
        assert caller.gaps(min_ms=50) == []  # the goodbye played through, no dead air
        # The stream was closed by the runner (31921), after the retries.
        assert caller.stream_ended_at >= end_of_audio(caller)
        assert caller.ended_by_twilio_at is None and debugger_codes(caller) == [31921]
        after = await caller.follow_action()
        assert after.verb_names == ["Hangup"]
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "bot ended the call"


async def test_a_fallback_goes_through_rest_with_credentials():
    async with with_credentials(agent_bot(greeting="Hello."), {"prewarm": False}) as (
        emulator,
        runner,
        caller,
        rest,
    ):
        emulator.refuse_handshakes(99, 401)
        await caller.call()
        await caller.wait_ended(timeout=15)
        [update] = rest.requests_to(caller.call_sid, "POST")
        assert update.form["Twiml"] == say_twiml(FALLBACK_LINE)
        assert caller.ended_by_twilio_at is not None and debugger_codes(caller) == []
        assert [(v.name, v.text) for v in caller.redirect_result.verbs] == [
            ("Say", FALLBACK_LINE),
            ("Hangup", ""),
        ]
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "failed: connect: invalid_api_key"


async def test_keypad_digits_reach_the_model_and_the_pipeline():
    dtmf_frames = []

    class KeypadRecorder(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection):
            await super().process_frame(frame, direction)
            if isinstance(frame, InputDTMFFrame):
                dtmf_frames.append(frame.button.value)
            await self.push_frame(frame, direction)

    def pipeline(call):
        agent = RealtimeAgent(
            instructions="Ask the caller to press 1 for yes or 2 for no.",
            greeting="Press 1 for yes or 2 for no.",
            dtmf_timeout_secs=0.3,
        )
        return [call.input(), agent, KeypadRecorder(), call.output()]

    def model(session, trigger):
        words = words_to_say(session, trigger)
        if words:
            return Reply(text=words)
        digits = last_keypad_input(session)
        return Reply(text="You said yes." if digits == "1" else "You said no.")

    async with phone_call(pipeline=pipeline, replies=model) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=500, timeout=10)
        greeting = len(caller.heard)
        await caller.press("1")
        await caller.wait_quiet(after=greeting, quiet_ms=500, timeout=10)

        session = emulator.sessions[0]
        [keypad] = [
            item
            for item in session.items
            if item.get("role") == "user" and item["content"][0]["type"] == "input_text"
        ]
        assert keypad["content"][0]["text"] == KEYPAD_INPUT + "1"
        answer = session.responses[-1]
        assert answer.transcript == "You said yes."
        assert bytes(caller.heard[greeting:]) == bytes(answer.audio)
        assert dtmf_frames == ["1"]
        assert emulator.validation_errors == []


async def test_keypad_interrupts_the_bot_mid_sentence():
    def model(session, trigger):
        if last_keypad_input(session):
            return Reply(text="Got it.")
        return Reply(text="Here is a very long menu of options. " * 5, duration_ms=8000)

    async with phone_call(pipeline=agent_bot(greeting="Menu."), replies=model) as (
        emulator,
        runner,
        caller,
    ):
        await caller.call()
        await caller.wait_heard(1000, timeout=10)
        await caller.press("2#")
        await caller.wait_until(lambda: caller.clears, timeout=5, message="a clear")
        await caller.wait_quiet(after=len(caller.heard), quiet_ms=500, timeout=10)
        session = emulator.sessions[0]
        assert session.truncations and session.truncations[0].accepted
        assert session.responses[-1].transcript == "Got it."
        assert last_keypad_input(session) == "2#"


async def test_a_decorated_tool_answers_and_a_failing_one_apologizes():
    calls = []

    @realtime_tool
    async def order_status(order_number: int) -> dict:
        """Look up where an order is.

        Args:
            order_number: The order number the caller reads out.
        """
        calls.append(order_number)
        return {"order": order_number, "status": "shipped"}

    @realtime_tool
    def refund(order_number: int) -> str:
        """Refund an order.

        Args:
            order_number: The order to refund.
        """
        raise RuntimeError("the refund service is down")

    @realtime_tool(timeout_secs=0.3)
    async def slow_lookup() -> str:
        """A lookup that takes too long."""
        await asyncio.sleep(5)
        return "never"

    replies = [
        Reply(function_call=FunctionCall("order_status", {"order_number": "42"})),
        Reply(text="Your order has shipped."),
        Reply(function_call=FunctionCall("refund", {"order_number": 42})),
        Reply(function_call=FunctionCall("slow_lookup", {})),
        Reply(text="Still here, how else can I help?"),
    ]

    def model(session, trigger):
        words = words_to_say(session, trigger)
        return Reply(text=words) if words else replies.pop(0)

    bot = agent_bot(tools=[order_status, refund, slow_lookup])
    async with phone_call(pipeline=bot, replies=model) as (emulator, runner, caller):
        await caller.call()
        session_outputs = lambda: emulator.sessions[0].function_outputs  # noqa: E731

        # A typed tool: "42" arrives as the int 42, the result goes back, the answer is heard.
        await caller.say(SPEECH)
        await caller.wait_until(lambda: len(emulator.sessions[0].responses) >= 2, timeout=10)
        await caller.wait_quiet(quiet_ms=500, timeout=10)
        assert calls == [42]
        assert json.loads(session_outputs()[0].output) == {"order": 42, "status": "shipped"}
        answer = emulator.sessions[0].responses[1]
        assert answer.trigger == "response.create"
        assert answer.transcript == "Your order has shipped."
        heard = len(caller.heard)
        assert heard == len(answer.audio)

        # A tool that raises: the error goes back, and the bot apologizes.
        await caller.say(SPEECH)
        await caller.wait_quiet(after=heard, quiet_ms=500, timeout=10)
        assert "error" in json.loads(session_outputs()[1].output)
        apology = emulator.sessions[0].responses[-1]
        assert apology.transcript == TOOL_ERROR_MESSAGE
        heard = len(caller.heard)

        # A tool that times out: the same, and the call goes on.
        await caller.say(SPEECH)
        await caller.wait_quiet(after=heard, quiet_ms=500, timeout=10)
        assert "timed out" in json.loads(session_outputs()[2].output)["error"]
        assert emulator.sessions[0].responses[-1].transcript == TOOL_ERROR_MESSAGE
        heard = len(caller.heard)

        await caller.say(SPEECH)
        await caller.wait_quiet(after=heard, quiet_ms=500, timeout=10)
        assert emulator.sessions[0].responses[-1].transcript == "Still here, how else can I help?"
        assert not caller.ended
        assert emulator.validation_errors == []


async def test_max_duration_says_the_closing_line_then_ends():
    limits = CallLimits(max_duration_secs=2.0, closing_line="Time is up, goodbye.")
    long_greeting = Reply(text="A very long greeting. " * 10, duration_ms=6000)
    agents = []

    def model(session, trigger):
        words = words_to_say(session, trigger)
        return Reply(text=words) if words == limits.closing_line else long_greeting

    bot = agent_bot(agents, greeting="Hello.", limits=limits)
    async with phone_call(pipeline=bot, replies=model) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_ended(timeout=15)
        session = emulator.sessions[0]
        closing = session.responses[-1]
        assert closing.transcript == limits.closing_line
        # The greeting was cut off at the limit; the closing line was heard in full.
        assert len(caller.clears) == 1
        assert bytes(caller.heard).endswith(bytes(closing.audio))
        assert caller.stream_ended_at >= end_of_audio(caller)
        assert 2.0 <= caller.stream_ended_at - caller.started_at < 2.0 + 3.0
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "maximum duration reached"


async def test_silence_timeout_prompts_once_then_ends():
    limits = CallLimits(
        silence_timeout_secs=1.0, silence_prompt="Hello?", silence_goodbye="Bye then."
    )
    async with phone_call(
        pipeline=agent_bot(greeting="Hi there.", limits=limits), replies=say_as_asked()
    ) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_ended(timeout=15)
        spoken = [r.transcript for r in emulator.sessions[0].responses]
        assert spoken == ["Hi there.", "Hello?", "Bye then."]
        assert caller.stream_ended_at >= end_of_audio(caller)
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "silence timeout"


async def test_caller_speech_resets_the_silence_timeout():
    limits = CallLimits(silence_timeout_secs=1.0, silence_prompt="Hello?")
    async with phone_call(
        pipeline=agent_bot(greeting="Hi.", limits=limits),
        replies=say_as_asked(Reply(text="Sure.")),
    ) as (emulator, runner, caller):
        await caller.call()
        await caller.wait_quiet(quiet_ms=300, timeout=10)
        for _ in range(3):  # keeps talking within the timeout
            await caller.say(tone(300) + silence(600))
        await caller.wait_until(
            lambda: "Hello?" in [r.transcript for r in emulator.sessions[0].responses],
            timeout=10,
        )
        spoken = [r.transcript for r in emulator.sessions[0].responses]
        assert spoken[0] == "Hi." and "Sure." in spoken
        assert not caller.ended


async def test_the_stream_is_closed_if_twilio_does_not_end_it_after_the_update(monkeypatch):
    from pipecat_realtime_twilio.phone import control

    monkeypatch.setattr(control, "STOP_GRACE_SECS", 0.5)
    goodbye = Reply(text="Goodbye!", function_call=FunctionCall("end_call", {}))
    bot = agent_bot(tools=[end_call()])
    # An update that Twilio takes, but no stop comes.
    async with with_credentials(bot, replies=[goodbye], attach=False) as (_, runner, caller, rest):
        await caller.call()
        await caller.say(SPEECH)
        await caller.wait_ended(timeout=15)
        [update] = rest.requests_to(caller.call_sid, "POST")
        assert 0.5 <= caller.stream_ended_at - update.time < 1.0
        assert caller.ended_by_twilio_at is None
        await caller.wait_until(lambda: runner.finished, timeout=5)
        assert runner.finished[0].end_reason == "bot ended the call"
