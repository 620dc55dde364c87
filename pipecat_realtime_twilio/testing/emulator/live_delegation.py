#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Delegation in a Live session: tools through the Responses backend or the client.

A model turn whose scripted reply has a ``function_call`` delegates:

- With Responses delegation (``session.delegation.type == "responses"``) the function
  must be one of ``delegation.responses.tools`` (else the call is not made and the
  mismatch lands in the emulator's ``validation_errors``, code ``unknown_tool``). The
  session sends ``session.delegation.created`` (target ``responses``, with the
  ``response_id``), then the backend's stream as ``response.event`` envelopes (each
  nested event a valid ``ResponseStreamEvent``): ``response.created``,
  ``response.output_item.added`` (the ``function_call``),
  ``response.function_call_arguments.delta``/``.done``, ``response.output_item.done``
  (the completed call: ``call_id``, ``name``, ``arguments``) and
  ``response.completed`` with usage; lifecycle snapshots carry empty ``output`` and
  ``tools``, as the real service's do. The turn's ``text``, if any, is spoken after.
  The client answers with ``response.item.create`` (``function_call_output``; recorded
  in ``function_outputs``) and ``response.create``, which is refused
  (``function_call_outputs_required``) while a call of the session is unanswered.
  Then the backend answers: the next scripted reply (trigger ``"response.create"``),
  either another function call (same delegation, a new response) or a message whose
  ``output_text`` is the reply's text, which the model then speaks.
- With client delegation (the default) the session sends
  ``session.delegation.created`` (target ``client``, no task text) and speaks the
  turn's text; ``session.commentary.append`` with that ``delegation_id`` answers it
  (the model speaks again, trigger ``"commentary"``).

``fail_next_delegations`` fails delegated responses: ``response.created`` then
``response.failed`` (``error.code`` as armed; a code the Responses ``ResponseError``
does not have, such as ``insufficient_quota``, comes as a Live ``error`` event of
that type instead, and the ``response.failed`` has no ``error``). The model says
nothing for the failed turn.

A scripted ``mcp_call`` is a call of one of the session's Responses ``mcp`` tools
(``live_mcp``: the backend lists and calls the real MCP server); with client
delegation there are none: it is flagged in ``validation_errors`` (code
``not_emulated``) and the turn only speaks its text.
"""

import copy
import json
import time
import typing
from typing import TYPE_CHECKING, Any

from loguru import logger
from openai.types.responses import ResponseError

from .faults import _CODE_ERRORS, SERVER_ERROR_MESSAGE
from .live_mcp import LiveMcpCalls, backend_usage
from .live_records import DelegationFailure, LiveDelegation, LiveResponse
from .records import ClientEventError, FunctionCall, FunctionOutput, new_id
from .usage import text_tokens

_RESPONSE_ERROR_CODES = set(typing.get_args(ResponseError.model_fields["code"].annotation))
_BACKEND_MODEL = "gpt-5.2"


class LiveDelegations(LiveMcpCalls):
    """Delegation handling of ``LiveSession`` (a mixin; the session provides the rest)."""

    if TYPE_CHECKING:

        @property
        def delegation(self) -> dict:
            """The resolved delegation configuration."""

        def _refuse(
            self, data: dict, message: str, code: str, param: str | None = None
        ) -> None: ...

    def _init_delegations(self) -> None:
        self.delegations: list[LiveDelegation] = []
        self.function_outputs: list[FunctionOutput] = []
        self.backend_items: list[dict] = []
        self._calls: dict[str, LiveDelegation] = {}
        self._sequence = 0
        self._init_mcp()

    # -- public --------------------------------------------------------------------

    @property
    def unanswered_calls(self) -> list[str]:
        """Call ids of function calls the client has not answered yet."""
        answered = {output.call_id for output in self.function_outputs}
        return [call_id for call_id in self._calls if call_id not in answered]

    def delegation_by_id(self, delegation_id: str) -> LiveDelegation | None:
        """Return the delegation with this id, or None."""
        return next((d for d in self.delegations if d.id == delegation_id), None)

    # -- client events ---------------------------------------------------------------

    def _on_response_item_create(self, data: dict) -> None:
        if self.delegation["type"] != "responses":
            self._refuse(
                data, "response.item.create requires Responses delegation.", "invalid_request"
            )
            return
        item = copy.deepcopy(data["item"])
        if item.get("type") != "function_call_output":
            self.backend_items.append(item)
            return
        call_id = item.get("call_id")
        if call_id not in self._calls:
            self._refuse(
                data,
                f"No function call found with call_id '{call_id}'.",
                "invalid_value",
                "item.call_id",
            )
            return
        if call_id not in self.unanswered_calls:
            self._refuse(
                data,
                f"The function call '{call_id}' already has an output.",
                "invalid_value",
                "item.call_id",
            )
            return
        output = item.get("output")
        self.function_outputs.append(
            FunctionOutput(
                call_id=call_id,
                output=output if isinstance(output, str) else json.dumps(output),
                item_id=item.get("id") or new_id("fco"),
                at=self._loop.time(),
            )
        )

    def _on_response_create(self, data: dict) -> None:
        if self.delegation["type"] != "responses":
            self._refuse(data, "response.create requires Responses delegation.", "invalid_request")
            return
        if self.unanswered_calls:
            self._refuse(
                data,
                "Queue an output for every function call first: "
                + ", ".join(self.unanswered_calls),
                "function_call_outputs_required",
            )
            return
        answered = self._mcp_answered()  # an MCP call the client (dis)approved goes on
        if answered is not None:
            self._mcp_resume_turn(answered)
            return
        latest = self.delegations[-1] if self.delegations else None
        if latest is not None and latest.target != "responses":
            latest = None
        self._queue_turn("response.create", delegation_id=latest.id if latest else None)

    # -- the model delegates -----------------------------------------------------------

    def _delegate_turn(self, turn: LiveResponse) -> bool:
        """Do what the turn delegates before it speaks.

        Returns:
            False if its delegated response failed (the turn says nothing).
        """
        reply = turn.reply
        assert reply is not None
        responses = self.delegation["type"] == "responses"
        if reply.mcp_call is not None:
            if responses:
                return self._mcp_delegate(turn)
            self._flag(
                "A scripted MCP call needs Responses delegation (its mcp tools): not called.",
                "not_emulated",
            )
        call = reply.function_call
        if call is not None and not responses:
            delegation = self._new_delegation("client", None, call.name)
            turn.delegation_id = delegation.id
            return True
        if call is not None:
            if not self._tool_declared(call.name):
                return True
            return self._backend_response(turn, call)
        if turn.trigger == "response.create" and responses:
            return self._backend_response(turn, None)
        return True

    def _tool_declared(self, name: str) -> bool:
        tools = (self.delegation.get("responses") or {}).get("tools") or []
        names = [
            t.get("name") for t in tools if isinstance(t, dict) and t.get("type") == "function"
        ]
        if name in names:
            return True
        self._flag(
            f"The scripted function call '{name}' is not a function tool of the session's "
            f"Responses delegation ({', '.join(map(str, names)) or 'none'}): not called.",
            "unknown_tool",
        )
        return False

    def _flag(self, reason: str, code: str) -> None:
        """Record a script the session's configuration cannot play, in ``validation_errors``."""
        logger.warning(f"Live emulator {self.id}: {reason}")
        self._emulator.validation_errors.append(
            ClientEventError(
                event=copy.deepcopy(self.delegation),
                reason=reason,
                code=code,
                param="session.delegation.responses.tools",
                session_id=self.id,
            )
        )

    def _new_delegation(
        self, target: str, response_id: str | None, function: str | None
    ) -> LiveDelegation:
        delegation = LiveDelegation(
            id=new_id("deleg"), target=target, function=function, offset_ms=self._timeline_ms()
        )
        self.delegations.append(delegation)
        body: dict[str, Any] = {"id": delegation.id, "type": "delegation", "target": target}
        if response_id is not None:
            body["response_id"] = response_id
        self._emit(
            {
                "type": "session.delegation.created",
                "delegation": body,
                "offset_ms": delegation.offset_ms,
            }
        )
        return delegation

    def _client_delegation_known(self, delegation_id: str) -> bool:
        delegation = self.delegation_by_id(delegation_id)
        return delegation is not None and delegation.target == "client"

    def _answer_client_delegation(self, delegation_id: str) -> None:
        delegation = self.delegation_by_id(delegation_id)
        if delegation is not None:
            delegation.answered = True

    # -- the Responses backend ---------------------------------------------------------

    def _backend_response(self, turn: LiveResponse, call: FunctionCall | None) -> bool:
        response_id = new_id("resp")
        delegation = self.delegation_by_id(turn.delegation_id) if turn.delegation_id else None
        if delegation is None:
            delegation = self._new_delegation(
                "responses", response_id, call.name if call is not None else None
            )
        delegation.response_ids.append(response_id)
        turn.delegation_id = delegation.id
        turn.response_id = response_id
        send = self._response_event_sender(delegation.id, response_id)
        send("response.created", response=self._snapshot(response_id, "in_progress"))
        failure = self._emulator.live_faults.delegation_failures.take()
        if failure is not None:
            self._fail_response(delegation, response_id, failure, send)
            return False
        if call is not None:
            output_tokens = self._function_call_events(turn, delegation, call, send)
        else:
            output_tokens = self._message_events(turn.reply.text if turn.reply else "", send)
        usage = self._backend_usage(output_tokens)
        send("response.completed", response=self._snapshot(response_id, "completed", usage))
        return True

    def _backend_usage(self, output_tokens: int) -> dict:
        return backend_usage(self._backend_input_text(), output_tokens)

    def _function_call_events(
        self, turn: LiveResponse, delegation: LiveDelegation, call: FunctionCall, send: Any
    ) -> int:
        call_id = call.call_id or new_id("call")
        arguments = json.dumps(call.arguments)
        item: dict[str, Any] = {
            "id": new_id("fc"),
            "type": "function_call",
            "call_id": call_id,
            "name": call.name,
            "arguments": "",
            "status": "in_progress",
        }
        send("response.output_item.added", output_index=0, item=copy.deepcopy(item))
        send(
            "response.function_call_arguments.delta",
            item_id=item["id"],
            output_index=0,
            delta=arguments,
        )
        send(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=0,
            arguments=arguments,
        )
        item.update(arguments=arguments, status="completed")
        send("response.output_item.done", output_index=0, item=item)
        turn.call_id = call_id
        turn.arguments = arguments
        delegation.call_ids.append(call_id)
        self._calls[call_id] = delegation
        logger.debug(f"Live emulator {self.id}: delegated call {call.name} ({call_id})")
        return text_tokens(arguments)

    def _message_events(self, text: str, send: Any, output_index: int = 0) -> int:
        item_id = new_id("msg")
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        part = {"type": "output_text", "text": "", "annotations": []}
        send("response.output_item.added", output_index=output_index, item=copy.deepcopy(item))
        send(
            "response.content_part.added",
            item_id=item_id,
            output_index=output_index,
            content_index=0,
            part=part,
        )
        where = {
            "item_id": item_id,
            "output_index": output_index,
            "content_index": 0,
            "logprobs": [],
        }
        send("response.output_text.delta", delta=text, **where)
        send("response.output_text.done", text=text, **where)
        done_part = {**part, "text": text}
        send(
            "response.content_part.done",
            item_id=item_id,
            output_index=output_index,
            content_index=0,
            part=done_part,
        )
        item.update(status="completed", content=[done_part])
        send("response.output_item.done", output_index=output_index, item=item)
        return text_tokens(text)

    def _fail_response(
        self, delegation: LiveDelegation, response_id: str, failure: DelegationFailure, send: Any
    ) -> None:
        delegation.failed = True
        kind, default = _CODE_ERRORS.get(failure.code, ("server_error", SERVER_ERROR_MESSAGE))
        message = failure.message or default
        error: dict | None = None
        if failure.code in _RESPONSE_ERROR_CODES:
            error = {"code": failure.code, "message": message}
        else:
            self._send_error(message, failure.code, error_type=kind)
        logger.debug(f"Live emulator {self.id}: delegated response {response_id} fails")
        send("response.failed", response=self._snapshot(response_id, "failed", error=error))

    def _response_event_sender(self, delegation_id: str, response_id: str) -> Any:
        def send(event_type: str, **fields: Any) -> None:
            self._sequence += 1
            event = {"type": event_type, "sequence_number": self._sequence, **fields}
            self._emit({"type": "response.event", "delegation_id": delegation_id, "event": event})

        return send

    def _snapshot(
        self, response_id: str, status: str, usage: dict | None = None, error: dict | None = None
    ) -> dict:
        """A lifecycle snapshot of a delegated response (no input, tools or output)."""
        responses = self.delegation.get("responses") or {}
        return {
            "id": response_id,
            "object": "response",
            "created_at": time.time(),
            "status": status,
            "error": error,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "model": responses.get("model") or _BACKEND_MODEL,
            "output": [],
            "parallel_tool_calls": bool(responses.get("parallel_tool_calls", True)),
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }

    def _backend_input_text(self) -> str:
        """What the backend "reads": its instructions and the function outputs so far."""
        responses = self.delegation.get("responses") or {}
        outputs = "".join(output.output for output in self.function_outputs)
        return str(responses.get("instructions") or "") + outputs
