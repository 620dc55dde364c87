"""Post-call analysis: declared fields, filled after a call by the (emulated) Responses API."""

import json
import re
from pathlib import Path

import aiohttp
import openai
import pytest
from conftest import ROOT, LocalServer, bots_check, runner_settings
from fastapi import FastAPI, Request, Response
from openai.types.responses import ResponseUsage

from pipecat_realtime_twilio.errors import BotError
from pipecat_realtime_twilio.runner.analysis import (
    ABANDONED,
    TEXT_PRICES,
    PostCallAnalysis,
    analysis_cost_usd,
    call_text,
)
from pipecat_realtime_twilio.runner.analysis_spec import (
    SUMMARY,
    AnalysisDeclarationError,
    check_analysis,
    output_model,
)
from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
from pipecat_realtime_twilio.runner.bots import load_bot_file, load_markdown_bot
from pipecat_realtime_twilio.runner.metrics import RunnerMetrics
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.emulator.responses_checks import strict_schema_problem
from pipecat_realtime_twilio.testing.scenario import Scenario

BOTS = ROOT / "bots"
DECLARED = {
    "outcome": {"type": "string", "enum": ["message_taken", "transferred", "no_message"]},
    "callback_requested": {"type": "boolean"},
    "caller_name": {"type": "string"},
}
TYPES = {"string": str, "boolean": bool}

BAD_BOT = """\
---
description: A bot whose analysis is wrong in many ways.
analysis:
  fields:
    outcome:
      type: string
      enum: [yes, no]
      description: Whether they agreed.
    2nd_try: {type: boolean, description: Whether they called before.}
    when:
      type: date
      description: When to call back.
    rating: {type: integer}
    summary: {type: string, description: Ours.}
  colour: blue
---
You are a test bot.
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def answered(record: CallRecord | None) -> bool:
    return record is not None and record.analysis is not None


# --------------------------------------------------------------------------------------------
# The declaration
# --------------------------------------------------------------------------------------------


def test_the_example_bot_declares_its_fields_and_the_answer_schema_is_strict():
    bot = load_markdown_bot(BOTS / "receptionist.md")
    assert bot.analysis is not None
    assert {name: f.type for name, f in bot.analysis.fields.items()} == {
        name: d["type"] for name, d in DECLARED.items()
    }
    schema = output_model(bot.analysis).model_json_schema()
    assert list(schema["properties"]) == [SUMMARY, *DECLARED]
    assert schema["required"] == [SUMMARY, *DECLARED]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["outcome"]["enum"] == DECLARED["outcome"]["enum"]
    assert schema["properties"]["callback_requested"]["type"] == "boolean"
    assert strict_schema_problem(schema) is None  # what the emulator (and the API) accept


def test_every_type_and_any_name_make_a_model_that_checks_the_answer():
    spec = check_analysis(
        {
            "fields": {
                "json": {"type": "integer", "description": "A name pydantic itself uses."},
                "score": {"type": "number", "description": "A number."},
                "tags": {"type": "array", "enum": ["late"], "description": "Tags."},
                "notes": {"type": "array", "description": "Notes."},
            },
            "model": "gpt-4.1",
        }
    )
    model = output_model(spec)
    good = {"summary": "s", "json": 3, "score": 2.5, "tags": ["late"], "notes": ["a", "b"]}
    assert model.model_validate_json(json.dumps(good)).model_dump(by_alias=True) == good
    schema = model.model_json_schema()
    assert schema["properties"]["tags"]["items"] == {"enum": ["late"], "type": "string"}
    for wrong in ({**good, "json": "3"}, {**good, "tags": ["early"]}, {**good, "extra": 1}):
        with pytest.raises(ValueError):
            model.model_validate_json(json.dumps(wrong))


def test_bad_declarations_are_reported_each_with_its_line_and_key(tmp_path):
    path = write(tmp_path, "bad.md", BAD_BOT)
    with pytest.raises(BotError) as error:
        load_markdown_bot(path)
    lines = str(error.value).splitlines()
    assert lines == [
        f"{path}:7: analysis.fields.outcome.enum[0]: True is not text: quote it in YAML "
        "(e.g. 'yes', 'no', 'on', '1')",
        f"{path}:7: analysis.fields.outcome.enum[1]: False is not text: quote it in YAML "
        "(e.g. 'yes', 'no', 'on', '1')",
        f"{path}:9: analysis.fields.2nd_try: '2nd_try' is no field name (letters, digits and _, "
        "not starting with a digit, at most 64)",
        f"{path}:11: analysis.fields.when.type: unknown type 'date' (known: string, boolean, "
        "integer, number, array)",
        f"{path}:13: analysis.fields.rating.description: needs a description: it tells the "
        "model what to put there",
        f"{path}:14: analysis.fields.summary: 'summary' is always there: declare only the other "
        "fields",
        f"{path}:15: analysis.colour: unknown key (known: fields, instructions, model)",
    ]


@pytest.mark.parametrize(
    ("declared", "says"),
    [
        ("[outcome]", "analysis: must be a mapping"),
        ("{fields: {x: {type: boolean, description: d, enum: [a]}}}", "x.enum: only a string"),
        ("{fields: {x: {type: string, description: d, enum: []}}}", "x.enum: lists no value"),
        ("{fields: {x: {type: string, description: d, enum: [a, a]}}}", "lists 'a' twice"),
        ("{fields: {x: {type: string, description: ' '}}}", "x.description: is empty"),
        ("{fields: {x: }}", "fields.x: must be a mapping: type, description"),
        ("{model: ''}", "analysis.model: is empty"),
    ],
)
def test_each_kind_of_mistake_has_a_clear_line(tmp_path, declared, says):
    path = write(tmp_path, "bot.md", f"---\nanalysis: {declared}\n---\nYou are a bot.\n")
    with pytest.raises(BotError, match=f"^{re.escape(str(path))}:2: .*{re.escape(says)}"):
        load_markdown_bot(path)


def test_a_python_bot_declares_its_analysis_as_ANALYSIS(tmp_path):
    source = (
        "ANALYSIS = {'fields': {'booked': {'type': 'boolean', 'description': 'Booked?'}}}\n"
        "def pipeline(call):\n    return []\n"
    )
    bot = load_bot_file(write(tmp_path, "salon.py", source))
    assert bot.analysis is not None and bot.analysis.fields["booked"].type == "boolean"

    bad = "def pipeline(call):\n    return []\n\nANALYSIS = {'fields': {'booked': {}}}\n"
    path = write(tmp_path, "broken.py", bad)
    with pytest.raises(BotError) as error:
        load_bot_file(path)
    assert str(error.value).splitlines() == [
        f"{path}:4: ANALYSIS.fields.booked.type: needs a type (string, boolean, integer, "
        "number, array)",
        f"{path}:4: ANALYSIS.fields.booked.description: needs a description: it tells the "
        "model what to put there",
    ]
    with pytest.raises(AnalysisDeclarationError):
        check_analysis({"fields": {"booked": {}}})


@pytest.mark.call
async def test_bots_check_rejects_bad_declarations_with_clear_lines(tmp_path):
    write(tmp_path, "default.md", "---\ndescription: fine\n---\nYou are a test bot.\n")
    path = write(tmp_path, "bad.md", BAD_BOT)
    code, out = await bots_check(tmp_path)
    assert code == 1
    assert f"error: {path}:7: analysis.fields.outcome.enum[0]: True is not text" in out
    assert f"\nerror: {path}:15: analysis.colour: unknown key" in out
    assert "ok: default" in out


# --------------------------------------------------------------------------------------------
# What is sent, and what it costs
# --------------------------------------------------------------------------------------------


def test_the_call_is_sent_with_labelled_roles_and_bounded():
    record = CallRecord(call_sid="CA1", started_at=100.0)
    record.add_turn("bot", "Acme, how can I help?", at=101.0)
    record.add_turn("caller", "My tap leaks.", at=103.0)
    record.add_turn("bot", "Let me take your", at=104.0, interrupted=True)
    record.add_turn("caller", "", at=105.0, unrecognised=True)
    record.keypad.append({"digits": "12", "at": 103.5})
    record.finish("caller hung up", ended_at=142.0)
    assert call_text(record) == (
        "The call lasted 42 s and ended: caller hung up.\n"
        "Transcript:\n"
        "Bot: Acme, how can I help?\n"
        "Caller: My tap leaks.\n"
        "Caller pressed keys: 12\n"
        "Bot: Let me take your [cut off by the caller]\n"
        "Caller: [could not be transcribed]"
    )
    for n in range(400):
        record.add_turn("caller", f"line {n} " + "x" * 100, at=200.0 + n)
    text = call_text(record, limit=2000)
    assert len(text) < 2100 and "characters left out" in text
    assert text.startswith("The call lasted") and text.endswith("x" * 100)


def test_the_analysis_cost_comes_from_the_text_prices():
    usage = ResponseUsage.model_validate(
        {
            "input_tokens": 1_000_000,
            "input_tokens_details": {"cached_tokens": 200_000, "cache_write_tokens": 0},
            "output_tokens": 100_000,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 1_100_000,
        }
    )
    price = TEXT_PRICES["gpt-4.1-mini"]
    expected = 0.8 * price.input + 0.2 * price.cached_input + 0.1 * price.output
    assert analysis_cost_usd("gpt-4.1-mini", usage) == pytest.approx(expected)
    assert analysis_cost_usd("gpt-4.1-mini-2025-04-14", usage) == pytest.approx(expected)
    assert analysis_cost_usd("a-model-nobody-prices", usage) is None
    assert analysis_cost_usd("gpt-4.1-mini", None) is None


# --------------------------------------------------------------------------------------------
# The emulator's Responses API
# --------------------------------------------------------------------------------------------


@pytest.mark.call
async def test_the_emulator_answers_valid_requests_and_refuses_others_as_openai_does():
    async with RealtimeEmulator(api_key="sk-right") as emulator:
        api = emulator.responses_api
        client = openai.AsyncOpenAI(api_key="sk-right", base_url=emulator.http_url, max_retries=0)
        spec = check_analysis({"fields": {k: {**d, "description": k} for k, d in DECLARED.items()}})
        parsed = await client.responses.parse(
            model="gpt-4.1-mini", input="Caller: hello", text_format=output_model(spec)
        )
        assert parsed.status == "completed" and parsed.usage is not None
        assert parsed.output_parsed is not None
        assert parsed.output_parsed.model_dump(by_alias=True) == {
            "summary": "emulated summary",
            "outcome": "message_taken",
            "callback_requested": True,
            "caller_name": "emulated caller_name",
        }

        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="gpt-4.1-mini", input="x", extra_body={"mood": 1})
        assert refused.value.code == "unknown_parameter" and refused.value.param == "mood"
        loose = {"type": "object", "properties": {"a": {"type": "string"}}}
        text = {"format": {"type": "json_schema", "name": "loose", "schema": loose, "strict": True}}
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="gpt-4.1-mini", input="x", text=text)
        assert refused.value.code == "invalid_json_schema"
        assert "'additionalProperties' is required to be supplied and to be false" in str(
            refused.value
        )
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="gpt-4.1-mini", input=[{"role": "nobody"}])
        assert refused.value.param is not None and refused.value.param.startswith("input")
        wrong_key = openai.AsyncOpenAI(api_key="sk-wrong", base_url=emulator.http_url)
        with pytest.raises(openai.AuthenticationError):
            await wrong_key.responses.create(model="gpt-4.1-mini", input="x")
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": "Bearer sk-right"}
            async with session.post(
                emulator.http_url + "/responses", data=b"{oops", headers=headers
            ) as answer:
                assert answer.status == 400
                assert (await answer.json())["error"]["type"] == "invalid_request_error"
            async with session.post(emulator.http_url + "/chat/completions", json={}) as answer:
                assert answer.status == 404
                assert (await answer.json())["error"]["message"] == (
                    "Invalid URL (POST /v1/chat/completions)"
                )

        assert [c.status for c in api.calls] == [200, 400, 400, 400, 401, 400, 404]
        assert len(api.requests) == 1 and api.answer_errors == []
        await client.close()
        await wrong_key.close()
        # The websocket side is untouched.
        assert emulator.handshake_attempts == 0 and emulator.rejected_handshakes == []


@pytest.mark.call
async def test_the_emulator_fails_as_the_api_does_429_with_retry_after_and_stalls():
    async with RealtimeEmulator() as emulator:
        api = emulator.responses_api
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=emulator.http_url, max_retries=1)
        api.fail_next(1, 429, retry_after=0.2)
        await client.responses.create(model="gpt-4.1-mini", input="x")
        assert [(c.status, c.error, c.retry) for c in api.calls] == [
            (429, "rate_limit_exceeded", 0),
            (200, None, 1),
        ]
        async with aiohttp.ClientSession() as session:
            api.fail_next(1, 429, code="insufficient_quota", retry_after=3)
            async with session.post(emulator.http_url + "/responses", json={}) as answer:
                assert answer.status == 429
                assert answer.headers["Retry-After"] == "3"
                assert (await answer.json())["error"]["type"] == "insufficient_quota"

        api.stall_next(2)  # no answer at all: the client's timeout ends each try
        with pytest.raises(openai.APITimeoutError):
            await client.with_options(timeout=0.3).responses.create(model="gpt-4.1-mini", input="x")
        assert [c.status for c in api.calls[-2:]] == [0, 0]  # nobody was left to answer
        await client.close()


# --------------------------------------------------------------------------------------------
# On a call
# --------------------------------------------------------------------------------------------


def webhook_receiver() -> FastAPI:
    app = FastAPI()
    app.state.received = []

    @app.post("/calls")
    async def calls(request: Request) -> Response:
        app.state.received.append(json.loads(await request.body()))
        return Response(status_code=204)

    return app


async def leave_a_message(call: Scenario) -> None:
    await call.start()
    call.model.says("Sure. May I have your name?")
    await call.caller_says("I'd like to leave a message, please call me back.")
    call.model.calls("end_call", saying="Thanks, Dana. Someone will call you back. Goodbye!")
    await call.caller_says("Dana, about a leaking tap.")
    await call.ended()


def analyses(runner, result: str) -> float | None:
    return runner.metrics.registry.get_sample_value(
        "prt_call_analyses_total", {"bot": "receptionist", "result": result}
    )


@pytest.mark.call
async def test_a_call_to_the_example_bot_gets_its_declared_fields_in_store_and_webhook():
    hook = webhook_receiver()
    scripted = {
        "summary": "Dana left a message about a leaking tap and wants a call back.",
        "outcome": "message_taken",
        "callback_requested": True,
        "caller_name": "Dana",
    }
    async with LocalServer(hook) as receiver:
        url = f"{receiver.url}/calls"
        async with Scenario("receptionist", bots_dir=BOTS, call_webhook_url=url) as call:
            api = call.emulator.responses_api
            api.outputs.append(scripted)
            await leave_a_message(call)
            await call.caller.wait_until(lambda: answered(call.record), timeout=15)
            record = call.record
            assert record is not None and record.analysis is not None
            assert record.analysis["error"] is None
            assert record.analysis["model"] == "gpt-4.1-mini"
            fields = record.analysis["fields"]
            assert fields == scripted and list(fields) == [SUMMARY, *DECLARED]
            for name, declared in DECLARED.items():
                assert isinstance(fields[name], TYPES[declared["type"]])
            assert record.cost["analysis"] > 0

            # One valid request, with the strict schema of the declared fields.
            [request] = api.requests
            assert [c.status for c in api.calls] == [200] and api.answer_errors == []
            assert request["model"] == "gpt-4.1-mini" and request["store"] is False
            assert "Caller: Dana, about a leaking tap." in request["input"]
            assert "Bot: Sure. May I have your name?" in request["input"]
            assert "receptionist of Acme Plumbing" in request["instructions"]
            fmt = request["text"]["format"]
            assert fmt["type"] == "json_schema" and fmt["strict"] is True
            assert fmt["schema"]["required"] == list(fmt["schema"]["properties"])
            assert list(fmt["schema"]["properties"]) == [SUMMARY, *DECLARED]
            assert fmt["schema"]["additionalProperties"] is False

            # The amended record is stored, and sent to the webhook again.
            runner = call.runner
            await runner.records.settle(timeout=5)
            stored = runner.store.get(record.call_sid)
            assert stored.revision == record.revision and stored.analysis == record.analysis

            def sent():
                return [r for r in hook.state.received if r["revision"] == record.revision]

            await call.caller.wait_until(sent, timeout=5)
            assert sent()[0]["analysis"] == record.analysis
            assert sent()[0]["cost"]["analysis"] == record.cost["analysis"]
            assert analyses(runner, "ok") == 1


@pytest.mark.call
@pytest.mark.parametrize(
    ("fault", "error", "statuses"),
    [
        ("500", "HTTP 500 server_error: The server had an error", [500, 500, 500]),
        ("429 then ok", None, [429, 200]),
        ("stall", "no answer within 0.5 s (3 tries)", [0, 0, 0]),
        ("401", "HTTP 401 invalid_api_key: Incorrect API key provided.", [401]),
        ("not json", "the answer is not valid JSON", [200]),
        ("off the schema", "the answer does not match the declared fields: outcome", [200]),
    ],
)
async def test_a_failing_responses_api_leaves_an_error_and_the_record_stored(
    fault, error, statuses, tmp_path
):
    """The analysis of a kept record against a failing API (no phone call: the call's part is
    the test above); the record, amended with the error, is stored all the same."""
    spec = load_markdown_bot(BOTS / "receptionist.md").analysis
    async with RealtimeEmulator() as emulator:
        settings = runner_settings(
            emulator,
            "https://bot.example.com",
            database_url=f"sqlite:///{tmp_path}/calls.db",
        )
        metrics = RunnerMetrics()
        records = RecordKeeper(settings, metrics=metrics)
        records.start()
        analyses = PostCallAnalysis(settings, records, metrics, timeout_secs=0.5)
        api = emulator.responses_api
        if fault == "500":
            api.fail_next(3, 500)
        elif fault == "429 then ok":
            api.fail_next(1, 429, retry_after=0.2)
        elif fault == "stall":
            api.stall_next(3)
        elif fault == "401":
            api.fail_next(1, 401)
        elif fault == "not json":
            api.outputs.append('{"summary": "cut sh')
        else:
            api.outputs.append(lambda body: {"summary": "s", "outcome": "booked"})
        kept = CallRecord(call_sid="CA" + "7" * 32, bot="receptionist", model="gpt-realtime")
        kept.add_turn("bot", "Acme Plumbing, how can I help?")
        kept.add_turn("caller", "I'd like to leave a message, please call me back.")
        kept.finish("bot ended the call")
        records.finished.append(kept)
        records.keep(kept)
        try:
            analyses.start(kept, spec)
            await analyses.settle(timeout=20)
            [record] = records.finished
            assert record.analysis is not None and record.revision == kept.revision + 1
            assert [c.status for c in api.calls] == statuses
            count = metrics.registry.get_sample_value(
                "prt_call_analyses_total",
                {"bot": "receptionist", "result": "ok" if error is None else "failed"},
            )
            assert count == 1
            if error is None:
                assert record.analysis["error"] is None
                assert record.analysis["fields"]["outcome"] == "message_taken"  # the enum's first
            else:
                assert record.analysis["fields"] is None
                assert record.analysis["error"].startswith(error)
                assert "\n" not in record.analysis["error"]
                assert record.analysis["model"] == "gpt-4.1-mini"
                assert "analysis" not in record.cost
            await records.settle(timeout=5)
            stored = records.store.get(record.call_sid)
            assert stored.end_reason == "bot ended the call" and stored.analysis == record.analysis
        finally:
            await analyses.close(settle_secs=0)
            await records.close()


@pytest.mark.call
async def test_a_call_without_a_word_from_the_caller_is_not_analysed():
    async with Scenario("receptionist", bots_dir=BOTS) as call:
        await call.start()
        await call.hang_up()
        await call.ended()
        await call.runner.analyses.settle(timeout=5)
        assert call.record is not None and call.record.analysis is None
        assert call.emulator.responses_api.calls == []
        assert analyses(call.runner, "skipped") == 1


@pytest.mark.call
async def test_a_drain_abandons_an_analysis_still_running_and_keeps_the_record():
    async with Scenario("receptionist", bots_dir=BOTS) as call:
        call.emulator.responses_api.stall_next(1)  # never answers
        await leave_a_message(call)
        runner = call.runner
        await call.caller.wait_until(lambda: runner.analyses.in_flight == 1, timeout=5)
        await runner.drain(timeout=1.5)
        await runner.records.settle(timeout=5)  # the drain's budget was short: let it land
        record = call.record
        assert record is not None and record.analysis is not None
        assert record.analysis["fields"] is None and record.analysis["error"] == ABANDONED
        assert runner.analyses.in_flight == 0
        assert runner.store.get(record.call_sid).analysis == record.analysis
        assert analyses(runner, "abandoned") == 1
