"""MCP tools on GPT-Live: Responses MCP tools in ``session.start``, called by the emulated backend.

A bot with ``engine: live`` and ``mcp:`` servers sends each as a tool of type ``mcp`` in
``delegation.responses.tools``; the emulated Responses backend lists and calls the real
``McpTestServer`` (``testing/emulator/live_mcp.py``), every nested event a valid
``ResponseStreamEvent``; the agent follows the calls, asks the caller's consent where
the bot says so, and leaves no dead air when a server fails.
"""

import json
from pathlib import Path

import pytest
from loguru import logger
from openai.types.responses.tool import Mcp

from pipecat_realtime_twilio.agent.live_ledger import is_quiet
from pipecat_realtime_twilio.agent.mcp_events import CONSENT_TOOL
from pipecat_realtime_twilio.agent.realtime import TOOL_ERROR_MESSAGE
from pipecat_realtime_twilio.agent.tools import end_call
from pipecat_realtime_twilio.testing.emulator.live_mcp import responses_error
from pipecat_realtime_twilio.testing.mcp_server import McpTestServer
from pipecat_realtime_twilio.testing.scenario import Scenario

pytestmark = pytest.mark.call

SECRET = "s3cret-crm-token-77a1"
GREETING = "Hello, Acme accounts."

BOT = """\
---
engine: live
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
    url: str,
    approval: str = "never",
    allowed: str = "[lookup_customer, cancel_order]",
) -> Path:
    path = folder / "crm.md"
    path.write_text(BOT.format(url=url, approval=approval, allowed=allowed), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", SECRET)


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
    def failing_lookup(phone: str) -> str:
        """A lookup whose database is down."""
        raise RuntimeError("database unavailable")

    return crm


def nested(session, prefix: str = "") -> list[dict]:
    """The Responses events the session sent in ``response.event`` envelopes."""
    events = [e["event"] for e in session.sent_of_type("response.event")]
    return [e for e in events if e["type"].startswith(prefix)]


def backend_items(session, kind: str) -> list[dict]:
    return [
        e["item"]
        for e in session.events_of_type("response.item.create")
        if e["item"]["type"] == kind
    ]


def backend_commands(session) -> list[str]:
    """The client's ``response.item.create`` (by item type) and ``response.create``, in order."""
    return [
        e["item"]["type"] if e["type"] == "response.item.create" else e["type"]
        for e in session.client_events
        if e["type"] in ("response.item.create", "response.create")
    ]


def bot_lines(call) -> list[str]:
    return [text for role, text in call.transcript if role == "bot"]


async def test_session_start_carries_the_mcp_tool_and_the_backend_calls_it(tmp_path, our_logs):
    async with crm_server() as crm:
        write_bot(tmp_path, crm.url)
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            call.model.calls_mcp(
                "crm", "lookup_customer", {"phone": "+15550100"}, answer="Found you: {output}."
            )
            await call.caller_says("Can you look up my account? I'm on 555 0100.")
            await call.hang_up()
            await call.ended()

        session = call.emulator.live_sessions[0]
        [start] = session.events_of_type("session.start")
        tools = start["session"]["delegation"]["responses"]["tools"]
        mcp_tool = {
            "type": "mcp",
            "server_label": "crm",
            "server_url": crm.url,
            "allowed_tools": ["lookup_customer", "cancel_order"],
            "require_approval": "never",
            "headers": {"Authorization": f"Bearer {SECRET}", "X-Tenant": "acme"},
            "server_description": "Acme's customer records.",
        }
        assert tools == [
            {
                "type": "function",
                "name": "end_call",
                "description": end_call().schema.description,
                "parameters": {"type": "object", "properties": {}},
            },
            mcp_tool,
        ]
        Mcp.model_validate(mcp_tool)  # the openai package's Responses MCP tool
        assert call.emulator.validation_errors == []
        assert call.emulator.server_event_errors == []  # each nested: a ResponseStreamEvent
        # The backend listed the server's tools (allowed_tools applied), then called one.
        [listing] = session.mcp_listings
        assert listing.tools == ["lookup_customer", "cancel_order"]
        assert [e["type"] for e in nested(session, "response.mcp")] == [
            "response.mcp_list_tools.in_progress",
            "response.mcp_list_tools.completed",
            "response.mcp_call_arguments.delta",
            "response.mcp_call_arguments.done",
            "response.mcp_call.in_progress",
            "response.mcp_call.completed",
        ]
        [request] = crm.calls
        assert (request.tool, request.arguments) == ("lookup_customer", {"phone": "+15550100"})
        assert request.headers["authorization"] == f"Bearer {SECRET}"
        assert request.headers["x-tenant"] == "acme"
        # The model relayed the backend's answer: the caller heard it.
        output = "Ada Lovelace, customer since 2019, 3 open orders (+15550100)"
        assert call.transcript[-2:] == [
            ("caller", "Can you look up my account? I'm on 555 0100."),
            ("bot", f"Found you: {output}."),
        ]
        [spoken] = [r for r in session.responses if r.trigger == "delegation"]
        assert spoken.status == "completed" and spoken.transcript == f"Found you: {output}."
        speech = lambda audio: bytes(b for b in audio if not is_quiet(bytes([b])))  # noqa: E731
        assert speech(bytes(call.caller.heard)).endswith(speech(bytes(spoken.audio)))
        [record] = call.mcp_calls
        assert (record.output, record.error, record.approval_request_id) == (output, None, None)
        # The call record keeps it as a tool call: name, server label, result, ms.
        [tool_call] = call.record.tool_calls
        assert tool_call["name"] == "crm.lookup_customer"
        assert json.loads(tool_call["arguments"]) == {"phone": "+15550100"}
        assert (tool_call["result"], tool_call["error"]) == (output, None)
        assert tool_call["duration_ms"] > 0
        assert call.record.engine == "live"
        print(f"\nLive MCP call: {tool_call['duration_ms']:.0f} ms in the record")
        assert SECRET not in call.record.to_json()
        assert our_logs and not [line for line in our_logs if SECRET in line]
        assert any("MCP crm.lookup_customer answered" in line for line in our_logs)


async def test_failing_servers_leave_no_dead_air(tmp_path):
    async with crm_server() as crm:
        write_bot(tmp_path, crm.url, allowed="[lookup_customer, failing_lookup]")
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            # The tool fails; the backend says so.
            call.model.calls_mcp("crm", "failing_lookup", {"phone": "1"}, on_error="It's down.")
            await call.caller_says("Look me up.")
            # The tool fails and the backend says nothing: the agent apologizes.
            call.model.calls_mcp("crm", "failing_lookup", {"phone": "2"}, answer="", on_error="")
            await call.caller_says("Try again?")
            # The call answers but the backend says nothing: the agent asks it to answer.
            call.model.calls_mcp("crm", "lookup_customer", {"phone": "3"}, answer="")
            call.model.says("You are Ada.")
            await call.caller_says("And now?")
            # A tool allowed_tools leaves out fails without reaching the server.
            call.model.calls_mcp("crm", "cancel_order", {"order": "9"})
            await call.caller_says("Cancel order 9.")
            # The server is down: the call fails (502), the backend carries on.
            await crm.stop()
            call.model.calls_mcp("crm", "lookup_customer", {"phone": "4"})
            await call.caller_says("Once more.")
            await call.hang_up()
            await call.ended()

        session = call.emulator.live_sessions[0]
        errors = [record.error for record in call.mcp_calls]
        failed = {"type": "tool_execution_error", "message": "Error executing tool failing_lookup"}
        assert errors[0] == errors[1] == failed
        assert errors[2] is None
        assert errors[3]["message"] == "tool 'cancel_order' is not available on crm"
        assert errors[4]["type"] == "http_error" and errors[4]["code"] == 502
        # The failed items carry the Responses API's errors.
        done = [
            e["item"]
            for e in nested(session, "response.output_item.done")
            if e["item"]["type"] == "mcp_call"
        ]
        assert [item["status"] for item in done] == [
            "failed",
            "failed",
            "completed",
            "failed",
            "failed",
        ]
        assert done[0]["error"] == responses_error(failed)
        assert done[3]["error"]["type"] == "mcp_protocol_error"
        assert [request.tool for request in crm.calls] == ["failing_lookup"] * 2 + [
            "lookup_customer"
        ]
        # The silent answer made the agent ask the backend again, once.
        assert len(session.events_of_type("response.create")) == 1
        assert bot_lines(call) == [
            GREETING,
            "It's down.",
            TOOL_ERROR_MESSAGE,
            "You are Ada.",
            "Sorry, I couldn't look that up just now.",
            "Sorry, I couldn't look that up just now.",
        ]
        assert [(c["name"], c["error"] is None) for c in call.record.tool_calls] == [
            ("crm.failing_lookup", False),
            ("crm.failing_lookup", False),
            ("crm.lookup_customer", True),
            ("crm.cancel_order", False),
            ("crm.lookup_customer", False),
        ]
        assert call.record.tool_calls[0]["error"] == "Error executing tool failing_lookup"
        assert call.record.end_reason == "caller hung up"
        assert call.emulator.validation_errors == [] and call.emulator.server_event_errors == []
        assert call.model.unscripted == 0


async def test_a_server_whose_tools_cannot_be_listed(tmp_path, our_logs):
    crm = crm_server()
    write_bot(tmp_path, crm.url)  # never started: nothing listens
    async with Scenario("crm", bots_dir=tmp_path) as call:
        await call.start()
        call.model.calls_mcp("crm", "lookup_customer", {"phone": "1"})
        await call.caller_says("Look me up.")
        await call.hang_up()
        await call.ended()
    session = call.emulator.live_sessions[0]
    [listing] = session.mcp_listings
    assert listing.tools is None and "ConnectError" in listing.error
    assert "response.mcp_list_tools.failed" in [e["type"] for e in nested(session)]
    assert any("MCP server crm: its tools could not be listed" in line for line in our_logs)
    assert call.transcript[-1] == ("bot", "Sorry, I couldn't look that up just now.")
    assert call.emulator.server_event_errors == []


async def test_a_tool_needing_consent_runs_once_the_caller_agrees(tmp_path):
    async with crm_server() as crm:
        write_bot(tmp_path, crm.url, approval="[cancel_order]")
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

        session = call.emulator.live_sessions[0]
        tools = session.delegation["responses"]["tools"]
        assert [tool.get("name", tool["type"]) for tool in tools] == [
            "end_call",
            CONSENT_TOOL,
            "mcp",
        ]
        assert tools[2]["require_approval"] == {
            "always": {"tool_names": ["cancel_order"]},
            "never": {"tool_names": ["lookup_customer"]},
        }
        [request] = [
            e["item"]
            for e in nested(session, "response.output_item.done")
            if e["item"]["type"] == "mcp_approval_request"
        ]
        assert (request["name"], json.loads(request["arguments"])) == (
            "cancel_order",
            {"order": "42"},
        )
        # The agent asked the model to put it to the caller...
        [asked] = [c.content for c in session.contexts if CONSENT_TOOL in c.content]
        assert asked.startswith("Before it goes on, the tool cancel_order (crm)")
        # ...and the backend's confirm_tool_call passed the caller's yes on as the approval,
        # before the function's output and the response.create that ran the call.
        [answer] = backend_items(session, "mcp_approval_response")
        assert (answer["approval_request_id"], answer["approve"]) == (request["id"], True)
        assert backend_commands(session) == [
            "mcp_approval_response",
            "function_call_output",
            "response.create",
        ]
        [cancel] = crm.calls
        assert cancel.arguments == {"order": "42"}
        [record] = call.mcp_calls
        assert (record.approval_request_id, record.approved) == (request["id"], True)
        assert record.output == "order 42 cancelled"
        assert call.transcript[1:] == [
            ("caller", "Please cancel order 42."),
            ("bot", "Shall I cancel order 42?"),
            ("caller", "Yes, go ahead."),
            ("bot", "Done: order 42 cancelled."),
        ]
        assert [c["name"] for c in call.record.tool_calls] == [CONSENT_TOOL, "crm.cancel_order"]
        assert call.emulator.validation_errors == [] and call.emulator.server_event_errors == []


async def test_a_caller_who_says_no_stops_the_call(tmp_path):
    async with crm_server() as crm:
        write_bot(tmp_path, crm.url, approval="always")
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
        [answer] = backend_items(call.emulator.live_sessions[0], "mcp_approval_response")
        assert answer["approve"] is False and answer["reason"] == "The caller said no."
        assert call.emulator.validation_errors == [] and call.emulator.server_event_errors == []


async def test_a_request_for_a_tool_the_bot_did_not_list_is_approved_at_once(tmp_path):
    async with crm_server() as crm:
        # No allowed_tools: the API asks about every tool the filter leaves out.
        write_bot(tmp_path, crm.url, approval="[cancel_order]", allowed="null")
        async with Scenario("crm", bots_dir=tmp_path) as call:
            await call.start()
            call.model.calls_mcp("crm", "lookup_customer", {"phone": "1"}, answer="{output}")
            await call.caller_says("Who am I?")
            await call.hang_up()
            await call.ended()
        session = call.emulator.live_sessions[0]
        [record] = call.mcp_calls
        assert record.approved is True and record.approval_request_id is not None
        [answer] = backend_items(session, "mcp_approval_response")
        assert answer["approve"] is True
        assert backend_commands(session) == ["mcp_approval_response", "response.create"]
        assert [request.tool for request in crm.calls] == ["lookup_customer"]
        assert call.transcript[-1] == (
            "bot",
            "Ada Lovelace, customer since 2019, 3 open orders (1)",
        )
        assert CONSENT_TOOL not in [c["name"] for c in call.record.tool_calls]  # nobody asked
        assert call.emulator.validation_errors == [] and call.emulator.server_event_errors == []
