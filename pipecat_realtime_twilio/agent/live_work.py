#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A GPT-Live call's delegated work: the Responses backend's runs, followed to their end.

GPT-Live delegates reasoning and tools to a Responses model (``delegation: {type:
responses}``); the backend's stream comes back as ``response.event`` envelopes.
Pipecat's service runs the function calls in them and answers with
``response.item.create`` (``function_call_output``) and ``response.create``.
:class:`LiveDelegations` follows each delegation from ``session.delegation.created``
to its last response's end, so the agent knows the backend is at work (the bot is
"responding": a goodbye is not over while the backend still works, and a silent
model is not nudged meanwhile), adds the backend's tokens to the call's usage, and
handles a failed response: an apology the first time, the fallback when it fails
again or for good (``insufficient_quota`` and the other fatal codes). A tool that
finishes after its session was lost (a reconnect while it ran: the new session has
no such call) has its result told to the model as commentary, unless it asked for no
answer, so the caller is not left waiting in silence.
"""

import json
import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import FunctionCallResultFrame
from pipecat.services.openai.live import events

from pipecat_realtime_twilio.agent.live_turns import LiveConversation
from pipecat_realtime_twilio.agent.live_usage import add_backend_usage
from pipecat_realtime_twilio.agent.session_keeper import FATAL_ERROR_CODES
from pipecat_realtime_twilio.failures import Failure

_MAX_LOST_RESULT_CHARS = 1200  # commentary takes at most 500 tokens


class LiveDelegations(LiveConversation):
    """Delegated work of a GPT-Live call: followed, counted, and its failures handled."""

    def __init__(self, **kwargs):
        """Initialize.

        Args:
            **kwargs: :class:`~pipecat_realtime_twilio.agent.live_turns.LiveConversation`
                arguments.
        """
        super().__init__(**kwargs)
        self._lost_calls: set[str] = set()  # function calls whose session was lost

    async def _handle_evt_delegation_created(self, evt: events.SessionDelegationCreatedEvent):
        if evt.delegation.target == "responses":
            self._work_started(evt.delegation.id)
        await super()._handle_evt_delegation_created(evt)

    async def _handle_evt_response(self, evt: events.ResponseEventEnvelope):
        if evt.inner_type == "response.created":
            self._work_started(evt.delegation_id or "uncorrelated")
        await super()._handle_evt_response(evt)

    async def _handle_response_finished(self, evt: events.ResponseEventEnvelope):
        response = evt.event.get("response") or {}
        key = evt.delegation_id or "uncorrelated"
        if evt.inner_type == "response.completed":
            self._failed_in_a_row = 0
            add_backend_usage(self.usage, response.get("usage"))
        elif evt.inner_type == "response.incomplete":
            details = response.get("incomplete_details") or {}
            logger.warning(f"{self} delegated response incomplete ({details}); the call goes on")
        pending = self._pending_responses.get(key)
        if pending is not None:
            pending.finished = True
            await self._maybe_continue_response(key)
            if key in self._pending_responses and not pending.had_calls:
                del self._pending_responses[key]  # nothing to answer: not kept for a later run
        if key not in self._pending_responses:
            self._work_done(key)
        if evt.inner_type == "response.failed":
            await self._delegated_response_failed(response)

    async def _maybe_continue_response(self, key: str):
        before = key in self._pending_responses
        await super()._maybe_continue_response(key)
        if before and key not in self._pending_responses:  # response.create went: more work
            self._work_started(key)

    def _work_started(self, key: str) -> None:
        self._work.add(key)
        self._last_activity = time.monotonic()
        self._first_speech.disarm()  # the backend works; the model speaks when it is done

    def _work_done(self, key: str) -> None:
        if key not in self._work:
            return
        self._work.discard(key)
        self._last_activity = time.monotonic()
        if not self._work and self._speech.last_speech_at < self._caller_words_at:
            self._expect_speech(self._response_stage(), nudge=True)  # the answer is owed now

    def _forget_session(self) -> None:
        lost = set(self._open_function_calls)  # their session is gone: no output can follow
        super()._forget_session()
        self._lost_calls |= lost

    async def _handle_function_call_result(self, frame: FunctionCallResultFrame):
        if frame.tool_call_id not in self._lost_calls:
            await super()._handle_function_call_result(frame)
            return
        self._lost_calls.discard(frame.tool_call_id)
        if frame.properties is not None and frame.properties.run_llm is False:
            return  # nothing to say about it (the call ends, or the tool spoke itself)
        result = json.dumps(frame.result, ensure_ascii=False)[:_MAX_LOST_RESULT_CHARS]
        logger.warning(f"{self} {frame.function_name} finished after its session was lost")
        await self._commentary(
            f"The result of {frame.function_name}, which was called before the connection "
            f"was renewed: {result}. Tell the caller what it means for them."
        )
        self._expect_speech(self._response_stage(), nudge=True)

    async def _delegated_response_failed(self, response: dict[str, Any]) -> None:
        error = response.get("error")
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or error.get("type") or "failed")
        self._failed_in_a_row += 1
        if code in FATAL_ERROR_CODES or self._failed_in_a_row > 1:
            await self._fatal(Failure(self._response_stage(), code, str(error.get("message"))))
            return
        logger.warning(f"{self} a delegated response failed ({code}); apologizing")
        await self.say(self._error_line)
