"""The example GPT-Live bot (``bots/concierge_live.md``) through a whole scripted call.

The runner, the emulator speaking GPT-Live and a simulated Twilio caller, over real
sockets: the greeting is heard, a question is answered, a tool is called and the call
ends once the goodbye was heard. Every Live client event validates against
``openai.types.live`` (the emulator refuses anything else), and the μ-law is the
same bytes both ways: what the caller sent is what the model got, and what the
caller heard is what the model sent, less the quiet between utterances.
"""

import pytest

from pipecat_realtime_twilio.agent.live_ledger import is_quiet
from pipecat_realtime_twilio.testing.scenario import Scenario

pytestmark = pytest.mark.call

GREETING = "Good evening, you've reached the Harbor Hotel concierge. How can I help you?"
ANSWER = "Breakfast is served from seven to ten in the Lighthouse room."
GOODBYE = "You're welcome. Have a lovely night, goodbye."


def assert_spliced(heard: bytes, sent: bytes) -> None:
    """``heard`` is ``sent`` in order, byte for byte, with only quiet bytes left out."""
    j = 0
    for i, byte in enumerate(heard):
        while j < len(sent) and sent[j] != byte:
            assert is_quiet(sent[j : j + 1]), f"heard byte {i}: sent byte {j} skipped, not quiet"
            j += 1
        assert j < len(sent), f"heard byte {i} ({byte:#x}) was never sent after sent byte {j}"
        j += 1


def speech(audio: bytes) -> bytes:
    """``audio`` without its quiet bytes."""
    return bytes(b for b in audio if not is_quiet(bytes([b])))


async def test_concierge_on_gpt_live_greets_answers_and_hangs_up_after_the_goodbye():
    async with Scenario("concierge_live") as call:
        await call.start()
        session = call.emulator.live_sessions[0]
        assert session.audio_format == ("audio/pcmu", 8000)
        assert session.delegation["type"] == "responses"
        tools = [t["name"] for t in session.delegation["responses"]["tools"]]
        assert tools == ["end_call", "transfer_call"]
        assert call.transcript[0] == ("bot", GREETING)

        call.model.says(ANSWER)
        await call.caller_says("When is breakfast served?")
        assert call.transcript[-2:] == [("caller", "When is breakfast served?"), ("bot", ANSWER)]

        call.model.calls("end_call")
        call.model.says(GOODBYE)  # the backend's answer to the tool's result, spoken
        await call.caller_says("That's all I needed, thanks.")
        await call.ended()

        assert call.tool_calls == [("end_call", {}, {"status": "ending the call"})]
        assert call.hung_up_by_bot
        record = call.record
        assert record is not None
        assert record.end_reason == "bot ended the call"
        assert record.engine == "live" and record.model == "gpt-live-1.1"
        assert record.greeting == "model"
        assert [t["text"] for t in record.transcript if t["role"] == "bot"][-1] == GOODBYE
        assert [c["name"] for c in record.tool_calls] == ["end_call"]
        assert record.live is not None and record.live["billed_seconds"] > 0
        assert record.cost["live"] == pytest.approx(record.live["billed_seconds"] / 60 * 0.05)
        assert record.cost_usd is not None and record.cost_usd >= record.cost["live"]
        metrics = call.runner.metrics.registry
        assert metrics.get_sample_value("prt_live_seconds_total") == record.live["billed_seconds"]
        print(
            f"\nconcierge_live: {record.live['billed_seconds']:.0f} s billed, "
            f"cost ${record.cost_usd:.5f} {record.cost}"
        )

        # The goodbye was heard in full before the call ended.
        goodbye = next(r for r in session.responses if r.reply and r.reply.text == GOODBYE)
        heard = bytes(call.caller.heard)
        assert goodbye.status == "completed"
        assert speech(heard).endswith(speech(goodbye.audio))

        # Every client event was a valid openai.types.live event; the server's too.
        assert call.emulator.validation_errors == []
        assert call.emulator.server_event_errors == []
        assert call.model.unscripted == 0

        # μ-law both ways, bit for bit.
        received = bytes(session.input_audio)
        sent_by_caller = bytes(call.caller.sent_audio)
        assert len(received) >= len(sent_by_caller) - 2 * 160  # the last packets may be in flight
        assert received == sent_by_caller[: len(received)]
        sent_by_model = bytes(session.output_audio)
        assert_spliced(heard, sent_by_model)
        assert speech(heard) == speech(sent_by_model)[: len(speech(heard))]
        assert len(speech(heard)) >= sum(len(speech(r.audio)) for r in session.responses)
