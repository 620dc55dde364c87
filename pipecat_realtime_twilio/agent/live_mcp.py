#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""MCP servers on GPT-Live: Responses MCP tools the backend calls, followed by the agent.

A Live bot's MCP servers (:class:`~pipecat_realtime_twilio.agent.mcp.McpServer`, the
``mcp:`` front matter) are tools of the Responses model GPT-Live delegates to: each
goes in ``session.start`` as a tool of type ``mcp`` in ``delegation.responses.tools``
(the ``openai`` package's Responses ``Mcp`` tool, headers read from the environment
when the call starts, never logged; see
:func:`~pipecat_realtime_twilio.agent.live_config.backend_tools`). OpenAI's backend
lists the server's tools and calls them; the session reports it in ``response.event``
envelopes (``mcp_list_tools``, ``mcp_call`` and ``mcp_approval_request`` output items,
``response.mcp_list_tools.*``, ``response.mcp_call_arguments.*``,
``response.mcp_call.*``), which :class:`LiveMcp` reads:

- each MCP call is a tool call in the call's events (name ``LABEL.TOOL``, arguments,
  result or error, ms) and a log line; a server whose tools could not be listed is
  logged;
- a delegated response that ends right after an MCP call with no message for the
  model to relay: after a failed call the bot says its ``tool_error_message``, else
  the backend is asked to answer (``response.create``), so the caller never waits in
  silence;
- an ``mcp_approval_request`` for a tool the bot says needs the caller's consent
  (``approval``): the model is asked (commentary) to put it to the caller in a
  sentence; their yes or no reaches the backend's ``confirm_tool_call`` function tool
  (:func:`~pipecat_realtime_twilio.agent.mcp_events.consent_tool`, added to the
  backend's tools), whose handler sends the ``mcp_approval_response`` as
  ``response.item.create`` before the function's output and ``response.create``: the
  approved call runs in the next response. Any other request is approved at once
  (the ``mcp_approval_response``, then ``response.create`` once its response is over).
"""

import json
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.services.openai.live import events

from pipecat_realtime_twilio.agent.live_hold import LiveHold
from pipecat_realtime_twilio.agent.mcp import McpServer, mcp_servers_in
from pipecat_realtime_twilio.agent.mcp_events import CONSENT_TOOL, MCP_ITEM_TYPES, consent_tool

_FINISHED = ("response.completed", "response.incomplete", "response.failed")
_ANSWERS = ("message", "function_call")  # output items after an MCP call that answer it


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


class LiveMcp(LiveHold):
    """MCP tools on a GPT-Live call's side (see the module doc)."""

    tool_error_message: str

    def __init__(self, *, mcp_servers: list[McpServer] | None = None, **kwargs):
        """Initialize.

        Args:
            mcp_servers: The bot's MCP servers (already among the backend's tools).
            **kwargs: :class:`~pipecat_realtime_twilio.agent.live_hold.LiveHold` arguments.
        """
        super().__init__(**kwargs)
        self.mcp_servers = list(mcp_servers or [])
        """The agent's MCP servers."""
        self.mcp_tools: dict[str, list[str]] = {}
        """Tool names each server listed, by label (as the session reported them)."""
        self._mcp_by_label = {server.label: server for server in self.mcp_servers}
        self._mcp_calls: dict[str, _Call] = {}
        self._mcp_lists: dict[str, str] = {}  # mcp_list_tools item id -> label
        self._mcp_items: dict[str, list[dict[str, Any]]] = {}  # per delegation: items done
        self._mcp_waiting: deque[_Approval] = deque()
        self._mcp_go_on: set[str] = set()  # delegations whose response approved a call

    async def _handle_evt_response(self, evt: events.ResponseEventEnvelope):
        if not self.mcp_servers:
            await super()._handle_evt_response(evt)
            return
        key = evt.delegation_id or "uncorrelated"
        try:
            await self._mcp_event(key, evt.inner_type, evt.event)
        except Exception as e:  # one bad event never ends the call
            logger.warning(f"{self} dropped an MCP event ({type(e).__name__}: {e})")
        await super()._handle_evt_response(evt)
        if evt.inner_type in _FINISHED:
            await self._mcp_response_over(key, evt.inner_type == "response.completed")

    async def _mcp_event(self, key: str, kind: str, data: dict[str, Any]) -> None:
        if kind == "response.created":
            self._mcp_items[key] = []
            return
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = data.get("item") or {}
            done = kind.endswith(".done")
            if done:
                self._mcp_items.setdefault(key, []).append(item)
            if item.get("type") in MCP_ITEM_TYPES:
                await self._mcp_item(key, item, done=done)
            return
        item_id = str(data.get("item_id"))
        call = self._mcp_calls.get(item_id)
        if kind == "response.mcp_list_tools.failed":
            label = self._mcp_lists.get(item_id, "?")
            logger.warning(f"{self} MCP server {label}: its tools could not be listed")
        elif kind == "response.mcp_call_arguments.done" and call is not None:
            call.arguments = str(data.get("arguments") or "")
            self._mcp_start(item_id, call)
        elif kind == "response.mcp_call.in_progress" and call is not None:
            self._mcp_start(item_id, call)
        elif kind == "response.mcp_call.failed" and call is not None:
            call.failed = True

    async def _mcp_item(self, key: str, item: dict[str, Any], *, done: bool) -> None:
        kind, item_id = item.get("type"), str(item.get("id"))
        label = str(item.get("server_label") or "")
        if kind == "mcp_list_tools":
            self._mcp_lists[item_id] = label
            if done and item.get("error") is None:
                names = [str(tool.get("name")) for tool in item.get("tools") or []]
                self.mcp_tools[label] = names
                logger.info(f"{self} MCP server {label}: {len(names)} tools {names}")
        elif kind == "mcp_call":
            call = self._mcp_calls.setdefault(item_id, _Call(label, str(item.get("name"))))
            if item.get("arguments"):
                call.arguments = str(item["arguments"])
            if done:
                self._mcp_finish(item_id, call, item)
        elif kind == "mcp_approval_request" and done:
            request = _Approval(item_id, label, str(item.get("name")), str(item.get("arguments")))
            await self._mcp_approval_requested(key, request)

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
        if error is not None:
            message = error_text(error)
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

    async def _mcp_response_over(self, key: str, completed: bool) -> None:
        """A delegated response ended: go on after an approval; answer after a silent call."""
        items = self._mcp_items.pop(key, [])
        kinds = [item.get("type") for item in items]
        if key in self._mcp_go_on:
            self._mcp_go_on.discard(key)
            if completed and "function_call" not in kinds:  # else it follows their outputs
                await self._ask_backend()
            return
        if not completed or "mcp_call" not in kinds:
            return
        last = len(kinds) - 1 - kinds[::-1].index("mcp_call")
        if any(kind in _ANSWERS for kind in kinds[last + 1 :]):
            return
        if items[last].get("error") is not None:
            await self.say(self.tool_error_message)
        else:
            await self._ask_backend()  # the backend answers with the tool's output

    async def _ask_backend(self) -> None:
        await self._send({"type": "response.create", "event_id": _event_id()})

    async def _mcp_approval_requested(self, key: str, request: _Approval) -> None:
        server = self._mcp_by_label.get(request.label)
        if server is not None and server.needs_consent(request.name):
            logger.info(
                f"{self} MCP {request.label}.{request.name} needs the caller's consent: asking"
            )
            self._mcp_waiting.append(request)
            await self._commentary(
                f"Before it goes on, the tool {request.name} ({request.label}) is to run with "
                f"the arguments {request.arguments}, and that needs the caller's consent. In "
                "one short sentence, tell the caller what you are about to do and ask whether "
                f"to go ahead; their yes or no goes to {CONSENT_TOOL}."
            )
            return
        await self._send_mcp_approval(request.id, True)
        self._mcp_go_on.add(key)  # the approved call runs once this response is over

    async def answer_mcp_approval(self, approve: bool) -> dict[str, Any]:
        """Pass the caller's answer to the oldest approval request waiting for it.

        Args:
            approve: Whether the caller agreed.

        Returns:
            What goes back to the backend: the tool and the answer, or an error if no
            request is waiting.
        """
        if not self._mcp_waiting:
            return {"error": "no tool call is waiting for the caller's consent"}
        request = self._mcp_waiting.popleft()
        await self._send_mcp_approval(
            request.id, approve, None if approve else "The caller said no."
        )
        answer = "agreed to" if approve else "refused"
        logger.info(f"{self} the caller {answer} MCP {request.label}.{request.name}")
        return {"tool": request.name, "approved": approve}

    async def _send_mcp_approval(
        self, request_id: str, approve: bool, reason: str | None = None
    ) -> None:
        item: dict[str, Any] = {
            "type": "mcp_approval_response",
            "approval_request_id": request_id,
            "approve": approve,
        }
        if reason:
            item["reason"] = reason
        await self._send({"type": "response.item.create", "event_id": _event_id(), "item": item})

    def _forget_session(self) -> None:
        super()._forget_session()
        # The old session's calls and requests are gone with it.
        for item_id, call in list(self._mcp_calls.items()):
            if not call.finished:
                self._mcp_finish(item_id, call, {"error": {"message": "the session was lost"}})
        self._mcp_calls.clear()
        self._mcp_items.clear()
        self._mcp_waiting.clear()
        self._mcp_go_on.clear()


def mcp_tools(tools: Any) -> tuple[Any, list[McpServer]]:
    """A Live agent's tools and MCP servers: ``confirm_tool_call`` added if one needs consent.

    Args:
        tools: What the agent was given (a list may hold ``McpServer`` objects).

    Returns:
        The tools (with the consent tool when a server's ``approval`` is not ``never``),
        and the MCP servers among them.
    """
    servers = mcp_servers_in(tools)
    if any(server.approval not in ("never", []) for server in servers):
        tools = [*tools, consent_tool()]  # the caller's consent, through the backend
    return tools, servers


def error_text(error: object) -> str:
    """What an ``mcp_call`` item's error says: its message, or its content's text.

    Args:
        error: The item's ``error`` (Responses: ``http_error``, ``mcp_protocol_error``,
            ``mcp_tool_execution_error`` with ``content``), or a plain string.

    Returns:
        A line of text.
    """
    if not isinstance(error, dict):
        return str(error)
    if error.get("message"):
        return str(error["message"])
    content = error.get("content")
    if isinstance(content, list):
        texts = [str(part.get("text")) for part in content if isinstance(part, dict)]
        if any(texts):
            return " ".join(text for text in texts if text)
    if content is not None:
        return json.dumps(content)[:300]
    return str(error.get("type") or "failed")


def _event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:20]}"
