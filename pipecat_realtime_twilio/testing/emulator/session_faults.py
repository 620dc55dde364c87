#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The faults that happen inside a session: what the emulator's knobs armed, played out.

A mixin of ``EmulatedSession``: the session cap (an ``error`` ``session_expired``,
then a normal close), rejected ``session.update`` events (injected, or naming a
retired transcription model), failed input transcriptions, and the response
faults: a stall before the first event, a ``failed`` response without output, and
an ``incomplete`` one cut at half its scripted reply.
"""

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .faults import (
    ResponseFault,
    SessionUpdateRejection,
    duration_text,
    response_error,
    transcription_error,
)
from .host import SessionParts
from .records import EmulatedResponse

_TRANSCRIPTION_MODEL_PARAM = "session.audio.input.transcription.model"

_REJECTION_MESSAGES = {
    "invalid_value": "Invalid value for '{param}'.",
    "unknown_parameter": "Unknown parameter: '{param}'.",
    "missing_required_parameter": "Missing required parameter: '{param}'.",
    "invalid_type": "Invalid type for '{param}'.",
}


class SessionFaults(SessionParts):
    """Fault playing of ``EmulatedSession`` (a mixin; the session provides the rest).

    It owns the session cap timer and the faults taken for each response
    (``_init_faults``), and answers the session's questions: is this
    ``session.update`` rejected, does this transcription fail.
    """

    if TYPE_CHECKING:
        # What this mixin uses of ``EmulatedSession`` beyond ``SessionParts``, for the
        # type checker only.
        opened_at: float
        closed_at: float | None
        _loop: asyncio.AbstractEventLoop
        _ws: ServerConnection

        def _spawn(self, coro: Awaitable, name: str) -> asyncio.Task: ...

        async def flush(self) -> None:
            """Wait until every produced event has been written (or the socket closed)."""

        def _finish(self, response: EmulatedResponse, status: str, reason: str | None) -> None:
            """Close the response's open parts, then send ``response.done``."""

    def _init_faults(self) -> None:
        self.max_secs: float = self._emulator.session_max_secs
        self.expired_at: float | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._response_faults: dict[str, ResponseFault] = {}
        self._response_stalls: dict[str, float] = {}

    # -- the session cap ---------------------------------------------------------------

    def _expires_at(self) -> int:
        """Return ``session.expires_at``: the unix time the session will end at."""
        return int(time.time() + self.max_secs)

    def _arm_expiry(self) -> None:
        self._expiry = self._loop.call_at(self.opened_at + self.max_secs, self._expire)

    def _disarm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expire(self) -> None:
        self._expiry = None
        if self.closed_at is None:
            self._spawn(self._end_expired_session(), "emulator-session-expired")

    async def _end_expired_session(self) -> None:
        self.expired_at = self._loop.time()
        logger.debug(f"Realtime emulator {self.id}: session expired after {self.max_secs} s")
        self._send_error(
            f"Your session hit the maximum duration of {duration_text(self.max_secs)}.",
            "session_expired",
        )
        await self.flush()
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close(1000)

    # -- session.update --------------------------------------------------------------

    def _session_update_refused(self, data: dict) -> bool:
        """Reject ``data`` (a valid ``session.update``) if a fault says so.

        Returns:
            Whether it was rejected (an ``error`` was sent, or, for a stalled one,
            nothing at all; nothing is to be applied).
        """
        if self._emulator.faults.session_update_stalls.take():
            logger.debug(f"Realtime emulator {self.id}: leaving a session.update unanswered")
            return True
        rejection = self._emulator.faults.session_update_rejections.take()
        if rejection is None:
            update = data["session"]
            transcription = ((update.get("audio") or {}).get("input") or {}).get(
                "transcription"
            ) or {}
            model = transcription.get("model")
            if model is not None and model in self._emulator.retired_models:
                rejection = SessionUpdateRejection(
                    _TRANSCRIPTION_MODEL_PARAM,
                    "invalid_value",
                    f"The model '{model}' has been deprecated and is no longer available.",
                )
        if rejection is None:
            return False
        template = _REJECTION_MESSAGES.get(rejection.code, "Invalid '{param}'.")
        message = rejection.message or template.format(param=rejection.param)
        logger.debug(f"Realtime emulator {self.id}: rejecting session.update ({message})")
        self._send_error(
            message, rejection.code, param=rejection.param, event_id=self._event_id(data)
        )
        return True

    # -- input transcription -----------------------------------------------------------

    def _transcription_failed(self, item_id: str) -> bool:
        """Send ``...input_audio_transcription.failed`` for ``item_id`` if a fault says so.

        Returns:
            Whether the transcription failed (no ``.delta``/``.completed`` to send).
        """
        failure = self._emulator.faults.transcription_failures.take()
        if failure is None:
            return False
        logger.debug(f"Realtime emulator {self.id}: transcription of {item_id} fails")
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": item_id,
                "content_index": 0,
                "error": transcription_error(item_id, failure.code, failure.message),
            }
        )
        return True

    # -- responses -------------------------------------------------------------------------

    def _take_response_faults(self, response: EmulatedResponse) -> None:
        """Take the faults armed for the next response (at its trigger)."""
        faults = self._emulator.faults
        stall = faults.stalls.take()
        if stall is not None:
            response.stall_secs = stall
            self._response_stalls[response.id] = stall
        fault = faults.response_faults.take()
        if fault is not None:
            self._response_faults[response.id] = fault

    async def _stall(self, response: EmulatedResponse) -> None:
        """Hold the response back as armed: nothing is sent meanwhile."""
        secs = self._response_stalls.pop(response.id, None)
        if secs is None:
            return
        logger.debug(f"Realtime emulator {self.id}: stalling {response.id} for {secs} s")
        if math.isinf(secs):
            await self._loop.create_future()  # until cancelled (response.cancel, barge-in)
        else:
            await asyncio.sleep(secs)

    def _response_fault(self, response: EmulatedResponse) -> ResponseFault | None:
        return self._response_faults.pop(response.id, None)

    def _fail(self, response: EmulatedResponse, fault: ResponseFault) -> None:
        """End the response ``failed``, without output."""
        response.error = response_error(fault.code)
        self._finish(response, "failed", fault.code)
