#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The agent's side of MCP tools: their events, the record, approvals, no dead air.

OpenAI runs MCP calls itself; the session tells the agent how they go, with items
(``mcp_list_tools``, ``mcp_call``, ``mcp_approval_request``) and events
(``mcp_list_tools.*``, ``response.mcp_call_arguments.*``, ``response.mcp_call.*``)
that Pipecat's models do not know. :class:`McpEvents` reads them before Pipecat does:

- each MCP call is a tool call in the call's events (``agent.call_events``: name
  ``LABEL.TOOL``, arguments, result or error, ms) and a log line; a server whose tools
  could not be listed is logged;
- while a call runs, the response's first-audio deadline is :data:`MCP_CALL_TIMEOUT_SECS`
  (the model is working), then the usual one again;
- a response that ends right after an MCP call, saying nothing, is followed by one
  that answers (after a failed call, the bot's ``tool_error_message``), so the caller
  never waits in silence;
- an ``mcp_approval_request`` for a tool the bot says needs the caller's consent
  (``approval``) makes the model ask the caller; their answer comes back through
  the ``confirm_tool_call`` function tool (:func:`consent_tool`) and goes to the API
  as an ``mcp_approval_response``. Any other request is approved at once.
- ``response.done`` reaches Pipecat without the MCP items (its models would reject it).
"""

import json
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.services.llm_service import FunctionCallParams

from pipecat_realtime_twilio.agent.guard import FIRST_AUDIO_TIMEOUT_SECS
from pipecat_realtime_twilio.agent.mcp import McpServer
from pipecat_realtime_twilio.agent.tools import RealtimeTool
from pipecat_realtime_twilio.failures import Failure

if TYPE_CHECKING:
    from pipecat_realtime_twilio.agent.conversation import Conversation

    _Agent = Conversation
else:
    _Agent = object

CONSENT_TOOL = "confirm_tool_call"
"""The function tool that carries the caller's answer to an MCP approval request."""

MCP_CALL_TIMEOUT_SECS = 30.0
"""Most seconds an MCP call may run before the response's audio is overdue."""

MCP_ITEM_TYPES = frozenset(
    {"mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response"}
)
"""Conversation items of MCP tools."""

_ITEM_EVENTS = frozenset(
    {
        "conversation.item.added",
        "conversation.item.done",
        "response.output_item.added",
        "response.output_item.done",
    }
)


@runtime_checkable
class McpConsent(Protocol):
    """An agent that can pass the caller's answer to an MCP approval request on."""

    async def answer_mcp_approval(self, approve: bool) -> dict[str, Any]:
        """Answer the oldest approval request waiting for the caller."""


def consent_tool() -> RealtimeTool:
    """The ``confirm_tool_call`` tool: the caller's yes or no to a tool needing consent.

    Returns:
        The tool (added by the agent when one of its MCP servers asks for consent).
    """
    schema = FunctionSchema(
        name=CONSENT_TOOL,
        description=(
            "Give the caller's answer to a tool call that needs their consent. Call it once "
            "the caller has said yes or no."
        ),
        properties={
            "approve": {
                "type": "boolean",
                "description": "true if the caller agreed, false if not.",
            }
        },
        required=["approve"],
    )

    async def handler(params: FunctionCallParams) -> None:
        if not isinstance(params.llm, McpConsent):
            raise TypeError(f"{params.llm} cannot run {CONSENT_TOOL}: it needs a RealtimeAgent")
        approve = (params.arguments or {}).get("approve") is True
        await params.result_callback(await params.llm.answer_mcp_approval(approve))

    return RealtimeTool(name=CONSENT_TOOL, schema=schema, handler=handler)


@dataclass
class _Call:
    label: str
    name: str
    arguments: str = ""
    started: bool = False
    failed: bool = False
    finished: bool = False


@dataclass(frozen=True)
class _Approval:
    id: str
    label: str
    name: str
    arguments: str


class McpEvents(_Agent):
    """MCP tools on the agent's side (a mixin of ``RealtimeAgent``)."""

    tool_error_message: str

    def _init_mcp(self, servers: list[McpServer]) -> None:
        """Set up for ``servers`` (called once the agent is initialized)."""
        self.mcp_servers = list(servers)
        """The agent's MCP servers."""
        self.mcp_tools: dict[str, list[str]] = {}
        """Tool names each server listed, by label (as the session reported them)."""
        self._mcp_servers = {server.label: server for server in servers}
        self._mcp_calls: dict[str, _Call] = {}
        self._mcp_lists: dict[str, str] = {}  # mcp_list_tools item id -> label
        self._mcp_seen: set[str] = set()  # approval requests and lists already handled
        self._mcp_waiting: deque[_Approval] = deque()

    async def _on_server_message(self, message: str | bytes) -> str | None:
        if self._mcp_servers and isinstance(message, str) and "mcp_" in message:
            try:
                data = json.loads(message)
                passed = await self._mcp_event(data, message) if isinstance(data, dict) else message
            except Exception as e:  # one bad event never ends the call
                logger.warning(f"{self} dropped an MCP event ({type(e).__name__}: {e})")
                return None
            if passed is None:
                return None
            message = passed
        return await super()._on_server_message(message)

    async def _mcp_event(self, data: dict[str, Any], message: str) -> str | None:
        """Handle an event about MCP tools; return what Pipecat gets (None: nothing)."""
        kind = str(data.get("type"))
        if kind in _ITEM_EVENTS:
            item = data.get("item") or {}
            if item.get("type") not in MCP_ITEM_TYPES:
                return message
            await self._mcp_item(item, done=kind.endswith(".done"))
            return None
        if kind == "response.done":
            return json.dumps(await self._mcp_response_done(data))
        if not kind.startswith(("mcp_list_tools.", "response.mcp_call")):
            return message  # something else that mentions MCP: Pipecat's
        item_id = str(data.get("item_id"))
        call = self._mcp_calls.get(item_id)
        if kind == "mcp_list_tools.failed":
            label = self._mcp_lists.get(item_id, "?")
            logger.warning(f"{self} MCP server {label}: its tools could not be listed")
        elif kind == "response.mcp_call_arguments.done" and call is not None:
            call.arguments = str(data.get("arguments") or "")
            self._mcp_start(item_id, call)
        elif kind == "response.mcp_call.in_progress":
            if call is not None:
                self._mcp_start(item_id, call)
            self._mcp_deadline(MCP_CALL_TIMEOUT_SECS, "no audio after the MCP call")
        elif kind == "response.mcp_call.failed" and call is not None:
            call.failed = True
        return None

    async def _mcp_item(self, item: dict[str, Any], *, done: bool) -> None:
        kind, item_id = item.get("type"), str(item.get("id"))
        label = str(item.get("server_label") or "")
        if kind == "mcp_list_tools":
            self._mcp_lists[item_id] = label
            if done and item_id not in self._mcp_seen:
                self._mcp_seen.add(item_id)
                names = [str(tool.get("name")) for tool in item.get("tools") or []]
                self.mcp_tools[label] = names
                logger.info(f"{self} MCP server {label}: {len(names)} tools {names}")
        elif kind == "mcp_call":
            call = self._mcp_calls.setdefault(item_id, _Call(label, str(item.get("name"))))
            if item.get("arguments"):
                call.arguments = str(item["arguments"])
            if done or item.get("output") is not None or item.get("error") is not None:
                self._mcp_finish(item_id, call, item)
        elif kind == "mcp_approval_request" and done and item_id not in self._mcp_seen:
            self._mcp_seen.add(item_id)
            request = _Approval(item_id, label, str(item.get("name")), str(item.get("arguments")))
            await self._mcp_approval_requested(request)

    def _mcp_start(self, item_id: str, call: _Call) -> None:
        if not call.started:
            call.started = True
            self.call_events.tool_started(item_id, f"{call.label}.{call.name}", call.arguments)

    def _mcp_finish(self, item_id: str, call: _Call, item: dict[str, Any]) -> None:
        if call.finished:
            return
        self._mcp_start(item_id, call)
        call.finished = True
        error = item.get("error")
        message = None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "failed")
        elif call.failed or item.get("output") is None:
            message = "failed" if call.failed else "no output"
        self.call_events.tool_finished(item_id, result=item.get("output"), error=message)
        ms = next(
            (c.duration_ms for c in reversed(self.call_events.tool_calls) if c.call_id == item_id),
            0.0,
        )
        if message is None:
            logger.info(f"{self} MCP {call.label}.{call.name} answered in {ms:.0f} ms")
        else:
            logger.warning(f"{self} MCP {call.label}.{call.name} failed in {ms:.0f} ms: {message}")
        self._mcp_deadline(FIRST_AUDIO_TIMEOUT_SECS, "no audio after the MCP call")

    def _mcp_deadline(self, secs: float, detail: str) -> None:
        """Give the response ``secs`` more for its first audio, if it is still awaited."""
        if self._first_byte.armed:
            self._first_byte.arm(Failure(self._awaited_stage, "no_first_byte", detail), secs)

    async def _mcp_response_done(self, data: dict[str, Any]) -> dict[str, Any]:
        """A response ended: finish its MCP calls; answer if it went silent after one."""
        response = data.get("response") or {}
        output = response.get("output") or []
        for item in output:
            if item.get("type") in MCP_ITEM_TYPES:
                await self._mcp_item(item, done=True)
        last_call = max(
            (i for i, item in enumerate(output) if item.get("type") == "mcp_call"), default=None
        )
        after = output[last_call + 1 :] if last_call is not None else []
        spoke_after = any(item.get("type") in ("message", "function_call") for item in after)
        if last_call is not None and not spoke_after and response.get("status") == "completed":
            if output[last_call].get("error") is not None:
                await self.say(self.tool_error_message)
            else:
                await self._respond()  # the model answers with the tool's output
        response["output"] = [item for item in output if item.get("type") not in MCP_ITEM_TYPES]
        return data

    async def _mcp_approval_requested(self, request: _Approval) -> None:
        server = self._mcp_servers.get(request.label)
        if server is not None and server.needs_consent(request.name):
            logger.info(
                f"{self} MCP {request.label}.{request.name} needs the caller's consent: asking"
            )
            self._mcp_waiting.append(request)
            await self._respond(self._consent_instructions(request))
            return
        await self._send_mcp_approval(request.id, True)
        await self._respond()  # the approved call runs in the next response

    def _consent_instructions(self, request: _Approval) -> str:
        return (
            f"{self._instructions}\n\nYou asked to run the tool {request.name} "
            f"({request.label}) with the arguments {request.arguments}. It needs the "
            "caller's consent: in one short sentence, tell the caller what you are about "
            f"to do and ask whether to go ahead. When they answer, call {CONSENT_TOOL} "
            "with approve true for yes, false for no."
        )

    async def answer_mcp_approval(self, approve: bool) -> dict[str, Any]:
        """Pass the caller's answer to the oldest approval request waiting for it.

        Args:
            approve: Whether the caller agreed.

        Returns:
            What goes back to the model: the tool and the answer, or an error if no
            request is waiting.
        """
        if not self._mcp_waiting:
            return {"error": "no tool call is waiting for the caller's consent"}
        request = self._mcp_waiting.popleft()
        reason = None if approve else "The caller said no."
        await self._send_mcp_approval(request.id, approve, reason)
        answer = "agreed to" if approve else "refused"
        logger.info(f"{self} the caller {answer} MCP {request.label}.{request.name}")
        return {"tool": request.name, "approved": approve}

    async def _send_mcp_approval(
        self, request_id: str, approve: bool, reason: str | None = None
    ) -> None:
        item: dict[str, Any] = {
            "type": "mcp_approval_response",
            "id": f"mcpr_{uuid.uuid4().hex[:24]}",
            "approval_request_id": request_id,
            "approve": approve,
        }
        if reason:
            item["reason"] = reason
        await self._ws_send({"type": "conversation.item.create", "item": item})

    def _forget_session(self) -> None:
        super()._forget_session()
        # The old session's calls and requests are gone with it.
        for item_id, call in list(self._mcp_calls.items()):
            if not call.finished:
                self._mcp_finish(item_id, call, {"error": {"message": "the session was lost"}})
        self._mcp_calls.clear()
        self._mcp_waiting.clear()
