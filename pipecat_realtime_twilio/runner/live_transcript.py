#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What is said on a call, as it is said: ``GET /api/calls/{CallSid}/transcript``.

Guarded like the read API of :mod:`~pipecat_realtime_twilio.runner.console` (off, 404,
without ``RUNNER_API_KEY``; ``Authorization: Bearer RUNNER_API_KEY``, checked before
anything is read). It answers server-sent events (``text/event-stream``):

- ``event: turn``, its data a transcript entry as call records keep it (``role``,
  ``text``, ``at``, ``interrupted``...) with its ``index`` in the transcript: sent
  as each utterance completes (the bot's when the model has finished saying it, the
  caller's once transcribed). An entry sent again under the same ``index`` changed:
  a bot's reply cut to what the caller heard (``"interrupted": true``).
- ``event: end``, data ``{"call_sid", "end_reason"}``: the call is over; the stream ends.
- a comment line (``: keep-alive``) after :data:`KEEPALIVE_SECS` of silence, so that
  proxies keep the connection open.

A call that is over (among this instance's latest records, or in the store) gets its
whole transcript, then ``end``. The transcript is read from the runner
(``transcript_of``, as the playground reads it).

Several instances: a call's words so far are known only on the instance its media
stream reached. Asked elsewhere, an instance waits :data:`WAIT_SECS` for the call to
start streaming there, then answers 404 ("not streaming on this instance"); once the
call is over, any instance serves its transcript from the store. Behind a balancer
that does not route by CallSid, a client may miss the call (``simulate --url`` then
prints the words at the end, from the record).
"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from loguru import logger

from pipecat_realtime_twilio.runner.console import CALL_SID
from pipecat_realtime_twilio.runner.operator_api import require_api_key
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.store import CallStore, describe_error
from pipecat_realtime_twilio.settings import Settings

POLL_SECS = 0.1
"""How often an open stream looks at the call's transcript."""

WAIT_SECS = 3.0
"""How long a call not known here is waited for (its stream may be starting) before 404."""

KEEPALIVE_SECS = 15.0
"""Longest silence on an open stream; a comment line is sent then."""

MAX_STREAMS = 100
"""Most transcript streams open at once on one instance; more are answered 503."""

RECHECKED_TURNS = 8
"""The newest entries looked at again for a change (a reply cut to what was heard)."""

Found = tuple[bool, list[dict[str, Any]]]
"""Whether the call is active, and its transcript so far."""


class TranscriptSource(Protocol):
    """What the stream reads of the runner (a :class:`~.app.CallRunner` is one)."""

    settings: Settings

    @property
    def store(self) -> CallStore:
        """Where call records are kept."""

    @property
    def finished(self) -> Iterable[CallRecord]:
        """Records of the newest finished calls."""

    def transcript_of(self, call_sid: str) -> Found | None:
        """Whether the call is active, and its transcript so far (None: no such call here)."""


def event(name: str, data: dict[str, Any]) -> str:
    """One server-sent event.

    Args:
        name: The event's name.
        data: Its data, sent as one line of JSON.

    Returns:
        The event's text, its blank line included.
    """
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class LiveTranscripts:
    """The route of a call's transcript as it is said, on a :class:`TranscriptSource`."""

    def __init__(self, runner: TranscriptSource):
        """Initialize the route.

        Args:
            runner: The runner whose calls are read.
        """
        self.runner = runner
        self.open_streams = 0
        self.router = APIRouter()
        self.router.add_api_route(
            "/api/calls/{call_sid}/transcript", self.transcript, methods=["GET"]
        )

    async def transcript(self, call_sid: str, request: Request) -> StreamingResponse:
        """The call's transcript as server-sent events, until the call is over."""
        require_api_key(request, self.runner.settings, "the call API")
        if CALL_SID.fullmatch(call_sid) is None:
            raise HTTPException(400, "not a CallSid: CA and 32 hex digits")
        if self.open_streams >= MAX_STREAMS:
            raise HTTPException(503, f"{MAX_STREAMS} transcript streams are open already")
        found, stored = await self._find(call_sid)
        if found is None:
            raise HTTPException(
                404, "the call is not streaming on this instance (nor is it over and stored)"
            )
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            self._events(call_sid, found, stored), media_type="text/event-stream", headers=headers
        )

    async def _find(self, call_sid: str) -> tuple[Found | None, CallRecord | None]:
        """The call here, or its stored record; waited for a little while it may be starting."""
        found = self.runner.transcript_of(call_sid)
        if found is not None:
            return found, None
        try:
            record = await self.runner.store.aget(call_sid)
        except Exception as e:
            logger.warning(f"Transcript of {call_sid}: the store failed: {describe_error(e)}")
            record = None
        if record is not None:  # over, perhaps on another instance
            return (False, record.transcript), record
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECS
        while loop.time() < deadline:
            await asyncio.sleep(POLL_SECS)
            found = self.runner.transcript_of(call_sid)
            if found is not None:
                return found, None
        return None, None

    def _end_reason(self, call_sid: str, stored: CallRecord | None) -> str | None:
        record = stored or next((r for r in self.runner.finished if r.call_sid == call_sid), None)
        return record.end_reason if record is not None else None

    async def _events(
        self, call_sid: str, found: Found, stored: CallRecord | None
    ) -> AsyncIterator[str]:
        """Each new or changed entry as it comes, then the end; keep-alives meanwhile."""
        self.open_streams += 1
        loop = asyncio.get_running_loop()
        sent: list[dict[str, Any]] = []
        last = loop.time()
        try:
            while True:
                active, turns = found
                for index in range(max(0, len(sent) - RECHECKED_TURNS), len(turns)):
                    turn = turns[index]
                    if index < len(sent) and turn == sent[index]:
                        continue
                    if index < len(sent):
                        sent[index] = dict(turn)
                    else:
                        sent.append(dict(turn))
                    last = loop.time()
                    yield event("turn", {**turn, "index": index})
                if not active:
                    end_reason = self._end_reason(call_sid, stored)
                    yield event("end", {"call_sid": call_sid, "end_reason": end_reason})
                    return
                if loop.time() - last >= KEEPALIVE_SECS:
                    last = loop.time()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(POLL_SECS)
                found = self.runner.transcript_of(call_sid) or (False, turns)
        finally:
            self.open_streams -= 1
