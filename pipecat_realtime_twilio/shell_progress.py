#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What ``simulate --url`` prints as the call goes: one line per thing, timed from the call's start.

:class:`CallProgress` watches a :class:`~pipecat_realtime_twilio.testing.caller.TwilioCaller`
(what its phone played and the marks it echoed, the ``clear`` messages, protocol
errors, the runner closing the stream) and writes a line for each as it happens;
the call's driver writes its own (dialled, connected, keys pressed, hung up) with
:meth:`CallProgress.line`. :func:`record_lines` turns the runner's call record (its
read API's JSON) into the transcript printed at the end.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.testing.caller import TwilioCaller

POLL_SECS = 0.02
"""How often the caller is looked at."""

QUIET_SECS = 0.4
"""Silence after bot audio that ends an utterance ("bot quiet")."""


class CallProgress:
    """Prints a simulated call's progress, as it happens, with times from the call's start.

    Lines look like ``[  1.24 s] greeting heard 312 ms after the stream started``.
    """

    def __init__(
        self, caller: TwilioCaller, write: Callable[[str], None], started_at: float
    ) -> None:
        """Initialize the progress.

        Args:
            caller: The simulated caller.
            write: Called with each line.
            started_at: The call's start (``loop.time()``, when the webhook was dialled).
        """
        self.caller = caller
        self.write = write
        self.started_at = started_at
        self.utterances = 0  # bot utterances heard
        self._ticks = 0
        self._speaking_since: float | None = None
        self._speech_bytes = 0
        self._quiet_since: float | None = None
        self._marks = 0
        self._clears = 0
        self._errors = 0
        self._closed_told = False
        self._task: asyncio.Task | None = None

    def line(self, text: str, at: float | None = None) -> None:
        """Write one line, timed at ``at`` (now by default: first what came before it).

        Args:
            text: What happened.
            at: When (``loop.time()``).
        """
        if at is None:  # the caller does something: what was heard before it comes first
            self.poll()
            if self._speaking_since is not None and self._quiet_since is not None:
                self._end_told(self._quiet_since)
        when = asyncio.get_running_loop().time() if at is None else at
        self.write(f"[{when - self.started_at:7.2f} s] {text}")

    def start(self) -> None:
        """Start watching the caller."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="simulate-progress")

    async def stop(self) -> None:
        """Tell what is left, then stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.poll(final=True)

    async def _run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(POLL_SECS)

    def poll(self, final: bool = False) -> None:
        """Write a line for everything new since the last look.

        Args:
            final: The call is over: an utterance still going is told as ended.
        """
        caller = self.caller
        final = final or caller.stream_ended_at is not None
        self._playback(caller.playback[self._ticks :], final)
        self._ticks = len(caller.playback)
        for at in caller.clears[self._clears :]:
            self.line("clear: the runner emptied the phone's audio (the bot was cut off)", at)
        self._clears = len(caller.clears)
        for at, problem in caller.errors[self._errors :]:
            self.line(f"protocol error from the runner: {problem}", at)
        self._errors = len(caller.errors)
        if caller.stream_ended_at is not None and not self._closed_told:
            self._closed_told = True
            reason = f", {caller.close_reason}" if caller.close_reason else ""
            self.line(
                f"the runner closed the stream (code {caller.close_code}{reason})",
                caller.stream_ended_at,
            )

    def _playback(self, ticks: list[tuple[float, int, int]], final: bool) -> None:
        """Tell when the bot starts and stops being heard."""
        for at, played, _ in ticks:
            if played:
                self._quiet_since = None
                if self._speaking_since is None:
                    self._speaking_since = at
                    self._speech_bytes = 0
                    self._start_told(at)
                self._speech_bytes += played
            elif self._speaking_since is not None:
                self._quiet_since = self._quiet_since or at
                if at - self._quiet_since >= QUIET_SECS:
                    self._end_told(self._quiet_since)
        if final and self._speaking_since is not None:
            self._end_told(self._quiet_since or (ticks[-1][0] if ticks else self._speaking_since))

    def _start_told(self, at: float) -> None:
        self.utterances += 1
        if self.utterances == 1 and self.caller.started_at is not None:
            ms = (at - self.caller.started_at) * 1000
            self.line(f"greeting heard {ms:.0f} ms after the stream started", at)
        else:
            self.line("bot speaking", at)

    def _end_told(self, at: float) -> None:
        echoed = len(self.caller.marks_echoed)
        marks = f", {echoed - self._marks} marks played back" if echoed > self._marks else ""
        self._marks = echoed
        seconds = self._speech_bytes / BYTES_PER_MS / 1000
        self.line(f"bot quiet after {seconds:.1f} s of audio{marks}", at)
        self._speaking_since = None
        self._quiet_since = None


def record_lines(record: dict[str, Any]) -> list[str]:
    """The call's record, as ``simulate --url`` prints it at the end.

    Args:
        record: The record as the read API answers it (``CallRecord.to_dict()``).

    Returns:
        A heading, then the transcript, keys, tool calls and transfers in time order.
    """
    started = float(record.get("started_at") or 0.0)
    duration = record.get("duration_s")
    took = f" after {float(duration):.1f} s" if isinstance(duration, int | float) else ""
    lines = [
        f"Record of call {record.get('call_sid')} (bot '{record.get('bot')}'): "
        f"ended: {record.get('end_reason')}{took}"
    ]
    events: list[tuple[float, str, str]] = []
    for turn in record.get("transcript") or []:
        text = turn.get("text") or ""
        if turn.get("interrupted"):
            text += " (cut off)"
        events.append((float(turn.get("at") or started), str(turn.get("role")), text))
    for group in record.get("keypad") or []:
        events.append((float(group.get("at") or started), "keys", str(group.get("digits"))))
    for call in record.get("tool_calls") or []:
        outcome = call.get("error") or call.get("result") or ""
        text = f"{call.get('name')} {call.get('arguments') or '{}'}" + (
            f" -> {outcome}" if outcome else ""
        )
        events.append((float(call.get("at") or started), "tool", text))
    for transfer in record.get("transfers") or []:
        text = f"{transfer.get('kind')} to {transfer.get('target')}"
        events.append((float(transfer.get("at") or started), "transfer", text))
    for at, who, text in sorted(events, key=lambda event: event[0]):
        lines.append(f"  [{at - started:5.1f} s] {who:>8}: {text}")
    if not events:
        lines.append("  (nothing said)")
    return lines
