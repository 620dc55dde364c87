#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""``simulate --url`` with the runner's key: what is said, printed as it is said.

:class:`SpokenWords` reads the runner's ``GET /api/calls/{CallSid}/transcript``
(:mod:`~pipecat_realtime_twilio.runner.live_transcript`, server-sent events) while the
call goes, and prints ``bot: ...`` and ``caller: ...`` lines through the call's
:class:`~pipecat_realtime_twilio.shell_progress.CallProgress` as each utterance
completes (and ``bot (cut off): ...`` when a reply is cut to what the caller heard).
When the runner cannot tell (the call streams on another instance behind a balancer,
the key is wrong, an older runner), one line says so and the call goes on as without
the key: the words come at the end, from the record.
"""

import asyncio
import contextlib
import json
from typing import Any

import httpx

from pipecat_realtime_twilio.shell_progress import CallProgress

CONNECT_SECS = 5.0
"""Most seconds the runner may take to answer the request (it waits up to 3 s for the call)."""


class SpokenWords:
    """Prints a call's words as the runner tells them, until the call is over."""

    def __init__(self, server_url: str, api_key: str, call_sid: str, progress: CallProgress):
        """Initialize the reader.

        Args:
            server_url: The runner's base URL.
            api_key: Its ``RUNNER_API_KEY``.
            call_sid: The call.
            progress: Where lines go.
        """
        self.url = f"{server_url}/api/calls/{call_sid}/transcript"
        self.api_key = api_key
        self.progress = progress
        self.turns = 0  # utterances printed
        self.ended = False  # the runner said the call is over
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start reading (in the background)."""
        if self._task is None:
            self._task = asyncio.create_task(self._read(), name="simulate-words")

    async def finish(self, wait_secs: float) -> None:
        """Let the runner tell the last words for up to ``wait_secs``, then stop reading.

        Args:
            wait_secs: Most seconds to wait for the runner's end of the call.
        """
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), wait_secs)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "text/event-stream"}
        timeout = httpx.Timeout(CONNECT_SECS, read=None)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                async with client.stream("GET", self.url, headers=headers) as answer:
                    if answer.status_code != 200:
                        await answer.aread()
                        self._refused(answer.status_code, answer.text)
                        return
                    await self._events(answer)
        except httpx.HTTPError as e:
            self.progress.line(
                f"(the runner's words stopped: {type(e).__name__}; they come at the end)"
            )

    def _refused(self, status: int, body: str) -> None:
        if status == 404 and "not streaming on this instance" in body:
            why = "the call streams on another instance"
        elif status == 401:
            why = "wrong RUNNER_API_KEY"
        elif status == 404:
            why = "this runner does not tell them"
        else:
            why = f"HTTP {status}"
        self.progress.line(f"(no words as they are said: {why}; they come at the end)")

    async def _events(self, answer: httpx.Response) -> None:
        """Read server-sent events until the end of the call."""
        name, data = "message", ""
        async for line in answer.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                try:
                    told = json.loads(data)
                except ValueError:
                    told = None  # not JSON: dropped
                if isinstance(told, dict) and self._event(name, told):
                    return
                name, data = "message", ""

    def _event(self, name: str, data: dict[str, Any]) -> bool:
        """Print one event; whether it ended the call."""
        if name == "end":
            self.ended = True
            return True
        if name != "turn":
            return False
        who, text = str(data.get("role")), str(data.get("text") or "")
        index = data.get("index")
        if isinstance(index, int) and index < self.turns:  # told already: changed since
            if data.get("interrupted"):
                self.progress.line(f"{who} (cut off): {text}")
            return False
        self.turns += 1
        self.progress.line(f"{who}: {text}" + (" (cut off)" if data.get("interrupted") else ""))
        return False
