#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a Live session uses of its emulator, and what its parts use of the session.

:class:`~.server.RealtimeEmulator` is a :class:`LiveHost`; a ``LiveSession`` and its
mixins (``LiveInput``, ``LiveOutput``, ``LiveDelegations``) know it only as one.
:class:`LiveParts` is the base of those mixins: it declares, for the type checker,
what they use of the session they make up.
"""

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from .faults import FaultPlan
from .live_records import LiveFaultPlan, LiveResponse
from .records import ClientEventError, Reply, ServerEvent, ServerEventError


class LiveHost(Protocol):
    """The emulator, as a Live session sees it."""

    voice: str
    ttfb_ms: float
    send_rate: float
    audio_chunk_ms: int
    vad_threshold: int
    vad_start_ms: int
    default_reply: Reply
    session_max_secs: float
    retired_models: set[str]
    faults: FaultPlan
    live_faults: LiveFaultPlan
    live_silence: bool
    live_turn_silence_ms: int
    live_usage_interval_ms: int
    validation_errors: list[ClientEventError]
    server_event_errors: list[ServerEventError]
    internal_errors: list[BaseException]

    def _next_reply(self, session: Any, trigger: str) -> Any:
        """The scripted reply for a model turn of ``session``."""

    def _next_transcript(self, audio_ms: float) -> str:
        """The scripted transcript of ``audio_ms`` of caller speech."""


class LiveParts:
    """The base of ``LiveSession``'s mixins: what they use of the session it makes up."""

    if TYPE_CHECKING:
        id: str
        config: dict
        responses: list[LiveResponse]
        conversation: list[tuple[str, str]]
        _emulator: LiveHost
        _loop: asyncio.AbstractEventLoop
        _closing: bool

        @property
        def closed(self) -> bool:
            """Whether the socket has closed."""

        @property
        def audio_format(self) -> tuple[str, int]:
            """The session's audio format type and rate."""

        def _emit(self, event: dict) -> ServerEvent: ...

        def _send_error(
            self,
            message: str,
            code: str,
            *,
            param: str | None = None,
            client_event_id: str | None = None,
            error_type: str = "invalid_request_error",
        ) -> ServerEvent: ...

        def _spawn(self, coro: Awaitable, name: str) -> asyncio.Task: ...

        def _timeline_ms(self) -> int: ...

        def _queue_turn(
            self,
            trigger: str,
            *,
            reply: Any = None,
            commentary: str | None = None,
            delegation_id: str | None = None,
        ) -> LiveResponse: ...

        async def end_session(self, reason: str, client_event_id: str | None = None) -> None:
            """Send ``session.closed`` with ``reason`` and close the socket."""
