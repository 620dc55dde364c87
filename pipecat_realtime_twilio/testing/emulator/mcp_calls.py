#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""MCP tools in an emulated session: the server calls the session's MCP servers, as OpenAI does.

- After a ``session.update`` whose tools hold a new (or changed) ``mcp`` server, its
  tools are listed: an ``mcp_list_tools`` item (``conversation.item.added``),
  ``mcp_list_tools.in_progress``, then ``mcp_list_tools.completed`` and the item done
  with the tools ``allowed_tools`` lets through, or ``mcp_list_tools.failed``.
- A scripted ``Reply(mcp_call=McpCall(...))`` makes the model call a tool: if the
  server's ``require_approval`` asks for it, the response holds an
  ``mcp_approval_request`` item and ends; the next response after the client's
  ``mcp_approval_response`` carries on with that reply (the scripted replies are not
  consulted for it). Otherwise, or once approved: an ``mcp_call`` item,
  ``response.mcp_call_arguments.delta``/``.done``, ``response.mcp_call.in_progress``,
  the call itself (the server's URL with the session's headers for it), then
  ``response.mcp_call.completed`` (the item's ``output``) or ``.failed`` (its
  ``error``), and the reply's words. A tool the listing did not offer fails without
  reaching the server.
"""

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from .host import SessionParts
from .mcp_client import McpFailure, McpOutcome, McpUnavailable, call_tool, list_tools
from .records import (
    EmulatedResponse,
    ItemMeta,
    McpCall,
    McpCallRecord,
    McpListing,
    Reply,
    new_id,
)


@dataclass
class _Listed:
    key: str  # the server's tool config, as JSON: a change lists again
    listing: McpListing
    task: asyncio.Task


@dataclass
class _Pending:
    reply: Reply
    record: McpCallRecord
    approved: bool | None = None


def _matches(rule: Any, name: str, annotations: dict) -> bool:
    """Whether a tool filter (``tool_names``, ``read_only``) selects tool ``name``."""
    if not isinstance(rule, dict):
        return False
    if name in (rule.get("tool_names") or []):
        return True
    read_only = rule.get("read_only")
    return read_only is not None and bool(annotations.get("readOnlyHint")) == read_only


def needs_approval(server: dict, name: str, annotations: dict | None = None) -> bool:
    """Whether the session's ``require_approval`` for ``server`` asks before calling ``name``.

    Args:
        server: The session's ``mcp`` tool.
        name: The tool.
        annotations: The tool's MCP annotations (``readOnlyHint``), if listed.

    Returns:
        ``always``: True; ``never``: False; a filter: False for a tool its ``never``
        selects and not its ``always``, True otherwise (asking is the API's default).
    """
    rule = server.get("require_approval", "always")
    if rule in ("always", "never"):
        return rule == "always"
    if not isinstance(rule, dict):
        return True
    annotations = annotations or {}
    if _matches(rule.get("always"), name, annotations):
        return True
    return not _matches(rule.get("never"), name, annotations)


def allowed(server: dict, tools: list[dict]) -> list[dict]:
    """The listed tools ``allowed_tools`` lets through (a list of names, or a filter)."""
    rule = server.get("allowed_tools")
    if rule is None:
        return tools
    if isinstance(rule, list):
        return [tool for tool in tools if tool["name"] in rule]
    return [tool for tool in tools if _matches(rule, tool["name"], tool.get("annotations") or {})]


class McpCalls(SessionParts):
    """The MCP part of ``EmulatedSession`` (a mixin of ``Responses``).

    Attributes:
        mcp_listings: Every listing of an MCP server's tools, in order.
        mcp_calls: Every MCP tool call the model made (or asked approval for), in order.
    """

    if TYPE_CHECKING:
        _loop: asyncio.AbstractEventLoop

        def _spawn(self, coro: Any, name: str) -> asyncio.Task: ...

        def _add_output_item(self, response: EmulatedResponse, item: dict) -> None: ...

        def _emit_output_item(
            self, response: EmulatedResponse, event_type: str, item: dict
        ) -> None: ...

        def _output_index(self, response: EmulatedResponse, item: dict) -> int: ...

        def _finish(self, response: EmulatedResponse, status: str, reason: str | None) -> None: ...

    def _init_mcp(self) -> None:
        self.mcp_listings: list[McpListing] = []
        self.mcp_calls: list[McpCallRecord] = []
        self._mcp_listed: dict[str, _Listed] = {}
        self._mcp_pending: dict[str, _Pending] = {}  # approval request id -> its call
        self._mcp_resume: dict[str, _Pending] = {}  # response id -> the call it carries on

    def mcp_server(self, label: str) -> dict | None:
        """The session's ``mcp`` tool labelled ``label``, if any."""
        return next(
            (
                tool
                for tool in self.config.get("tools") or []
                if tool.get("type") == "mcp" and tool.get("server_label") == label
            ),
            None,
        )

    # -- listing, after session.update ---------------------------------------------------

    def _mcp_tools_updated(self) -> None:
        """List the tools of every MCP server the session names anew (or differently)."""
        servers = [tool for tool in self.config.get("tools") or [] if tool.get("type") == "mcp"]
        labels = {str(server.get("server_label")) for server in servers}
        for label in [label for label in self._mcp_listed if label not in labels]:
            del self._mcp_listed[label]
        for server in servers:
            label = str(server.get("server_label"))
            key = json.dumps(server, sort_keys=True)
            current = self._mcp_listed.get(label)
            if current is not None and current.key == key:
                continue
            item: dict[str, Any] = {"id": new_id("mcpl"), "type": "mcp_list_tools"}
            item |= {"server_label": label, "tools": []}
            previous = self._id_before(len(self.items))
            self.items.append(item)
            self._item_meta[item["id"]] = ItemMeta()
            self._emit_item("conversation.item.added", item, previous)
            self._emit({"type": "mcp_list_tools.in_progress", "item_id": item["id"]})
            listing = McpListing(label, str(server.get("server_url")), item["id"])
            self.mcp_listings.append(listing)
            task = self._spawn(self._mcp_list(listing, item, server), f"emulator-mcp-{label}")
            self._mcp_listed[label] = _Listed(key, listing, task)

    async def _mcp_list(self, listing: McpListing, item: dict, server: dict) -> None:
        try:
            tools = await list_tools(listing.server_url, server.get("headers") or {})
        except (McpFailure, McpUnavailable) as e:
            if isinstance(e, McpUnavailable):
                self._emulator.internal_errors.append(e)
            listing.error = str(e)
            logger.debug(f"Realtime emulator {self.id}: MCP {listing.server_label}: {e}")
            self._emit({"type": "mcp_list_tools.failed", "item_id": listing.item_id})
            return
        offered = allowed(server, tools)
        item["tools"] = offered
        listing.tools = [tool["name"] for tool in offered]
        self._emit({"type": "mcp_list_tools.completed", "item_id": listing.item_id})
        index = next((i for i, it in enumerate(self.items) if it is item), None)
        if index is not None:
            self._emit_item("conversation.item.done", item, self._id_before(index))

    # -- calls, in a response -----------------------------------------------------------

    def _mcp_resumed_reply(self, response: EmulatedResponse) -> Reply | None:
        """The reply an answered approval request waits to carry on with, if any.

        Args:
            response: The response starting: it carries that reply on.

        Returns:
            The reply, or None (the scripted replies give the response's).
        """
        answers = {
            item.get("approval_request_id"): item.get("approve") is True
            for item in self.items
            if item.get("type") == "mcp_approval_response"
        }
        for request_id, pending in list(self._mcp_pending.items()):
            if request_id in answers:
                del self._mcp_pending[request_id]
                pending.approved = answers[request_id]
                pending.record.approved = pending.approved
                self._mcp_resume[response.id] = pending
                return pending.reply
        return None

    async def _play_mcp(self, response: EmulatedResponse, reply: Reply) -> Reply | None:
        """Play the reply's MCP call; return what the model says next.

        Returns:
            The reply to speak, or None: the response is over (finished here when
            nothing follows the call, or cancelled meanwhile).
        """
        after = await self._mcp_turn(response, reply)
        if after is None and response.active:
            self._finish(response, "completed", None)
        return after if response.active else None

    async def _mcp_turn(self, response: EmulatedResponse, reply: Reply) -> Reply | None:
        call = reply.mcp_call
        assert call is not None
        resumed = self._mcp_resume.pop(response.id, None)
        if resumed is not None:
            if not resumed.approved:
                return Reply(text=call.on_decline) if call.on_decline else None
            record = resumed.record
        else:
            record = McpCallRecord(
                call.server_label, call.name, json.dumps(call.arguments), item_id=""
            )
            self.mcp_calls.append(record)
            server = self.mcp_server(call.server_label)
            annotations = await self._mcp_annotations(call)  # None: the tool is not offered
            if (
                server is not None
                and annotations is not None
                and needs_approval(server, call.name, annotations)
            ):
                self._mcp_ask_approval(response, reply, record)
                return None
        outcome = await self._mcp_execute(response, call, record)
        if outcome.error is not None:
            return Reply(text=call.on_error) if call.on_error else None
        text = reply.text.replace("{output}", outcome.output or "")
        return Reply(text=text, audio=reply.audio, duration_ms=reply.duration_ms) if text else None

    async def _mcp_annotations(self, call: McpCall) -> dict | None:
        """The tool's annotations from the server's listing (waiting for it to finish)."""
        listed = self._mcp_listed.get(call.server_label)
        if listed is None:
            return None
        await asyncio.wait({listed.task})
        for item in self.items:
            if item.get("id") == listed.listing.item_id:
                for tool in item.get("tools") or []:
                    if tool.get("name") == call.name:
                        return tool.get("annotations") or {}
        return None

    def _mcp_ask_approval(
        self, response: EmulatedResponse, reply: Reply, record: McpCallRecord
    ) -> None:
        call = reply.mcp_call
        assert call is not None
        item = {
            "id": new_id("mcpr"),
            "type": "mcp_approval_request",
            "server_label": call.server_label,
            "name": call.name,
            "arguments": record.arguments,
        }
        record.item_id = record.approval_request_id = item["id"]
        self._finish_mcp_item(response, item)
        self._mcp_pending[item["id"]] = _Pending(reply, record)
        logger.debug(f"Realtime emulator {self.id}: MCP {call.name} awaits approval")

    async def _mcp_execute(
        self, response: EmulatedResponse, call: McpCall, record: McpCallRecord
    ) -> McpOutcome:
        item: dict[str, Any] = {
            "id": new_id("mcp"),
            "type": "mcp_call",
            "server_label": call.server_label,
            "name": call.name,
            "arguments": "",
        }
        if record.approval_request_id:
            item["approval_request_id"] = record.approval_request_id
        record.item_id = item["id"]
        self._add_output_item(response, item)
        common = {"item_id": item["id"], "output_index": self._output_index(response, item)}
        arguments = record.arguments
        self._emit(
            {"type": "response.mcp_call_arguments.delta", "response_id": response.id, **common}
            | {"delta": arguments}
        )
        item["arguments"] = arguments
        self._emit(
            {"type": "response.mcp_call_arguments.done", "response_id": response.id, **common}
            | {"arguments": arguments}
        )
        self._emit({"type": "response.mcp_call.in_progress", **common})
        started = time.monotonic()
        try:
            outcome = await self._mcp_run(call)
        except asyncio.CancelledError:
            record.error = {"type": "cancelled", "message": "the response was cancelled"}
            raise
        record.duration_ms = (time.monotonic() - started) * 1000
        if outcome.error is not None:
            item["error"] = record.error = outcome.error
            self._emit({"type": "response.mcp_call.failed", **common})
        else:
            item["output"] = record.output = outcome.output
            self._emit({"type": "response.mcp_call.completed", **common})
        self._emit_output_item(response, "response.output_item.done", item)
        index = next((i for i, it in enumerate(self.items) if it is item), None)
        if index is not None:
            self._emit_item("conversation.item.done", item, self._id_before(index))
        return outcome

    async def _mcp_run(self, call: McpCall) -> McpOutcome:
        """Call the tool on the session's server, as the listing allows."""
        server = self.mcp_server(call.server_label)
        listed = self._mcp_listed.get(call.server_label)
        if server is None or listed is None:
            message = f"no MCP server labelled {call.server_label!r} in the session"
            return McpOutcome(error={"type": "protocol_error", "code": -32602, "message": message})
        await asyncio.wait({listed.task})
        if call.name not in (listed.listing.tools or []):
            message = f"tool {call.name!r} is not available on {call.server_label}"
            return McpOutcome(error={"type": "protocol_error", "code": -32602, "message": message})
        url, headers = str(server.get("server_url")), server.get("headers") or {}
        try:
            return await call_tool(url, headers, call.name, call.arguments)
        except McpUnavailable as e:
            self._emulator.internal_errors.append(e)
            return McpOutcome(error={"type": "http_error", "code": 500, "message": str(e)})

    def _finish_mcp_item(self, response: EmulatedResponse, item: dict) -> None:
        """Add a complete output item (``.added``, then ``.done``)."""
        self._add_output_item(response, item)
        self._emit_output_item(response, "response.output_item.done", item)
        index = next((i for i, it in enumerate(self.items) if it is item), None)
        if index is not None:
            self._emit_item("conversation.item.done", item, self._id_before(index))
