"""MCP tools: front matter `mcp:`, `bots check`, session.update, calls the emulator makes."""

import json
import sys
from pathlib import Path

import pytest
from loguru import logger
from openai.types.realtime.realtime_tools_config_union import Mcp
from pipecat.adapters.llm.schemas.tools_schema import AdapterType

from pipecat_realtime_twilio.agent.mcp import McpHeaderError, McpServer, parse_mcp_servers
from pipecat_realtime_twilio.agent.mcp_events import CONSENT_TOOL
from pipecat_realtime_twilio.agent.realtime import TOOL_ERROR_MESSAGE
from pipecat_realtime_twilio.agent.tools import end_call, split_tools
from pipecat_realtime_twilio.cli import main
from pipecat_realtime_twilio.errors import BotError
from pipecat_realtime_twilio.runner.prompt_bot import load_prompt_bot
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.emulator.mcp_calls import needs_approval
from pipecat_realtime_twilio.testing.mcp_server import McpTestServer
from pipecat_realtime_twilio.testing.scenario import Scenario

SECRET = "s3cret-crm-token-9f2e"

BOT = """\
---
greeting: Hello, Acme accounts.
tools: [end_call]
mcp:
  - label: crm
    url: {url}
    allowed_tools: {allowed}
    approval: {approval}
    headers:
      Authorization: Bearer ${{CRM_TOKEN}}
      X-Tenant: acme
    description: Acme's customer records.
---
You answer Acme's customers.
"""


def write_bot(
    folder: Path,
    url: str = "https://crm.example.com/mcp",
    approval: str = "never",
    allowed: str = "[lookup_customer, cancel_order]",
) -> Path:
    path = folder / "crm.md"
    path.write_text(BOT.format(url=url, approval=approval, allowed=allowed), encoding="utf-8")
    return path


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", SECRET)


def crm_server() -> McpTestServer:
    crm = McpTestServer("crm")

    @crm.tool(read_only=True)
    def lookup_customer(phone: str) -> str:
        """Find a customer by their phone number."""
        return f"Ada Lovelace, customer since 2019, 3 open orders ({phone})"

    @crm.tool
    def cancel_order(order: str) -> str:
        """Cancel an order."""
        return f"order {order} cancelled"

    @crm.tool
    def delete_account(phone: str) -> str:
        """Delete a customer's account."""
        return "deleted"

    @crm.tool
    def failing_lookup(phone: str) -> str:
        """A lookup whose database is down."""
        raise RuntimeError("database unavailable")

    return crm


# --- front matter, unit ------------------------------------------------------------------


def test_front_matter_declares_a_server_sent_as_an_mcp_tool(tmp_path, token):
    bot = load_prompt_bot(write_bot(tmp_path, approval="[cancel_order]"))
    [server] = bot.spec.mcp
    assert (server.label, server.url) == ("crm", "https://crm.example.com/mcp")
    assert server.needs_consent("cancel_order") and not server.needs_consent("lookup_customer")
    tool = server.to_realtime_tool()
    assert tool == {
        "type": "mcp",
        "server_label": "crm",
        "server_url": "https://crm.example.com/mcp",
        "allowed_tools": ["lookup_customer", "cancel_order"],
        "require_approval": {
            "always": {"tool_names": ["cancel_order"]},
            "never": {"tool_names": ["lookup_customer"]},
        },
        "headers": {"Authorization": f"Bearer {SECRET}", "X-Tenant": "acme"},
        "server_description": "Acme's customer records.",
    }
    Mcp.model_validate(tool)  # the openai package's model of the tool
    # In a Python bot: an McpServer among the tools, next to function tools.
    handlers, schema = split_tools([end_call(), server])
    assert [t.name for t in handlers] == ["end_call"]
    assert schema.custom_tools == {AdapterType.OPENAI: [tool]}
    with pytest.raises(ValueError, match="tools listed twice: MCP server crm"):
        split_tools([server, server])


def test_approval_maps_to_the_api_shapes(token):
    def server(**values) -> McpServer:
        return McpServer(label="crm", url="https://crm.example.com/mcp", **values)

    assert server().require_approval() == "never"
    assert server(approval="always").require_approval() == "always"
    assert server(approval=["a"]).require_approval() == {"always": {"tool_names": ["a"]}}
    # The emulator reads them as the API does: a tool a filter leaves out is asked about.
    assert not needs_approval({"require_approval": "never"}, "a")
    assert needs_approval({"require_approval": "always"}, "a")
    rule = {"require_approval": server(approval=["a"], allowed_tools=["a", "b"]).require_approval()}
    assert needs_approval(rule, "a") and not needs_approval(rule, "b")
    assert needs_approval({"require_approval": {"always": {"tool_names": ["a"]}}}, "c")
    read_only = {"require_approval": {"never": {"read_only": True}}}
    assert not needs_approval(read_only, "x", {"readOnlyHint": True})
    assert needs_approval(read_only, "x", {})


# (line, what it becomes, the error): lines as in BOT (the front matter starts on line 2).
MISTAKES = [
    (5, "  - label: crm crm", "mcp[0].label: 'crm crm' must be 1 to 64 letters, digits, _ or -"),
    (
        6,
        "    url: http://crm.example.com/mcp",
        "mcp[0].url: 'http://crm.example.com/mcp' must be an https:// URL (http:// only for "
        "127.0.0.1 or localhost)",
    ),
    (6, "    url: ftp://127.0.0.1/mcp", "mcp[0].url: 'ftp://127.0.0.1/mcp' must be an https://"),
    (7, "    allowed_tools: [a, a]", "mcp[0].allowed_tools: lists 'a' twice"),
    (8, "    approval: sometimes", "mcp[0].approval: must be never, always, or a list of tool"),
    (
        8,
        "    approval: [delete_account]",
        "mcp[0].approval: names 'delete_account', which allowed_tools leaves out",
    ),
    (
        10,
        None,  # the line stays; its variable is not set
        "mcp[0].headers.Authorization: environment variable CRM_TOKEN is not set",
    ),
    (11, "      Bad Header: x", "mcp[0].headers.Bad Header: is no HTTP header name"),
    (11, "      X-Key: ${1ST}", "mcp[0].headers.X-Key: '${1ST}' is no environment variable"),
    (11, "      X-Count: 3", "mcp[0].headers.X-Count: Input should be a valid string"),
    (12, "    colour: blue", "mcp[0].colour: unknown key"),
]


@pytest.mark.parametrize(("line", "text", "message"), MISTAKES)
def test_each_mistake_names_its_line(tmp_path, monkeypatch, line, text, message):
    if text is None:
        monkeypatch.delenv("CRM_TOKEN", raising=False)
    else:
        monkeypatch.setenv("CRM_TOKEN", SECRET)
    lines = write_bot(tmp_path).read_text(encoding="utf-8").splitlines()
    lines[line - 1] = text or lines[line - 1]
    path = tmp_path / "crm.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BotError) as error:
        load_prompt_bot(path)
    assert str(error.value).startswith(f"{path}:{line}: {message}"), str(error.value)
    assert SECRET not in str(error.value)


def test_two_servers_with_one_label_and_not_a_list(tmp_path, token):
    twice = [{"label": "crm", "url": "https://a.example.com/mcp"}] * 2
    with pytest.raises(ValueError, match=r"^1\.label: 'crm' is used twice"):
        parse_mcp_servers(twice)
    path = tmp_path / "crm.md"
    path.write_text("---\nmcp: crm\n---\nYou help.\n", encoding="utf-8")
    with pytest.raises(BotError, match=r"crm.md:2: mcp: must be a list of servers"):
        load_prompt_bot(path)


def test_mcp_servers_work_on_the_live_engine_too(tmp_path, token):
    path = write_bot(tmp_path)
    path.write_text(path.read_text().replace("tools: [end_call]", "engine: live"))
    spec = load_prompt_bot(path).spec  # Responses MCP tools there (tests/test_mcp_live.py)
    assert spec.engine == "live" and [server.label for server in spec.mcp] == ["crm"]


def test_header_values_never_show(tmp_path, token, monkeypatch):
    bot = load_prompt_bot(write_bot(tmp_path))
    [server] = bot.spec.mcp
    shown = [repr(server), str(server), repr(bot.spec), server.describe()]
    assert all(SECRET not in text for text in shown)
    assert server.describe() == (
        "crm https://crm.example.com/mcp; tools: lookup_customer, cancel_order; "
        "caller consent: never; headers: Authorization (from CRM_TOKEN), X-Tenant"
    )
    # The variable is gone when a call starts: the error names it, never a value.
    monkeypatch.delenv("CRM_TOKEN")
    with pytest.raises(McpHeaderError) as error:
        server.to_realtime_tool()
    assert str(error.value) == (
        "MCP server crm: header Authorization: environment variable CRM_TOKEN is not set"
    )


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run ``main(args)`` in this process; (exit code, stdout)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)

    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().out

    yield run
    logger.remove()  # main() logs to the stderr that capsys replaced
    logger.add(sys.__stderr__)


def test_bots_check_shows_servers_without_header_values(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("CRM_TOKEN", SECRET)
    path = write_bot(tmp_path, approval="always")
    code, out = run_cli("bots", "check", "--bots-dir", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        f"ok: crm ({path})",
        "  mcp: crm https://crm.example.com/mcp; tools: lookup_customer, cancel_order; "
        "caller consent: always; headers: Authorization (from CRM_TOKEN), X-Tenant",
    ]
    monkeypatch.delenv("CRM_TOKEN")
    code, out = run_cli("bots", "check", "--bots-dir", str(tmp_path))
    assert code == 1
    assert out.splitlines() == [
        f"error: {path}:10: mcp[0].headers.Authorization: environment variable CRM_TOKEN is not set"
    ]


# --- calls: the emulator calls a real MCP server -------------------------------------------


@pytest.fixture
def our_logs():
    """Every log line of the runner and the agent (not the emulator: it stands for OpenAI)."""
    lines: list[str] = []
    sink = logger.add(
        lambda message: lines.append(str(message)),
        level="DEBUG",
        filter=lambda record: not record["name"].startswith("pipecat_realtime_twilio.testing"),
    )
    yield lines
    logger.remove(sink)


@pytest.mark.call
async def test_session_update_carries_the_server_and_the_model_calls_it(tmp_path, token, our_logs):
    async with crm_server() as crm:
        write_bot(tmp_path, url=crm.url)
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            call.model.calls_mcp(
                "crm", "lookup_customer", {"phone": "+15550100"}, answer="Found you: {output}."
            )
            await call.caller_says("Can you look up my account? I'm on 555 0100.")
            heard = call.heard_ms
            await call.hang_up()
            await call.ended()

        session = call.emulator.sessions[0]
        [update] = session.events_of_type("session.update")
        assert update["session"]["tools"] == [
            {
                "type": "function",
                "name": "end_call",
                "description": end_call().schema.description,
                "parameters": {"type": "object", "properties": {}, "required": []},
            },
            {
                "type": "mcp",
                "server_label": "crm",
                "server_url": crm.url,
                "allowed_tools": ["lookup_customer", "cancel_order"],
                "require_approval": "never",
                "headers": {"Authorization": f"Bearer {SECRET}", "X-Tenant": "acme"},
                "server_description": "Acme's customer records.",
            },
        ]
        assert update.error is None and call.emulator.validation_errors == []
        assert call.emulator.server_event_errors == []  # every MCP event is a RealtimeServerEvent
        [listing] = session.mcp_listings
        assert listing.tools == ["lookup_customer", "cancel_order"]  # allowed_tools applied
        sent = [e["type"] for e in session.sent_events]
        assert sent.index("mcp_list_tools.in_progress") < sent.index("mcp_list_tools.completed")
        mcp_events = [t for t in sent if t.startswith("response.mcp_call")]
        assert mcp_events == [
            "response.mcp_call_arguments.delta",
            "response.mcp_call_arguments.done",
            "response.mcp_call.in_progress",
            "response.mcp_call.completed",
        ]
        # The server saw the call, with the header value from the environment.
        [request] = crm.calls
        assert (request.tool, request.arguments) == ("lookup_customer", {"phone": "+15550100"})
        assert request.headers["authorization"] == f"Bearer {SECRET}"
        assert request.headers["x-tenant"] == "acme"
        # The caller heard the answer.
        output = "Ada Lovelace, customer since 2019, 3 open orders (+15550100)"
        assert call.transcript[-2:] == [
            ("caller", "Can you look up my account? I'm on 555 0100."),
            ("bot", f"Found you: {output}."),
        ]
        assert heard > 0
        [record] = call.mcp_calls
        assert (record.output, record.error, record.approval_request_id) == (output, None, None)
        # The call record keeps it as a tool call: name, server label, result, ms.
        [tool_call] = call.record.tool_calls
        assert tool_call["name"] == "crm.lookup_customer"
        assert json.loads(tool_call["arguments"]) == {"phone": "+15550100"}
        assert (tool_call["result"], tool_call["error"]) == (output, None)
        assert tool_call["duration_ms"] > 0
        print(f"\nMCP call: {tool_call['duration_ms']:.0f} ms in the record")
        assert SECRET not in call.record.to_json()
        assert our_logs and not [line for line in our_logs if SECRET in line]
        assert any("MCP crm.lookup_customer answered" in line for line in our_logs)


@pytest.mark.call
async def test_a_tool_allowed_tools_leaves_out_never_reaches_the_server(tmp_path, token):
    async with crm_server() as crm:
        write_bot(tmp_path, url=crm.url)
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            call.model.calls_mcp("crm", "delete_account", {"phone": "+15550100"})
            await call.caller_says("Delete my account.")
            await call.hang_up()
            await call.ended()
        assert crm.calls == []
        [record] = call.mcp_calls
        assert record.error["message"] == "tool 'delete_account' is not available on crm"
        assert call.transcript[-1] == ("bot", "Sorry, I couldn't look that up just now.")
        assert call.record.tool_calls[0]["error"] == record.error["message"]
        assert call.emulator.server_event_errors == []


@pytest.mark.call
async def test_a_tool_needing_consent_runs_once_the_caller_agrees(tmp_path, token):
    async with crm_server() as crm:
        write_bot(tmp_path, url=crm.url, approval="[cancel_order]")
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            call.model.calls_mcp("crm", "cancel_order", {"order": "42"}, answer="Done: {output}.")
            call.model.says("Shall I cancel order 42?")
            await call.caller_says("Please cancel order 42.")
            assert crm.calls == []  # waiting for the caller
            call.model.confirms(True)
            await call.caller_says("Yes, go ahead.")
            await call.hang_up()
            await call.ended()

        session = call.emulator.sessions[0]
        names = [tool.get("name", tool["type"]) for tool in session.config["tools"]]
        assert names == ["end_call", CONSENT_TOOL, "mcp"]
        [request] = [
            event["item"]
            for event in session.sent_of_type("conversation.item.done")
            if event["item"]["type"] == "mcp_approval_request"
        ]
        request_id = request["id"]
        assert (request["name"], json.loads(request["arguments"])) == (
            "cancel_order",
            {"order": "42"},
        )
        # The agent asked the model to put the call to the caller...
        [asked] = [
            event["response"]["instructions"]
            for event in session.events_of_type("response.create")
            if CONSENT_TOOL in (event.get("response") or {}).get("instructions", "")
        ]
        assert "cancel_order" in asked and '{"order": "42"}' in asked
        # ...and passed the caller's yes on as the API's approval.
        [answer] = [
            e["item"]
            for e in session.events_of_type("conversation.item.create")
            if e["item"]["type"] == "mcp_approval_response"
        ]
        assert (answer["approval_request_id"], answer["approve"]) == (request_id, True)
        [cancel] = crm.calls
        assert cancel.arguments == {"order": "42"}
        [record] = call.mcp_calls
        assert (record.approval_request_id, record.approved) == (request_id, True)
        assert record.output == "order 42 cancelled"
        assert call.transcript[1:] == [
            ("caller", "Please cancel order 42."),
            ("bot", "Shall I cancel order 42?"),
            ("caller", "Yes, go ahead."),
            ("bot", "Done: order 42 cancelled."),
        ]
        assert [c["name"] for c in call.record.tool_calls] == [CONSENT_TOOL, "crm.cancel_order"]
        assert call.emulator.validation_errors == [] and call.emulator.server_event_errors == []


@pytest.mark.call
async def test_a_request_for_a_tool_the_bot_did_not_list_is_approved_at_once(tmp_path, token):
    async with crm_server() as crm:
        # No allowed_tools: the API asks about every tool the filter leaves out.
        write_bot(tmp_path, url=crm.url, approval="[cancel_order]", allowed="null")
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            call.model.calls_mcp("crm", "lookup_customer", {"phone": "1"}, answer="{output}")
            await call.caller_says("Who am I?")
            await call.hang_up()
            await call.ended()
        session = call.emulator.sessions[0]
        [server] = [tool for tool in session.config["tools"] if tool["type"] == "mcp"]
        assert server["require_approval"] == {"always": {"tool_names": ["cancel_order"]}}
        [record] = call.mcp_calls
        assert record.approved is True and record.approval_request_id is not None
        assert [request.tool for request in crm.calls] == ["lookup_customer"]
        output = "Ada Lovelace, customer since 2019, 3 open orders (1)"
        assert call.transcript[-1] == ("bot", output)
        assert CONSENT_TOOL not in [c["name"] for c in call.record.tool_calls]  # nobody asked


@pytest.mark.call
async def test_a_caller_who_says_no_stops_the_call(tmp_path, token):
    async with crm_server() as crm:
        write_bot(tmp_path, url=crm.url, approval="always")
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            call.model.calls_mcp("crm", "cancel_order", {"order": "42"})
            call.model.says("Shall I cancel order 42?")
            await call.caller_says("Cancel order 42.")
            call.model.confirms(False)
            await call.caller_says("No, leave it.")
            await call.hang_up()
            await call.ended()
        assert crm.calls == []
        [record] = call.mcp_calls
        assert record.approved is False and record.output is None
        assert call.transcript[-1] == ("bot", "All right, I won't do that.")
        session = call.emulator.sessions[0]
        [answer] = [
            e["item"]
            for e in session.events_of_type("conversation.item.create")
            if e["item"]["type"] == "mcp_approval_response"
        ]
        assert answer["approve"] is False and answer["reason"] == "The caller said no."


@pytest.mark.call
async def test_failing_servers_leave_no_dead_air(tmp_path, token):
    async with crm_server() as crm:
        write_bot(tmp_path, url=crm.url, allowed="[lookup_customer, failing_lookup]")
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            # The tool fails; the model says so.
            call.model.calls_mcp("crm", "failing_lookup", {"phone": "1"}, on_error="It's down.")
            await call.caller_says("Look me up.")
            # The tool fails and the model ends its response silently: the agent apologizes.
            call.model.calls_mcp("crm", "failing_lookup", {"phone": "2"}, answer="", on_error="")
            await call.caller_says("Try again?")
            # The call answers but the model says nothing: the agent asks it to answer.
            call.model.calls_mcp("crm", "lookup_customer", {"phone": "3"}, answer="")
            call.model.says("You are Ada.")
            await call.caller_says("And now?")
            # The server is down: the call fails (502), the model carries on.
            await crm.stop()
            call.model.calls_mcp("crm", "lookup_customer", {"phone": "4"})
            await call.caller_says("Once more.")
            await call.hang_up()
            await call.ended()

        errors = [record.error for record in call.mcp_calls]
        assert (
            errors[0]
            == errors[1]
            == {
                "type": "tool_execution_error",
                "message": "Error executing tool failing_lookup",
            }
        )
        assert errors[2] is None
        assert errors[3]["type"] == "http_error" and errors[3]["code"] == 502
        assert [text for role, text in call.transcript if role == "bot"][1:] == [
            "It's down.",
            TOOL_ERROR_MESSAGE,
            "You are Ada.",
            "Sorry, I couldn't look that up just now.",
        ]
        assert [(c["name"], c["error"] is None) for c in call.record.tool_calls] == [
            ("crm.failing_lookup", False),
            ("crm.failing_lookup", False),
            ("crm.lookup_customer", True),
            ("crm.lookup_customer", False),
        ]
        assert call.record.end_reason == "caller hung up"
        assert call.emulator.server_event_errors == []


@pytest.mark.call
async def test_a_server_whose_tools_cannot_be_listed(tmp_path, token, our_logs):
    crm = crm_server()
    write_bot(tmp_path, url=crm.url)  # never started: nothing listens
    async with Scenario("crm", bots_dir=tmp_path) as call:
        await call.start()
        call.model.calls_mcp("crm", "lookup_customer", {"phone": "1"})
        await call.caller_says("Look me up.")
        await call.hang_up()
        await call.ended()
    session = call.emulator.sessions[0]
    [listing] = session.mcp_listings
    assert listing.tools is None and "ConnectError" in listing.error
    assert "mcp_list_tools.failed" in [e["type"] for e in session.sent_events]
    assert any("MCP server crm: its tools could not be listed" in line for line in our_logs)
    assert call.transcript[-1] == ("bot", "Sorry, I couldn't look that up just now.")
    assert call.emulator.server_event_errors == []
