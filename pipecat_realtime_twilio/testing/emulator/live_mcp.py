#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""MCP tools in a Live session: the Responses backend calls the session's MCP servers.

A Live session with Responses delegation may list ``mcp`` tools in
``delegation.responses.tools``; OpenAI's backend connects to those servers itself. A
scripted ``Reply(mcp_call=McpCall(...))`` makes the model delegate a turn whose
backend response calls the tool, as the Realtime path (``mcp_calls``) does, with the
same real MCP client (``mcp_client``) and the Responses API's events, each nested in a
``response.event`` envelope (and checked against ``ResponseStreamEvent``):

- The turn delegates (``session.delegation.created``, target ``responses``) and says
  nothing itself; its backend response runs in the background (``response.created``).
- The first response that calls an MCP tool lists the tools of every MCP server not
  listed yet: an ``mcp_list_tools`` output item, ``response.mcp_list_tools.in_progress``,
  then ``.completed`` (the item done with the tools ``allowed_tools`` lets through)
  or ``.failed`` (the item done with its ``error``).
- If the server's ``require_approval`` asks for it, the response holds an
  ``mcp_approval_request`` item and completes. The client answers with
  ``response.item.create`` of an ``mcp_approval_response`` and ``response.create``;
  the next response (same delegation) carries on with that reply (the scripted replies
  are not consulted for it): the call if approved, else ``McpCall.on_decline``.
- Otherwise, or once approved: an ``mcp_call`` item (with its ``approval_request_id``
  if one was asked), ``response.mcp_call_arguments.delta``/``.done``,
  ``response.mcp_call.in_progress``, the call itself (the server's URL with the
  session's headers for it), ``response.mcp_call.completed`` or ``.failed``, the item
  done with its ``output`` or ``error`` (the Responses API's ``http_error``,
  ``mcp_protocol_error`` or ``mcp_tool_execution_error``), then a message whose text
  is the reply's (``{output}`` replaced by the tool's output; ``McpCall.on_error`` if
  the call failed) and ``response.completed``. A tool the listing did not offer fails
  without reaching the server.
- When the backend's message arrives the model speaks it: a new turn, trigger
  ``"delegation"``. An empty text ends the response without a message (the model says
  nothing until the client asks the backend again).

``McpCallRecord.error`` keeps the client's view of a failure (``type``, ``message``),
the item the Responses form of it.
"""

import copy
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from .live_host import LiveParts
from .live_records import LiveDelegation, LiveResponse
from .mcp_calls import allowed, needs_approval
from .mcp_client import McpFailure, McpOutcome, McpUnavailable, call_tool, list_tools
from .records import McpCall, McpCallRecord, McpListing, Reply, new_id
from .usage import text_tokens


@dataclass
class _Pending:
    reply: Reply
    record: McpCallRecord
    delegation_id: str


@dataclass
class _Listed:
    key: str  # the server's tool config, as JSON: a change lists again
    listing: McpListing
    tools: list[dict]


def responses_error(error: dict) -> dict:
    """An MCP failure (``mcp_client``'s form) as a Responses ``mcp_call`` item's ``error``."""
    kind, message = error.get("type"), str(error.get("message") or "")
    if kind == "tool_execution_error":
        return {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": message}]}
    if kind == "protocol_error":
        return {
            "type": "mcp_protocol_error",
            "code": int(error.get("code") or 0),
            "message": message,
        }
    return {"type": "http_error", "code": int(error.get("code") or 500), "message": message}


class LiveMcpCalls(LiveParts):
    """The MCP part of a Live session's Responses backend (a mixin of ``LiveDelegations``).

    Attributes:
        mcp_listings: Every listing of an MCP server's tools, in order.
        mcp_calls: Every MCP tool call the backend made (or asked approval for), in order.
    """

    if TYPE_CHECKING:
        backend_items: list[dict]

        @property
        def delegation(self) -> dict:
            """The resolved delegation configuration."""

        def delegation_by_id(self, delegation_id: str) -> LiveDelegation | None:
            """Return the delegation with this id, or None."""

        def _new_delegation(
            self, target: str, response_id: str | None, function: str | None
        ) -> LiveDelegation: ...

        def _response_event_sender(self, delegation_id: str, response_id: str) -> Any: ...

        def _snapshot(
            self,
            response_id: str,
            status: str,
            usage: dict | None = None,
            error: dict | None = None,
        ) -> dict: ...

        def _message_events(self, text: str, send: Any, output_index: int = 0) -> int: ...

        def _fail_response(
            self, delegation: LiveDelegation, response_id: str, failure: Any, send: Any
        ) -> None: ...

        def _backend_usage(self, output_tokens: int) -> dict: ...

        def _end_turn(self, turn: LiveResponse, status: str) -> None: ...

    def _init_mcp(self) -> None:
        self.mcp_listings: list[McpListing] = []
        self.mcp_calls: list[McpCallRecord] = []
        self._mcp_listed: dict[str, _Listed] = {}
        self._mcp_pending: dict[str, _Pending] = {}  # approval request id -> its call
        self._mcp_resume: dict[str, _Pending] = {}  # turn id -> the call it carries on

    def mcp_server(self, label: str) -> dict | None:
        """The session's Responses ``mcp`` tool labelled ``label``, if any."""
        return next((s for s in self._mcp_servers() if s.get("server_label") == label), None)

    def _mcp_servers(self) -> list[dict]:
        tools = (self.delegation.get("responses") or {}).get("tools") or []
        return [tool for tool in tools if isinstance(tool, dict) and tool.get("type") == "mcp"]

    # -- approvals answered (response.create) ------------------------------------------

    def _mcp_answered(self) -> _Pending | None:
        """The call whose approval request the client answered, taken out of waiting."""
        answers = {
            item.get("approval_request_id"): item.get("approve") is True
            for item in self.backend_items
            if item.get("type") == "mcp_approval_response"
        }
        for request_id, pending in list(self._mcp_pending.items()):
            if request_id in answers:
                del self._mcp_pending[request_id]
                pending.record.approved = answers[request_id]
                return pending
        return None

    def _mcp_resume_turn(self, pending: _Pending) -> None:
        turn = self._queue_turn(
            "response.create", reply=pending.reply, delegation_id=pending.delegation_id
        )
        self._mcp_resume[turn.id] = pending

    # -- a turn that calls an MCP tool ---------------------------------------------------

    def _mcp_delegate(self, turn: LiveResponse) -> bool:
        """Delegate the turn's MCP call to the backend; the turn itself says nothing.

        Returns:
            False if its delegated response failed at once (an armed fault).
        """
        reply = turn.reply
        assert reply is not None and reply.mcp_call is not None
        resumed = self._mcp_resume.pop(turn.id, None)
        response_id = new_id("resp")
        delegation = self.delegation_by_id(turn.delegation_id) if turn.delegation_id else None
        if delegation is None:
            delegation = self._new_delegation("responses", response_id, reply.mcp_call.name)
        delegation.response_ids.append(response_id)
        turn.delegation_id, turn.response_id = delegation.id, response_id
        send = self._response_event_sender(delegation.id, response_id)
        send("response.created", response=self._snapshot(response_id, "in_progress"))
        failure = self._emulator.live_faults.delegation_failures.take()
        if failure is not None:
            self._fail_response(delegation, response_id, failure, send)
            return False
        self._end_turn(turn, "completed")  # it speaks nothing: the backend's answer will
        self._spawn(
            self._mcp_response(reply, delegation, response_id, send, resumed),
            f"live-mcp-{response_id}",
        )
        return True

    async def _mcp_response(
        self,
        reply: Reply,
        delegation: LiveDelegation,
        response_id: str,
        send: Any,
        resumed: _Pending | None,
    ) -> None:
        call = reply.mcp_call
        assert call is not None
        index = 0 if resumed is not None else await self._mcp_list(send)
        text: str | None = None
        if resumed is not None and not resumed.record.approved:
            text = call.on_decline
        else:
            record = resumed.record if resumed is not None else self._mcp_record(call)
            offered = self._mcp_offered(call)
            server = self.mcp_server(call.server_label)
            if (
                resumed is None
                and server is not None
                and offered is not None
                and needs_approval(server, call.name, offered.get("annotations") or {})
            ):
                self._mcp_ask(reply, record, delegation, send, index)
                send("response.completed", response=self._completed(response_id, 0))
                return
            outcome = await self._mcp_execute(call, record, offered is not None, send, index)
            index += 1
            if outcome.error is not None:
                text = call.on_error
            else:
                text = reply.text.replace("{output}", outcome.output or "")
        tokens = self._message_events(text, send, index) if text else 0
        send("response.completed", response=self._completed(response_id, tokens))
        if text:
            answer = Reply(text=text, audio=reply.audio, duration_ms=reply.duration_ms)
            self._queue_turn("delegation", reply=answer, delegation_id=delegation.id)

    def _completed(self, response_id: str, output_tokens: int) -> dict:
        return self._snapshot(response_id, "completed", self._backend_usage(output_tokens))

    def _mcp_record(self, call: McpCall) -> McpCallRecord:
        record = McpCallRecord(call.server_label, call.name, json.dumps(call.arguments), "")
        self.mcp_calls.append(record)
        return record

    def _mcp_offered(self, call: McpCall) -> dict | None:
        """The tool as the server's listing offered it, or None (not offered, not listed)."""
        listed = self._mcp_listed.get(call.server_label)
        tools = listed.tools if listed is not None else []
        return next((tool for tool in tools if tool.get("name") == call.name), None)

    async def _mcp_list(self, send: Any) -> int:
        """List the tools of every MCP server not listed yet; return the next output index."""
        index = 0
        for server in self._mcp_servers():
            label = str(server.get("server_label"))
            key = json.dumps(server, sort_keys=True)
            current = self._mcp_listed.get(label)
            if current is not None and current.key == key:
                continue
            item: dict[str, Any] = {"id": new_id("mcpl"), "type": "mcp_list_tools"}
            item |= {"server_label": label, "tools": []}
            listing = McpListing(label, str(server.get("server_url")), item["id"])
            self.mcp_listings.append(listing)
            send("response.output_item.added", output_index=index, item=copy.deepcopy(item))
            where = {"item_id": item["id"], "output_index": index}
            send("response.mcp_list_tools.in_progress", **where)
            offered: list[dict] = []
            try:
                offered = allowed(server, await list_tools(listing.server_url, _headers(server)))
            except (McpFailure, McpUnavailable) as e:
                if isinstance(e, McpUnavailable):
                    self._emulator.internal_errors.append(e)
                listing.error = item["error"] = str(e)
                logger.debug(f"Live emulator {self.id}: MCP {label}: {e}")
                send("response.mcp_list_tools.failed", **where)
            else:
                listing.tools = [tool["name"] for tool in offered]
                item["tools"] = offered
                send("response.mcp_list_tools.completed", **where)
            send("response.output_item.done", output_index=index, item=item)
            self._mcp_listed[label] = _Listed(key, listing, offered)
            index += 1
        return index

    def _mcp_ask(
        self, reply: Reply, record: McpCallRecord, delegation: LiveDelegation, send: Any, index: int
    ) -> None:
        item = {
            "id": new_id("mcpr"),
            "type": "mcp_approval_request",
            "server_label": record.server_label,
            "name": record.name,
            "arguments": record.arguments,
        }
        record.item_id = record.approval_request_id = item["id"]
        send("response.output_item.added", output_index=index, item=copy.deepcopy(item))
        send("response.output_item.done", output_index=index, item=item)
        self._mcp_pending[item["id"]] = _Pending(reply, record, delegation.id)
        logger.debug(f"Live emulator {self.id}: MCP {record.name} awaits approval")

    async def _mcp_execute(
        self, call: McpCall, record: McpCallRecord, offered: bool, send: Any, index: int
    ) -> McpOutcome:
        item: dict[str, Any] = {
            "id": new_id("mcp"),
            "type": "mcp_call",
            "server_label": call.server_label,
            "name": call.name,
            "arguments": "",
            "status": "in_progress",
        }
        if record.approval_request_id:
            item["approval_request_id"] = record.approval_request_id
        record.item_id = item["id"]
        send("response.output_item.added", output_index=index, item=copy.deepcopy(item))
        where = {"item_id": item["id"], "output_index": index}
        send("response.mcp_call_arguments.delta", delta=record.arguments, **where)
        send("response.mcp_call_arguments.done", arguments=record.arguments, **where)
        item["arguments"] = record.arguments
        send("response.mcp_call.in_progress", **where)
        started = time.monotonic()
        outcome = await self._mcp_run(call, offered)
        record.duration_ms = (time.monotonic() - started) * 1000
        if outcome.error is not None:
            record.error = outcome.error
            item.update(status="failed", error=responses_error(outcome.error))
            send("response.mcp_call.failed", **where)
        else:
            record.output = item["output"] = outcome.output
            item["status"] = "completed"
            send("response.mcp_call.completed", **where)
        send("response.output_item.done", output_index=index, item=item)
        return outcome

    async def _mcp_run(self, call: McpCall, offered: bool) -> McpOutcome:
        """Call the tool on the session's server, if the listing offered it."""
        server = self.mcp_server(call.server_label)
        if server is None or not offered:
            where = "in the session" if server is None else f"on {call.server_label}"
            message = f"tool {call.name!r} is not available {where}"
            return McpOutcome(error={"type": "protocol_error", "code": -32602, "message": message})
        try:
            return await call_tool(
                str(server.get("server_url")), _headers(server), call.name, call.arguments
            )
        except McpUnavailable as e:
            self._emulator.internal_errors.append(e)
            return McpOutcome(error={"type": "http_error", "code": 500, "message": str(e)})


def _headers(server: dict) -> dict[str, str]:
    return dict(server.get("headers") or {})


def backend_usage(input_text: str, output_tokens: int) -> dict:
    """A delegated response's ``usage``: the backend's input text and output tokens."""
    input_tokens = text_tokens(input_text)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
