#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What happened on a call, as events with their times: tools, keys, barge-ins, latency.

The agent keeps one :class:`CallEvents` per call (``agent.call_events``) and appends a
small entry per event, never anything per audio packet:

- :class:`ToolCall`: each tool the model called, from Pipecat's function-call frames
  (:meth:`CallEvents.tool_frame`), with its result or error and how long it ran; a
  tool can mark its own failure (:meth:`CallEvents.tool_failed`);
- :class:`KeypadGroup`: each group of keys sent to the model;
- :class:`BargeIn`: each time the caller cut the bot off, and how much of the answer
  they had heard;
- :class:`TurnLatency`: per answer, when the caller stopped speaking and how long
  until the first audio of the answer was heard.

:meth:`CallEvents.as_dict` gives all four as the call record keeps them
(:class:`~pipecat_realtime_twilio.runner.records.CallRecord`: ``tool_calls``,
``keypad``, ``barge_ins``, ``turn_latencies``), each entry the dict of its fields.
Times are Unix timestamps, like the transcript's ``at``. Each kind keeps at most a
bounded number of entries (a caller pressing keys for an hour does not grow the
record without end): the rest are counted, and logged once.
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
)

TOOL_TEXT_MAX_CHARS = 2000
"""Longest tool arguments or result kept on the record; longer text is cut and marked."""

TOOL_CALLS_KEPT = 200
"""Most tool calls kept per call."""

EVENTS_KEPT = 1000
"""Most keypad groups, barge-ins and turn latencies kept per call (each)."""

TOOL_FRAMES = (FunctionCallInProgressFrame, FunctionCallResultFrame, FunctionCallCancelFrame)
"""The frames :meth:`CallEvents.tool_frame` reads."""

UNFINISHED = "the call ended before the tool finished"
"""The error of a tool call still running when the record was made."""

CANCELLED = "cancelled"
"""The error of a tool call Pipecat cancelled (its deadline, or an interruption)."""


@dataclass(frozen=True)
class ToolCall:
    """A tool the model called.

    Parameters:
        name: The tool's name.
        call_id: The Realtime ``call_id`` of the call.
        arguments: The model's arguments, as JSON text (cut at
            :data:`TOOL_TEXT_MAX_CHARS`).
        at: When it started, as a Unix timestamp.
        result: What went back to the model, as text (cut like ``arguments``);
            None when it failed or has not finished.
        error: Why it failed (it raised, timed out, was cancelled, or did not
            finish); None when it returned.
        duration_ms: How long it ran.
    """

    name: str
    call_id: str
    arguments: str
    at: float
    result: str | None = None
    error: str | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True)
class KeypadGroup:
    """A group of keys the caller pressed, as it went to the model.

    Parameters:
        digits: The keys, e.g. ``"1234#"``.
        at: When the group went to the model, as a Unix timestamp.
    """

    digits: str
    at: float


@dataclass(frozen=True)
class BargeIn:
    """The caller cut the bot off.

    Parameters:
        at: When, as a Unix timestamp.
        heard_ms: How much of the cut answer the caller had heard, in ms.
        item_id: The assistant item that was cut (the first, if several were).
    """

    at: float
    heard_ms: float
    item_id: str | None


@dataclass(frozen=True)
class TurnLatency:
    """How long the caller waited for an answer.

    Parameters:
        at: When the caller stopped speaking, as a Unix timestamp.
        response_ms: From then until the first audio of the answer was heard, in ms.
    """

    at: float
    response_ms: float


@dataclass
class _Running:
    call: ToolCall
    started: float  # monotonic
    error: str | None = None  # the tool said it failed, before its result


class CallEvents:
    """The events of one call, in order per kind, each with its time."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """Initialize an empty log.

        Args:
            clock: Unix time in seconds (for tests).
            monotonic: Monotonic seconds, for durations (for tests).
        """
        self._clock = clock
        self._monotonic = monotonic
        self._tool_calls: list[ToolCall] = []
        self._running: dict[str, _Running] = {}
        self.keypad: list[KeypadGroup] = []
        self.barge_ins: list[BargeIn] = []
        self.turn_latencies: list[TurnLatency] = []
        self.dropped: dict[str, int] = {}
        """Entries not kept, by kind (past :data:`TOOL_CALLS_KEPT` or :data:`EVENTS_KEPT`)."""

    #
    # tools
    #

    def tool_frame(self, frame: Any) -> None:
        """Note a function-call frame the agent pushed downstream (see :data:`TOOL_FRAMES`).

        ``FunctionCallInProgressFrame`` starts a call; a final ``FunctionCallResultFrame``
        finishes it with its result (or Pipecat's ``error``, when the handler raised);
        ``FunctionCallCancelFrame`` finishes it as cancelled. Other frames are ignored.

        Args:
            frame: The frame.
        """
        if isinstance(frame, FunctionCallInProgressFrame):
            self.tool_started(frame.tool_call_id, frame.function_name, frame.arguments)
        elif isinstance(frame, FunctionCallResultFrame):
            if frame.properties is not None and not frame.properties.is_final:
                return  # a progress report: the call goes on
            if frame.error:
                self.tool_finished(frame.tool_call_id, error=frame.error)
            else:
                self.tool_finished(frame.tool_call_id, result=frame.result)
        elif isinstance(frame, FunctionCallCancelFrame):
            self.tool_finished(frame.tool_call_id, error=CANCELLED)

    def tool_started(self, call_id: str, name: str, arguments: Any) -> None:
        """A tool call started.

        Args:
            call_id: The call's id.
            name: The tool.
            arguments: The model's arguments (made JSON text).
        """
        call = ToolCall(name=name, call_id=call_id, arguments=_text(arguments), at=self._clock())
        self._running[call_id] = _Running(call, self._monotonic())

    def tool_failed(self, call_id: str, error: str) -> None:
        """A tool says it failed: its entry gets ``error`` (and no result).

        Works before its result went back (then the result is not kept) and after
        (a call-control tool that answered first, then could not act).

        Args:
            call_id: The call's id.
            error: What went wrong.
        """
        running = self._running.get(call_id)
        if running is not None:
            running.error = error
            return
        for index in range(len(self._tool_calls) - 1, -1, -1):
            if self._tool_calls[index].call_id == call_id:
                self._tool_calls[index] = replace(self._tool_calls[index], result=None, error=error)
                return

    def tool_finished(self, call_id: str, *, result: Any = None, error: str | None = None) -> None:
        """A tool call finished (a call not started here is ignored).

        Args:
            call_id: The call's id.
            result: What went back to the model (made text); ignored with an error.
            error: Why it failed, if it did.
        """
        running = self._running.pop(call_id, None)
        if running is None:
            return
        error = running.error or error
        call = replace(
            running.call,
            result=None if error else _text(result),
            error=error,
            duration_ms=(self._monotonic() - running.started) * 1000,
        )
        if self._keep("tool_calls", len(self._tool_calls), TOOL_CALLS_KEPT):
            self._tool_calls.append(call)

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls in the order they started; those still running as unfinished."""
        now = self._monotonic()
        running = [
            replace(r.call, error=r.error or UNFINISHED, duration_ms=(now - r.started) * 1000)
            for r in self._running.values()
        ]
        return sorted([*self._tool_calls, *running], key=lambda call: call.at)

    #
    # keys, barge-ins, latency
    #

    def keypad_sent(self, digits: str) -> None:
        """A group of keys went to the model.

        Args:
            digits: The keys.
        """
        if self._keep("keypad", len(self.keypad), EVENTS_KEPT):
            self.keypad.append(KeypadGroup(digits, self._clock()))

    def barge_in(self, heard_ms: float, item_id: str | None) -> None:
        """The caller cut the bot off.

        Args:
            heard_ms: What they had heard of the cut answer, in ms.
            item_id: The item cut.
        """
        if self._keep("barge_ins", len(self.barge_ins), EVENTS_KEPT):
            self.barge_ins.append(BargeIn(self._clock(), heard_ms, item_id))

    def turn_latency(self, sample: TurnLatency) -> None:
        """An answer was heard, ``sample.response_ms`` after the caller stopped speaking.

        Args:
            sample: The sample.
        """
        if self._keep("turn_latencies", len(self.turn_latencies), EVENTS_KEPT):
            self.turn_latencies.append(sample)

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        """The events as records keep them, by record field, each a list of dicts in order.

        Returns:
            ``{"tool_calls": [...], "keypad": [...], "barge_ins": [...],
            "turn_latencies": [...]}``.
        """
        return {
            "tool_calls": [asdict(call) for call in self.tool_calls],
            "keypad": [asdict(group) for group in self.keypad],
            "barge_ins": [asdict(cut) for cut in self.barge_ins],
            "turn_latencies": [asdict(sample) for sample in self.turn_latencies],
        }

    def _keep(self, kind: str, count: int, limit: int) -> bool:
        if count < limit:
            return True
        dropped = self.dropped.get(kind, 0)
        if dropped == 0:  # once per call and kind: the next ones are no news
            logger.warning(f"Call events: {limit} {kind} kept; the next ones are only counted")
        self.dropped[kind] = dropped + 1
        return False


def _text(value: Any) -> str:
    """``value`` as text for the record: a string as it is, anything else as JSON; cut if long."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # a circular structure, a bad key
            text = str(value)
    return cut_text(text)


def cut_text(text: str, limit: int = TOOL_TEXT_MAX_CHARS) -> str:
    """``text``, or its first ``limit`` characters and a mark saying how long it was.

    Args:
        text: The text.
        limit: Most characters kept.

    Returns:
        The text, at most ``limit`` characters and the mark.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text)} characters]"
