#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Guarding a session: audio only once ``audio/pcmu`` is confirmed, and no silent stalls.

:class:`SessionGuard` sits on :class:`~pipecat_realtime_twilio.agent.session_keeper.SessionKeeper`:

- Until ``session.updated`` confirms ``audio/pcmu`` both ways, no caller audio is
  appended (it is held, bounded, and sent on confirmation) and no bot audio is
  played: a server that kept its default PCM would otherwise read μ-law as PCM,
  and the caller would hear noise.
- The ``session.update`` carries the input audio section in full, as the
  ``openai`` package types it (``RealtimeAudioConfigInput``: turn detection with
  ``idle_timeout_ms``, noise reduction, the caller's transcription), where
  Pipecat's own models would drop fields.
- A ``session.update`` the server rejects (an ``error`` naming it, nothing
  applied) is sent again without the field, when the field is optional (the
  caller's transcription, noise reduction, speed, tracing); otherwise, or when
  the session says another format, the call falls back.
- Deadlines: the session must be configured within :data:`CONFIGURE_TIMEOUT_SECS`
  of the ``session.update``; a response asked for (or owed to the caller's end of
  turn) must show its first byte (``response.created``) within the agent's
  ``first_byte_timeout_secs``, and its first audio within
  :data:`FIRST_AUDIO_TIMEOUT_SECS` after that. A deadline missed falls back, so a
  stalled model never leaves the caller in silence, while a model that is
  working (a reasoning model thinking before it speaks) is given its time.
"""

import asyncio
import json
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from loguru import logger
from openai.types.realtime.realtime_audio_config_input import RealtimeAudioConfigInput
from pipecat.services.openai.realtime import events

from pipecat_realtime_twilio.agent.session_keeper import SessionKeeper
from pipecat_realtime_twilio.failures import Failure, Stage

CONFIGURE_TIMEOUT_SECS = 1.5
"""Most seconds from ``session.update`` to ``session.updated`` before the fallback."""

FIRST_BYTE_TIMEOUT_SECS = 2.0
"""Most seconds from asking for a response (or the caller's end of turn) to its first byte."""

FIRST_AUDIO_TIMEOUT_SECS = 10.0
"""Most seconds from a response's start (``response.created``) to its first audio."""

PHONE_FORMAT = "audio/pcmu"
"""The only audio format a phone session may use, both ways."""

_OPTIONAL_FIELDS = ("transcription", "noise_reduction", "speed", "tracing")


class Deadline:
    """A one-shot timer that reports a :class:`~pipecat_realtime_twilio.failures.Failure`."""

    def __init__(self, on_miss: Callable[[Failure], Coroutine[Any, Any, None]]):
        """Initialize the deadline, unarmed.

        Args:
            on_miss: Called (as a task) with the failure when the deadline passes.
        """
        self._on_miss = on_miss
        self._timer: asyncio.TimerHandle | None = None
        self._failure: Failure | None = None
        self._task: asyncio.Task | None = None

    @property
    def armed(self) -> bool:
        """Whether the deadline is running."""
        return self._timer is not None

    def arm(self, failure: Failure, secs: float) -> None:
        """Start (or restart) the deadline.

        Args:
            failure: What is reported if it passes.
            secs: Seconds from now.
        """
        self.disarm()
        self._failure = failure
        self._timer = asyncio.get_running_loop().call_later(secs, self._missed)

    def disarm(self) -> None:
        """Stop the deadline (what it waited for came)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _missed(self) -> None:
        self._timer = None
        if self._failure is not None:
            self._task = asyncio.create_task(self._on_miss(self._failure))


class SessionGuard(SessionKeeper):
    """Audio only in the phone's format, and deadlines on configuring and first audio."""

    def __init__(
        self,
        *,
        first_byte_timeout_secs: float,
        audio_input: RealtimeAudioConfigInput | None = None,
        **kwargs,
    ):
        """Initialize the guard.

        Args:
            first_byte_timeout_secs: Most seconds a response may take to its first byte.
            audio_input: The input audio section every ``session.update`` carries
                (None: Pipecat's, from the session properties).
            **kwargs: :class:`SessionKeeper` arguments.
        """
        super().__init__(**kwargs)
        self._audio_input = audio_input
        self.first_byte_timeout_secs = first_byte_timeout_secs
        self._audio_ready = False
        self._session_update_id: str | None = None
        self._dropped_fields: list[str] = []
        self._wrong_format_dropped = 0
        self._configured = Deadline(self._missed)
        self._first_byte = Deadline(self._missed)
        self._awaited_stage = Stage.RESPOND

    #
    # configuring
    #

    @property
    def audio_input(self) -> RealtimeAudioConfigInput | None:
        """The input audio section ``session.update`` carries (less any field refused)."""
        return self._audio_input

    async def send_client_event(self, event: events.ClientEvent):
        """Send a client event; a ``session.update``'s id is kept to match its errors.

        A ``session.update`` carries :attr:`audio_input` as its ``session.audio.input``.

        Args:
            event: The client event.
        """
        if isinstance(event, events.SessionUpdateEvent):
            self._session_update_id = event.event_id
            if self._audio_input is not None:
                message = event.model_dump(exclude_none=True)
                audio = message["session"].setdefault("audio", {})
                audio["input"] = self._audio_input.model_dump(mode="json", exclude_none=True)
                await self._ws_send(message)
                return
        await super().send_client_event(event)

    async def _configure(self) -> None:
        sent = self._session_sent
        await super()._configure()
        if self._session_sent and not sent and self._prewarm_task is None:
            # A pre-warmed session's events are read only once the call starts,
            # which arms this deadline then (see _watch_configuring).
            self._watch_configuring()

    def _watch_configuring(self) -> None:
        """Start the deadline for ``session.updated``, unless it came already."""
        if not self._audio_ready:
            self._configured.arm(
                Failure(Stage.CONFIGURE, "timeout", "no session.updated"), CONFIGURE_TIMEOUT_SECS
            )

    async def _handle_evt_session_updated(self, evt):
        audio = evt.session.audio
        formats = (
            _format(audio.input if audio else None),
            _format(audio.output if audio else None),
        )
        if formats != (PHONE_FORMAT, PHONE_FORMAT):
            await self._fatal(
                Failure(Stage.CONFIGURE, "audio_format", f"in {formats[0]}, out {formats[1]}")
            )
            return
        self._configured.disarm()
        if not self._audio_ready:
            self._audio_ready = True
            await self._release_held_audio()
        await super()._handle_evt_session_updated(evt)

    def _formats_confirmed(self, message: str | bytes) -> bool:
        """Whether a raw ``session.updated`` confirms ``audio/pcmu`` both ways."""
        try:
            audio = json.loads(message)["session"]["audio"]
            formats = (audio["input"]["format"]["type"], audio["output"]["format"]["type"])
        except (ValueError, KeyError, TypeError):
            return False
        return formats == (PHONE_FORMAT, PHONE_FORMAT)

    async def _release_held_audio(self) -> None:
        """Send the caller audio held until the session was configured."""
        held, self._held_audio = self._held_audio, deque()
        for payload in held:
            await self._ws_send({"type": "input_audio_buffer.append", "audio": payload})
            self._sent_caller_audio(payload)

    def _forget_session(self) -> None:
        super()._forget_session()
        self._audio_ready = False
        self._stop_deadlines()  # the new session sets its own

    async def _on_rejected(self, error) -> bool:
        """A ``session.update`` refused as a whole: again without an optional field, or fall back.

        Returns:
            Whether the error was about our ``session.update``.
        """
        param = error.param or ""
        ours = error.event_id is not None and error.event_id == self._session_update_id
        if not ours and (self._audio_ready or not param.startswith("session.")):
            return False
        field = next(
            (f for f in _OPTIONAL_FIELDS if f".{f}" in param and f not in self._dropped_fields),
            None,
        )
        if field is not None and self._drop_field(field):
            logger.warning(
                f"{self} the Realtime session refused {param} ({error.code}: {error.message}); "
                f"configuring it without {field}"
            )
            self._dropped_fields.append(field)
            self._session_sent = False
            await self._configure()
            return True
        if self._audio_ready:
            logger.warning(f"{self} a session update was refused, the session keeps its settings")
            return True
        await self._fatal(Failure(Stage.CONFIGURE, error.code or "invalid_value", error.message))
        return True

    def _drop_field(self, field: str) -> bool:
        """Remove an optional field from the session configuration; whether it was set."""
        typed = self._audio_input
        if typed is not None and field in ("transcription", "noise_reduction"):
            self._audio_input = typed.model_copy(update={field: None})
            # Pipecat's copy follows, so that its own reading of the session agrees.
            self._drop_pipecat_field(field)
            return getattr(typed, field) is not None
        return self._drop_pipecat_field(field)

    def _drop_pipecat_field(self, field: str) -> bool:
        """Remove an optional field from Pipecat's session properties; whether it was set."""
        session = getattr(self._settings, "session_properties", None)
        if not isinstance(session, events.SessionProperties):
            return False
        if field == "tracing":
            dropped = session.tracing is not None
            session.tracing = None
            return dropped
        audio = session.audio
        part = (audio.output if field == "speed" else audio.input) if audio else None
        if part is None or getattr(part, field, None) is None:
            return False
        setattr(part, field, None)
        return True

    #
    # first audio of a response
    #

    def _expect_first_byte(self, stage: Stage) -> None:
        """A response is on its way: its first byte must come in time.

        Args:
            stage: The stage a miss is reported as (``greet`` or ``respond``).
        """
        secs = self.first_byte_timeout_secs
        failure = Failure(stage, "no_first_byte", f"no response within {secs:g} s")
        self._first_byte.arm(failure, secs)
        self._awaited_stage = stage

    def _response_began(self) -> None:
        """The awaited response started: now its first audio must come in time."""
        if self._first_byte.armed:
            secs = FIRST_AUDIO_TIMEOUT_SECS
            failure = Failure(self._awaited_stage, "no_first_byte", f"no audio within {secs:g} s")
            self._first_byte.arm(failure, secs)

    def _first_byte_came(self) -> None:
        """The response's first audio came (or the response is over, or the caller talks)."""
        self._first_byte.disarm()

    def _stop_deadlines(self) -> None:
        """The call is over: no deadline may fire any more."""
        self._configured.disarm()
        self._first_byte.disarm()

    async def _missed(self, failure: Failure) -> None:
        logger.error(f"{self} {failure}: the session stalled")
        await self._fatal(failure)


def _format(section: events.AudioInput | events.AudioOutput | None) -> str | None:
    """The audio format type of a session's input or output section, if given."""
    if section is None or section.format is None:
        return None
    return section.format.type
