#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The output side of a session: model responses, played from the script.

A response plays one ``Reply`` with the GA event sequence: ``response.created``,
the output item, its content part, audio deltas paced at ``send_rate`` times real
time with the transcript slightly ahead (or text deltas, or function call
arguments), then the ``.done`` events, ``response.done`` with deterministic usage
and ``rate_limits.updated``. Cancelling (barge-in, ``response.cancel``) closes
whatever is open and ends with ``response.done`` status ``cancelled``. Injected
faults (``session_faults``) may stall a response before its first event, fail it
(``response.created`` then ``response.done`` ``failed``) or cut it short
(``incomplete``, after half its reply).
"""

import asyncio
import base64
import copy
import inspect
import json
import math
import re
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, Any

from loguru import logger

from .audio import (
    PCM_RATE,
    audio_duration_ms,
    bytes_per_ms,
    encode_ulaw_as,
    format_type,
    synthesize_speech,
)
from .config import output_audio
from .faults import ResponseFault, half_reply
from .mcp_calls import McpCalls
from .records import AudioDelta, EmulatedResponse, ItemMeta, Reply, ServerEvent, new_id
from .usage import conversation_input_tokens, response_usage


def _split_words(text: str) -> list[str]:
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


def _rate_limits_event(total_tokens: int) -> dict:
    return {
        "type": "rate_limits.updated",
        "rate_limits": [
            {
                "name": "requests",
                "limit": 5000,
                "remaining": 4999,
                "reset_seconds": 0.012,
            },
            {
                "name": "tokens",
                "limit": 2_000_000,
                "remaining": 2_000_000 - total_tokens,
                "reset_seconds": 0.1,
            },
        ],
    }


class Responses(McpCalls):
    """Response generation of ``EmulatedSession`` (a mixin; the session provides the rest).

    It owns the response state (``_init_responses``) and handles ``response.create``
    and ``response.cancel``. From the session it uses the configuration, the
    conversation items and event sending.
    """

    if TYPE_CHECKING:
        # What this mixin uses of ``EmulatedSession`` beyond ``SessionParts``, for the
        # type checker only.
        responses: list[EmulatedResponse]
        _loop: asyncio.AbstractEventLoop
        _conversation_id: str
        _calls: dict[str, str]

        def _take_response_faults(self, response: EmulatedResponse) -> None: ...

        async def _stall(self, response: EmulatedResponse) -> None: ...

        def _response_fault(self, response: EmulatedResponse) -> ResponseFault | None: ...

        def _fail(self, response: EmulatedResponse, fault: ResponseFault) -> None: ...

    def _init_responses(self) -> None:
        self._active: EmulatedResponse | None = None  # the default-conversation response
        self._running: dict[str, EmulatedResponse] = {}
        self._response_tasks: dict[str, asyncio.Task] = {}
        self._response_stage: dict[str, set[str]] = {}
        self._response_input: dict[str, tuple[int, int]] = {}
        self._response_items: dict[str, list[dict]] = {}  # response id -> its output items
        self._audio_out_started = False
        self._init_mcp()

    # -- client events ---------------------------------------------------------------

    def _on_response_create(self, data: dict, model: Any) -> None:
        params = data.get("response") or {}
        conversation = params.get("conversation") or "auto"
        if conversation != "none" and self._active is not None:
            self._send_error(
                "Conversation already has an active response in progress: "
                f"{self._active.id}. Wait until the response is finished "
                "before creating a new one.",
                "conversation_already_has_active_response",
                event_id=self._event_id(data),
            )
            return
        self._start_response("response.create", params)

    def _on_response_cancel(self, data: dict, model: Any) -> None:
        response_id = data.get("response_id")
        target = self._running.get(response_id) if response_id else self._active
        if target is None:
            self._send_error(
                "Cancellation failed: no active response found",
                "response_cancel_not_active",
                event_id=self._event_id(data),
            )
            return
        self._cancel_response(target, "client_cancelled")

    # -- starting, cancelling ------------------------------------------------------------

    def _start_response(self, trigger: str, params: dict) -> EmulatedResponse:
        conversation = "none" if params.get("conversation") == "none" else "auto"
        output_format = format_type(
            output_audio(params).get("format") or self.config["audio"]["output"]["format"]
        )
        modalities = params.get("output_modalities") or self.config.get("output_modalities")
        instructions = params.get("instructions")
        if instructions is None:
            instructions = self.config.get("instructions") or ""
        response = EmulatedResponse(
            id=new_id("resp"),
            trigger=trigger,
            conversation=conversation,
            output_format=output_format,
            instructions=instructions,
            params=copy.deepcopy(params),
            kind="text" if modalities == ["text"] else "audio",
            triggered_at=self._loop.time(),
        )
        self.responses.append(response)
        self._running[response.id] = response
        self._response_stage[response.id] = set()
        if conversation == "auto":
            self._active = response
        # Snapshot what the model "sees" for input token usage.
        context = params.get("input")
        if context is None:
            context = self.items
        self._response_input[response.id] = conversation_input_tokens(
            instructions, context, self._item_meta
        )
        self._take_response_faults(response)
        # The mixin only ever runs as part of an ``EmulatedSession``.
        reply = self._mcp_resumed_reply(response) or self._emulator._next_reply(self, trigger)
        logger.debug(f"Realtime emulator {self.id}: response {response.id} ({trigger})")
        task = asyncio.ensure_future(self._run_response(response, reply))
        task.set_name(f"emulator-{response.id}")
        self._response_tasks[response.id] = task
        task.add_done_callback(partial(self._response_task_done, response.id))
        return response

    def _response_task_done(self, response_id: str, task: asyncio.Task) -> None:
        self._response_tasks.pop(response_id, None)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(
                f"Realtime emulator response {response_id} failed"
            )

    def _cancel_response(self, response: EmulatedResponse, reason: str) -> None:
        if not response.active:
            return
        task = self._response_tasks.get(response.id)
        self._finish(response, "cancelled", reason)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _abandon_responses(self) -> list[asyncio.Task]:
        """Mark the running responses cancelled by the disconnect; return their tasks."""
        for response in list(self._running.values()):
            response.status = "cancelled"
            response.status_reason = "disconnected"
            response.done_at = self._loop.time()
        self._active = None
        self._running.clear()
        tasks = list(self._response_tasks.values())
        self._response_tasks.clear()
        return tasks

    # -- playing --------------------------------------------------------------------------

    async def _run_response(
        self, response: EmulatedResponse, reply: "Reply | Awaitable[Reply | None] | None"
    ) -> None:
        if inspect.isawaitable(reply):
            reply = await reply
        if reply is None:
            reply = self._emulator.default_reply
        response.reply = reply
        if reply.function_call is not None and not reply.text and reply.audio is None:
            response.kind = "function_call"
        await self._stall(response)
        delay = reply.ttfb_ms if reply.ttfb_ms is not None else self._emulator.ttfb_ms
        if delay and delay > 0:
            await asyncio.sleep(delay / 1000)
        if not response.active:
            return
        fault = self._response_fault(response)
        if fault is not None and fault.status == "failed":
            self._fail(response, fault)
            return
        if fault is not None:
            reply = half_reply(reply, response.kind)
        self._emit_created(response)
        if reply.mcp_call is not None:  # the call first (mcp_calls), then the words after it
            after = await self._play_mcp(response, reply)
            if after is None:
                return
            reply = after
        if response.kind == "function_call":
            if fault is None:
                self._play_function_call(response, reply)
        else:
            if response.kind == "text":
                await self._play_text(response, reply)
            else:
                await self._play_audio(response, reply)
            if reply.function_call is not None and response.active:
                # Speak, then call: a second output item in the same response.
                self._close_item(response, "completed")
                self._play_function_call(response, reply)
        if response.active:
            if fault is not None:
                self._finish(response, "incomplete", fault.code)
            else:
                self._finish(response, "completed", None)

    def _emit_created(self, response: EmulatedResponse) -> None:
        stage = self._response_stage[response.id]
        if "created" in stage:
            return
        stage.add("created")
        response.created_at = self._loop.time()
        self._emit({"type": "response.created", "response": self._response_object(response, [])})

    def _add_output_item(self, response: EmulatedResponse, item: dict) -> None:
        self._response_stage[response.id].add("item")
        self._response_items.setdefault(response.id, []).append(item)
        self._emit_output_item(response, "response.output_item.added", item)
        if response.conversation == "auto":
            previous = self._id_before(len(self.items))
            self.items.append(item)
            self._emit_item("conversation.item.added", item, previous)
        self._item_meta[item["id"]] = ItemMeta(
            audio_format=response.output_format if response.kind == "audio" else None
        )

    def _begin_message(self, response: EmulatedResponse) -> dict:
        response.item_id = new_id("item")
        item: dict[str, Any] = {
            "id": response.item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self._add_output_item(response, item)
        if response.kind == "audio":
            part = {"type": "audio", "transcript": ""}
            item["content"] = [{"type": "output_audio", "transcript": ""}]
        else:
            part = {"type": "text", "text": ""}
            item["content"] = [{"type": "output_text", "text": ""}]
        self._response_stage[response.id].add("part")
        self._content_event(response, "response.content_part.added", part=part)
        return item

    async def _play_audio(self, response: EmulatedResponse, reply: Reply) -> None:
        ulaw = (
            reply.audio
            if reply.audio is not None
            else synthesize_speech(reply.text, reply.duration_ms)
        )
        fmt = response.output_format
        audio = encode_ulaw_as(ulaw, fmt)
        item = self._begin_message(response)
        assert response.item_id is not None  # set by _begin_message
        meta = self._item_meta[response.item_id]
        self._audio_out_started = True
        chunk_ms = max(1, int(self._emulator.audio_chunk_ms))
        chunk_bytes = chunk_ms * bytes_per_ms(fmt)
        chunks = [audio[i : i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)]
        words = _split_words(reply.text)
        if not chunks and words:
            self._send_transcript(response, item, "".join(words))
        next_at = self._loop.time()
        for index, chunk in enumerate(chunks):
            # Ceiling division: the transcript runs slightly ahead of the audio, as it does live.
            lo = -(-index * len(words) // len(chunks))
            hi = -(-(index + 1) * len(words) // len(chunks))
            if hi > lo:
                self._send_transcript(response, item, "".join(words[lo:hi]))
            record = self._content_event(
                response, "response.output_audio.delta", delta=base64.b64encode(chunk).decode()
            )
            if response.first_audio_at is None:
                response.first_audio_at = record.queued_at
            response.audio += chunk
            response.deltas.append(AudioDelta(data=bytes(chunk), event=record))
            meta.audio += chunk
            meta.audio_ms = audio_duration_ms(len(meta.audio), fmt)
            rate = self._emulator.send_rate
            if rate and rate > 0 and not math.isinf(rate):
                next_at += audio_duration_ms(len(chunk), fmt) / 1000 / rate
                await asyncio.sleep(max(0.0, next_at - self._loop.time()))
            else:
                await asyncio.sleep(0)
            if not response.active:
                return
        meta.full_transcript = reply.text

    def _send_transcript(self, response: EmulatedResponse, item: dict, delta: str) -> None:
        response.transcript += delta
        item["content"][0]["transcript"] = response.transcript
        self._content_event(response, "response.output_audio_transcript.delta", delta=delta)

    async def _play_text(self, response: EmulatedResponse, reply: Reply) -> None:
        item = self._begin_message(response)
        for word in _split_words(reply.text):
            response.transcript += word
            item["content"][0]["text"] = response.transcript
            self._content_event(response, "response.output_text.delta", delta=word)
            await asyncio.sleep(0)
            if not response.active:
                return

    def _play_function_call(self, response: EmulatedResponse, reply: Reply) -> None:
        call = reply.function_call
        assert call is not None
        response.item_id = new_id("item")
        response.call_id = call.call_id or new_id("call")
        arguments = json.dumps(call.arguments)
        item = {
            "id": response.item_id,
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "call_id": response.call_id,
            "name": call.name,
            "arguments": "",
        }
        self._add_output_item(response, item)
        self._calls[response.call_id] = response.item_id
        common = {
            "response_id": response.id,
            "item_id": response.item_id,
            "output_index": self._output_index(response, item),
            "call_id": response.call_id,
        }
        self._emit({"type": "response.function_call_arguments.delta", **common, "delta": arguments})
        response.arguments = arguments
        item["arguments"] = arguments
        self._emit(
            {
                "type": "response.function_call_arguments.done",
                **common,
                "arguments": arguments,
                "name": call.name,
            }
        )
        logger.debug(f"Realtime emulator {self.id}: function call {call.name}({arguments})")

    # -- finishing ------------------------------------------------------------------------

    def _finish(self, response: EmulatedResponse, status: str, reason: str | None) -> None:
        """Close the response's open parts, then send ``response.done``."""
        response.status = status
        response.status_reason = reason
        self._emit_created(response)
        self._close_item(response, "completed" if status == "completed" else "incomplete")
        output = [copy.deepcopy(item) for item in self._response_items.get(response.id, [])]
        response.usage = response_usage(response, *self._response_input.get(response.id, (0, 0)))
        response.done_at = self._loop.time()
        self._running.pop(response.id, None)
        if self._active is response:
            self._active = None
        self._emit({"type": "response.done", "response": self._response_object(response, output)})
        logger.debug(
            f"Realtime emulator {self.id}: response {response.id} {status}"
            + (f" ({reason})" if reason else "")
        )
        if self._emulator.send_rate_limits:
            self._emit(_rate_limits_event(response.usage["total_tokens"]))

    def _close_item(self, response: EmulatedResponse, status: str) -> None:
        """Finish the response's current output item, if it is still open."""
        items = self._response_items.get(response.id)
        stage = self._response_stage.get(response.id, set())
        if not items or items[-1].get("status") != "in_progress":  # MCP items have none
            return
        item = items[-1]
        if "part" in stage:
            stage.discard("part")
            self._finish_part(response)
        item["status"] = status
        self._emit_output_item(response, "response.output_item.done", item)
        index = next((i for i, it in enumerate(self.items) if it is item), None)
        if index is not None:
            self._emit_item("conversation.item.done", item, self._id_before(index))

    def _output_index(self, response: EmulatedResponse, item: dict) -> int:
        items = self._response_items.get(response.id, [])
        return next((i for i, it in enumerate(items) if it is item), 0)

    def _finish_part(self, response: EmulatedResponse) -> None:
        if response.kind == "audio":
            self._content_event(response, "response.output_audio.done")
            self._content_event(
                response, "response.output_audio_transcript.done", transcript=response.transcript
            )
            part = {"type": "audio", "transcript": response.transcript}
        else:
            self._content_event(response, "response.output_text.done", text=response.transcript)
            part = {"type": "text", "text": response.transcript}
        self._content_event(response, "response.content_part.done", part=part)

    # -- event shapes ---------------------------------------------------------------------

    def _emit_output_item(self, response: EmulatedResponse, event_type: str, item: dict) -> None:
        self._emit(
            {
                "type": event_type,
                "response_id": response.id,
                "output_index": self._output_index(response, item),
                "item": copy.deepcopy(item),
            }
        )

    def _content_event(
        self, response: EmulatedResponse, event_type: str, **fields: Any
    ) -> ServerEvent:
        return self._emit(
            {
                "type": event_type,
                "response_id": response.id,
                "item_id": response.item_id,
                "output_index": 0,
                "content_index": 0,
                **fields,
            }
        )

    def _response_object(self, response: EmulatedResponse, output: list[dict]) -> dict:
        status_details: dict | None = None
        if response.status in ("cancelled", "incomplete"):
            status_details = {"type": response.status, "reason": response.status_reason}
        elif response.status == "failed":
            status_details = {"type": "failed", "error": response.error}
        voice = self.config["audio"]["output"].get("voice")
        voice = output_audio(response.params).get("voice", voice)
        fmt: dict[str, str | int] = {"type": response.output_format}
        if response.output_format == "audio/pcm":
            fmt["rate"] = PCM_RATE
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": response.status,
            "status_details": status_details,
            "output": output,
            "conversation_id": self._conversation_id if response.conversation == "auto" else None,
            "output_modalities": ["text"] if response.kind == "text" else ["audio"],
            "max_output_tokens": response.params.get(
                "max_output_tokens", self.config.get("max_output_tokens", "inf")
            ),
            "audio": {
                "output": {"format": fmt, "voice": voice if isinstance(voice, str) else None}
            },
            "usage": response.usage,
            "metadata": response.params.get("metadata"),
        }
