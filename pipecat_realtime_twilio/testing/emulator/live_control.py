#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The client's commands in a Live session: start, update, context appends, mute, close.

``session.start`` (checked beyond its types: a Live model, G.711 at 8000 Hz, a
built-in voice, at most 128 one-part input messages; Decisions delegation is not
emulated) answers ``session.started`` with the resolved session, then the output
stream starts. ``session.update`` merges delegation settings and triggers (the
delegation type cannot change) and answers ``session.updated``. The three context
appends are recorded in ``contexts`` and acknowledged (``session.<kind>.appended``
with ``start_ms`` = ``end_ms`` = now on the session timeline, the furthest of the
input and output audio clocks); commentary makes the model
speak, and with a client delegation's id it answers that delegation. ``mute`` and
``unmute`` are acknowledged. ``session.close`` drops the queued turns, lets the
turn being spoken finish (at most 10 s), then ends the session ``close_requested``.
"""

import asyncio
import contextlib
import copy
import json
import time
from typing import TYPE_CHECKING, get_args

from loguru import logger
from openai.types.live import BuiltInVoice

from .live_audio import DEFAULT_LIVE_FORMAT
from .live_host import LiveParts
from .live_records import LiveContext
from .validation import Problem

_VOICES = set(get_args(BuiltInVoice))
_MAX_INPUT_ITEMS = 128
_CLOSE_DRAIN_SECS = 10.0


class LiveControl(LiveParts):
    """The client's session commands, for ``LiveSession`` (a mixin)."""

    if TYPE_CHECKING:
        model: str | None
        started_at: float | None
        contexts: list[LiveContext]
        muted: bool
        max_secs: float
        opened_at: float

        @property
        def started(self) -> bool:
            """Whether ``session.started`` was sent."""

        @property
        def delegation(self) -> dict:
            """The resolved delegation configuration."""

        def _refuse(
            self, data: dict, message: str, code: str, param: str | None = None
        ) -> None: ...

        def _ack(self, event_type: str, data: dict, **fields: object) -> None: ...

        def _start_output(self) -> None: ...

        def _drop_queued_turns(self) -> None: ...

        async def _speech_done(self) -> None: ...

        def _client_delegation_known(self, delegation_id: str) -> bool: ...

        def _answer_client_delegation(self, delegation_id: str) -> None: ...

    # -- session.start / session.update ------------------------------------------

    def _on_session_start(self, data: dict) -> None:
        if self.started:
            self._refuse(data, "The session has already started.", "session_already_started")
            return
        config = data["session"]
        rejection = self._emulator.live_faults.session_start_rejections.take()
        if rejection is not None:
            message = rejection.message or f"Invalid value for '{rejection.param}'."
            self._refuse(data, message, rejection.code, rejection.param)
            return
        problem = self._start_problem(config)
        if problem is not None:
            self._refuse(data, problem.message, problem.code or "invalid_value", problem.param)
            return
        self.model = config["model"]
        self.config = self._resource(config)
        self.started_at = self._loop.time()
        logger.debug(f"Live emulator {self.id}: session.start {json.dumps(config)[:300]}")
        for item in config.get("input") or []:
            self.conversation.append((item["role"], item["content"][0]["text"]))
        self._ack("session.started", data, session=copy.deepcopy(self.config))
        self._start_output()

    def _start_problem(self, config: dict) -> Problem | None:
        model = config["model"]
        if model in self._emulator.retired_models or not model.startswith("gpt-live"):
            return Problem(
                f"The model `{model}` does not exist or is not a Live model.",
                "model_not_found",
                "session.model",
            )
        audio = config.get("audio") or {}
        fmt = audio.get("format")
        if isinstance(fmt, dict) and fmt["type"] != "audio/pcm" and fmt["rate"] != 8000:
            return Problem(
                f"Invalid value: {fmt['rate']}. G.711 audio uses 8000 Hz.",
                "invalid_value",
                "session.audio.format.rate",
            )
        voice = (audio.get("output") or {}).get("voice")
        if isinstance(voice, str) and voice not in _VOICES:
            return Problem(
                f"Invalid value: '{voice}'. Supported values are: {', '.join(sorted(_VOICES))}.",
                "invalid_value",
                "session.audio.output.voice",
            )
        items = config.get("input") or []
        if len(items) > _MAX_INPUT_ITEMS:
            return Problem(
                f"At most {_MAX_INPUT_ITEMS} input messages are supported.",
                "invalid_value",
                "session.input",
            )
        for index, item in enumerate(items):
            if len(item["content"]) != 1:
                return Problem(
                    "Supply exactly one text part per input message.",
                    "invalid_value",
                    f"session.input[{index}].content",
                )
        delegation = config.get("delegation") or {}
        if delegation.get("type") == "decisions":
            return Problem(
                "Decisions delegation is not emulated.", "not_emulated", "session.delegation"
            )
        return None

    def _resource(self, config: dict) -> dict:
        """The resolved session: the start configuration with the server's defaults."""
        resource = {k: copy.deepcopy(v) for k, v in config.items() if v is not None}
        audio = resource.setdefault("audio", {})
        audio.setdefault("format", dict(DEFAULT_LIVE_FORMAT))
        audio.setdefault("output", {}).setdefault("voice", self._emulator.voice)
        delegation = resource.get("delegation") or {"type": "client"}
        delegation.setdefault("acknowledgement_delay_ms", 0)
        resource["delegation"] = delegation
        resource.setdefault("store", False)
        resource.setdefault("model", self.model or "gpt-live-1")
        resource["id"] = self.id
        left = self.max_secs - (self._loop.time() - self.opened_at)  # the cap runs from connecting
        resource["expires_at"] = int(time.time() + left)
        resource["status"] = "active"
        return resource

    def _on_session_update(self, data: dict) -> None:
        update = data["session"]
        delegation = update.get("delegation")
        current = self.delegation
        if delegation is not None:
            if delegation["type"] != current["type"]:
                self._refuse(
                    data,
                    f"The delegation type cannot change (the session uses '{current['type']}').",
                    "invalid_value",
                    "session.delegation.type",
                )
                return
            for key, value in delegation.items():
                if key == "responses":
                    current.setdefault("responses", {}).update(copy.deepcopy(value))
                elif key != "type":
                    current[key] = value
            self.config["delegation"] = current
        if "triggers" in update:
            self.config["triggers"] = copy.deepcopy(update["triggers"])
        logger.debug(f"Live emulator {self.id}: session.update {json.dumps(update)[:300]}")
        self._ack("session.updated", data, session=copy.deepcopy(self.config))

    # -- context appends, mute, close --------------------------------------------

    def _on_session_instructions_append(self, data: dict) -> None:
        self._append_context(data, "instructions")

    def _on_session_thinking_append(self, data: dict) -> None:
        self._append_context(data, "thinking")

    def _on_session_commentary_append(self, data: dict) -> None:
        context = self._append_context(data, "commentary")
        if context is not None:
            self._queue_turn(
                "commentary", commentary=context.content, delegation_id=context.delegation_id
            )

    def _append_context(self, data: dict, kind: str) -> LiveContext | None:
        delegation_id = data["delegation_id"]
        if delegation_id is not None and not self._client_delegation_known(delegation_id):
            self._refuse(
                data,
                f"No client delegation with id '{delegation_id}'.",
                "invalid_value",
                "delegation_id",
            )
            return None
        context = LiveContext(kind, data["content"], delegation_id, self._timeline_ms())
        self.contexts.append(context)
        if kind == "commentary" and delegation_id is not None:
            self._answer_client_delegation(delegation_id)
        self._ack(f"session.{kind}.appended", data, start_ms=context.at_ms, end_ms=context.at_ms)
        return context

    def _on_session_input_audio_mute(self, data: dict) -> None:
        self.muted = True
        self._ack("session.input_audio.muted", data)

    def _on_session_input_audio_unmute(self, data: dict) -> None:
        self.muted = False
        self._ack("session.input_audio.unmuted", data)

    def _on_session_close(self, data: dict) -> None:
        self._closing = True
        event_id = data.get("event_id")
        self._spawn(
            self._drain_and_close(event_id if isinstance(event_id, str) else None),
            "live-session-close",
        )

    async def _drain_and_close(self, client_event_id: str | None) -> None:
        """Let the turn being spoken finish (at most 10 s), then ``session.closed``."""
        self._drop_queued_turns()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._speech_done(), _CLOSE_DRAIN_SECS)
        await self.end_session("close_requested", client_event_id)
