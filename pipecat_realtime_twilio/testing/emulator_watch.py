#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A running emulator's sessions, told as they go: one line per thing that happens.

:class:`EmulatorWatch` looks at a running
:class:`~pipecat_realtime_twilio.testing.emulator.RealtimeEmulator` every few
milliseconds and writes a line for each session that connects or closes, each
caller turn (keys pressed, words transcribed), each response the model gave (what
it said, or the tool it called, and how the response ended), each tool result the
client sent back and each client event the emulator refused. It reads what the
emulator records and changes nothing. ``pipecat-realtime-twilio emulator`` uses it.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat_realtime_twilio.testing.replies_file import latest_caller_input

POLL_SECS = 0.02
"""How often the watch looks at the emulator."""

_TEXT_CHARS = 160  # longest text quoted in a line


def quoted(text: str, limit: int = _TEXT_CHARS) -> str:
    """``text`` on one line, in double quotes, cut at ``limit`` characters."""
    flat = " ".join(str(text).split())
    return json.dumps(flat if len(flat) <= limit else flat[: limit - 1] + "…", ensure_ascii=False)


@dataclass
class _Seen:
    """What has been told of one session."""

    items: set[str] = field(default_factory=set)
    responses: int = 0  # responses told (they are told once finished, in order)
    outputs: int = 0
    closed: bool = False


class EmulatorWatch:
    """Tells what happens in an emulator's sessions, one line at a time.

    Example::

        watch = EmulatorWatch(emulator, print)
        watch.start()
        ...
        await watch.stop()  # tells what is left, then stops
    """

    def __init__(
        self,
        emulator: Any,
        write: Callable[[str], None],
        on_session: Callable[[Any], None] | None = None,
    ):
        """Initialize the watch.

        Args:
            emulator: The emulator (its ``sessions``: a GPT-Live one is told as far as it
                has what a Realtime one has).
            write: Called with each line.
            on_session: Called with each new session, when it is first seen.
        """
        self.emulator = emulator
        self.write = write
        self.on_session = on_session
        self._seen: dict[int, _Seen] = {}
        self._errors_told = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start watching."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="emulator-watch")

    async def stop(self) -> None:
        """Tell what is left, then stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.poll()

    async def _run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(POLL_SECS)

    def sessions(self) -> list[Any]:
        """Every session of the emulator, Realtime and GPT-Live."""
        return list(getattr(self.emulator, "sessions", []))

    def poll(self) -> None:
        """Write a line for everything that happened since the last poll."""
        for session in self.sessions():
            seen = self._seen.get(id(session))
            if seen is None:
                seen = self._seen[id(session)] = _Seen()
                model = getattr(session, "model", None) or "?"
                self._say(session, f"connected (model {model})")
                if self.on_session is not None:
                    self.on_session(session)
            self._caller_turns(session, seen)
            self._responses(session, seen)
            self._tool_outputs(session, seen)
            if not seen.closed and getattr(session, "closed_at", None) is not None:
                seen.closed = True
                self._say(session, "closed")
        errors = list(getattr(self.emulator, "validation_errors", []))
        for error in errors[self._errors_told :]:
            where = getattr(error, "session_id", None) or "?"
            self.write(f"{where} refused a client event: {getattr(error, 'reason', error)}")
        self._errors_told = len(errors)

    def _say(self, session: Any, text: str) -> None:
        self.write(f"{getattr(session, 'id', '?')} {text}")

    def _caller_turns(self, session: Any, seen: _Seen) -> None:
        for item in list(getattr(session, "items", [])):
            item_id = str(item.get("id"))
            if item.get("role") != "user" or item_id in seen.items:
                continue
            parts = item.get("content") or []
            audio = any(part.get("type") == "input_audio" for part in parts)
            transcribing = _transcribes(session)
            if audio and transcribing and parts[0].get("transcript") is None:
                continue  # told once its transcript is in
            seen.items.add(item_id)
            found = latest_caller_input(_OneItem(item))
            if found is None:
                continue
            _, kind, value = found
            if kind == "keys":
                self._say(session, f"caller pressed {value}")
            elif audio:
                self._say(session, f"caller spoke: {quoted(value) if value else '(no transcript)'}")
            else:
                self._say(session, f"caller wrote: {quoted(value)}")

    def _responses(self, session: Any, seen: _Seen) -> None:
        responses = list(getattr(session, "responses", []))
        while seen.responses < len(responses):
            response = responses[seen.responses]
            if getattr(response, "status", None) == "in_progress":
                return  # told in order, once done
            seen.responses += 1
            self._response(session, response)

    def _response(self, session: Any, response: Any) -> None:
        status = getattr(response, "status", "?")
        how = "" if status == "completed" else f" ({status}"
        if how and getattr(response, "status_reason", None):
            how += f": {response.status_reason}"
        how += ")" if how else ""
        transcript = getattr(response, "transcript", "")
        if transcript:
            self._say(session, f"said {quoted(transcript)}{how}")
        reply = getattr(response, "reply", None)
        call = getattr(reply, "function_call", None)
        if call is not None and getattr(response, "call_id", None):
            arguments = getattr(response, "arguments", "") or "{}"
            self._say(session, f"called {call.name} {arguments}{how}")
        elif not transcript:
            self._say(session, f"responded with nothing{how or ' (silence)'}")

    def _tool_outputs(self, session: Any, seen: _Seen) -> None:
        outputs = list(getattr(session, "function_outputs", []))
        for output in outputs[seen.outputs :]:
            call_id = getattr(output, "call_id", "?")
            self._say(session, f"tool result {call_id}: {quoted(getattr(output, 'output', ''))}")
        seen.outputs = len(outputs)


def _transcribes(session: Any) -> bool:
    config = getattr(session, "config", None) or {}
    audio = config.get("audio") if isinstance(config, dict) else None
    return bool(((audio or {}).get("input") or {}).get("transcription"))


@dataclass
class _OneItem:
    """A stand-in session holding one item, to read it as caller input."""

    item: dict

    @property
    def items(self) -> list[dict]:
        return [self.item]
