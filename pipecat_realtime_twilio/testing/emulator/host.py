#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What an emulated session uses of its emulator, and what its parts use of the session.

:class:`~.server.RealtimeEmulator` is an :class:`EmulatorHost`; the session and its
mixins know it only as one, so the server imports the session and never the reverse.
:class:`SessionParts` is the base of the session's mixins (``InputAudio``,
``Responses``): it declares, for the type checker, what they use of the session.
"""

from typing import TYPE_CHECKING, Any, Protocol

from .faults import FaultPlan
from .records import ClientEventError, ItemMeta, Reply, ServerEvent, ServerEventError


class EmulatorHost(Protocol):
    """The emulator, as a session sees it."""

    voice: str
    instructions: str
    ttfb_ms: float
    send_rate: float
    audio_chunk_ms: int
    vad_threshold: int
    vad_start_ms: int
    transcription_delay_ms: float
    send_rate_limits: bool
    default_reply: Reply
    transcripts: list[str]
    session_max_secs: float
    retired_models: set[str]
    faults: FaultPlan
    validation_errors: list[ClientEventError]
    server_event_errors: list[ServerEventError]
    internal_errors: list[BaseException]

    def _next_reply(self, session: Any, trigger: str) -> Any:
        """The scripted reply for a response of ``session`` (an ``EmulatedSession``)."""

    def _next_transcript(self, audio_ms: float) -> str:
        """The scripted transcript of ``audio_ms`` of caller speech."""


class SessionParts:
    """The base of ``EmulatedSession``'s mixins: what they use of the session it makes up."""

    if TYPE_CHECKING:
        id: str
        config: dict
        items: list[dict]
        _emulator: EmulatorHost
        _item_meta: dict[str, ItemMeta]

        def _emit(self, event: dict) -> ServerEvent: ...

        def _send_error(
            self,
            message: str,
            code: str | None,
            *,
            param: str | None = None,
            event_id: str | None = None,
            error_type: str = "invalid_request_error",
        ) -> ServerEvent: ...

        def _emit_item(self, event_type: str, item: dict, previous_id: str | None) -> None: ...

        def _id_before(self, index: int) -> str | None: ...

        @staticmethod
        def _event_id(data: dict) -> str | None: ...
