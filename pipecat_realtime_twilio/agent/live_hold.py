#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A GPT-Live call on hold: what the ``warm_transfer`` tool needs of a ``LiveAgent``.

On GPT-Live the ``warm_transfer`` tool
(:mod:`~pipecat_realtime_twilio.agent.warm_transfer`) runs inside a delegated
Responses function call, and that delegation stays in flight until the tool's
result goes back as its ``function_call_output``. So the tool cannot wait for the
agent to stop "responding" (delegated work counts as responding):

- :meth:`LiveHold.wait_said` waits only for what the model says, or was asked to
  say, to be said and heard on the phone (the "please hold"), not for delegated work.
- :meth:`LiveHold.hold` puts the model's side of the call on hold:
  ``session.input_audio.mute`` (the server acknowledges with
  ``session.input_audio.muted`` and gives the model silence instead of the caller).
  The model streams audio continuously: while on hold none of it is played on the
  phone and none of its words go in the transcript, so the caller hears the hold
  audio alone; the caller's voice does not stop anything on the phone either. A
  session that replaces a lost one meanwhile is muted again before any caller
  audio reaches it. ``hold(False)`` sends ``session.input_audio.unmute``.
"""

import asyncio
import base64
import time
import uuid

from loguru import logger
from pipecat.services.openai.live import events

from pipecat_realtime_twilio.agent.live_ledger import is_quiet
from pipecat_realtime_twilio.agent.live_work import LiveDelegations
from pipecat_realtime_twilio.audio import BYTES_PER_MS

_POLL_SECS = 0.05


class LiveHold(LiveDelegations):
    """Hold for a GPT-Live call: the caller's audio muted, the model's not played."""

    def __init__(self, **kwargs):
        """Initialize, not on hold.

        Args:
            **kwargs: :class:`~pipecat_realtime_twilio.agent.live_work.LiveDelegations`
                arguments.
        """
        super().__init__(**kwargs)
        self.on_hold = False
        """Whether the caller is on hold (muted to the model; the model not played)."""
        self.held_back_ms = 0.0
        """Milliseconds of the model's speech not played because the caller was on hold."""

    @property
    def _saying(self) -> bool:
        """Whether the model speaks, or owes words it was asked to say (work aside)."""
        return self._speech.item is not None or self._say_pending or bool(self._queued_says)

    async def wait_said(self, timeout: float) -> bool:
        """Wait until the model's words so far were said and heard, work in flight aside.

        Like :meth:`wait_heard`, but delegated work does not count: a tool of that
        work waits here for its own "please hold" to be heard.

        Args:
            timeout: Most seconds to wait.

        Returns:
            Whether that happened in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            quiet_for = time.monotonic() - self._last_activity
            if not self._saying and quiet_for >= self._settle_secs:
                if self._phone is None:
                    return True
                remaining = max(0.0, deadline - loop.time())
                played = await self._phone.wait_played(self._ledger.unconfirmed, remaining)
                if played and not self._saying:
                    return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECS)

    async def hold(self, on: bool) -> None:
        """Put the caller on hold (mute them to the model), or take them off it.

        Args:
            on: True: on hold; False: back with the bot.
        """
        if on == self.on_hold:
            return
        self.on_hold = on
        logger.debug(f"{self} caller {'on hold' if on else 'back from hold'}")
        if self._audio_ready:  # else the next session starts as it should (see _session_ready)
            await self._send_mute(on)

    async def _send_mute(self, on: bool) -> None:
        kind = "session.input_audio.mute" if on else "session.input_audio.unmute"
        await self._send({"type": kind, "event_id": f"evt_{uuid.uuid4().hex[:20]}"})

    async def _session_ready(self) -> None:
        if self.on_hold:  # a new session, while on hold: muted before caller audio goes
            await self._send_mute(True)
        await super()._session_ready()

    async def _handle_evt_audio_delta(self, evt: events.OutputAudioDeltaEvent):
        if not self.on_hold or not self._audio_ready:
            await super()._handle_evt_audio_delta(evt)
            return
        ulaw = base64.b64decode(evt.delta)
        quiet = is_quiet(ulaw)
        self._audio_arrived(quiet)  # the stream's watchdog still counts it
        if not quiet:
            if self.held_back_ms == 0:
                logger.warning(f"{self} the model speaks while the caller is on hold: not played")
            self.held_back_ms += len(ulaw) / BYTES_PER_MS

    async def _handle_evt_transcript_delta(self, evt: events.TranscriptDeltaEvent):
        if self.on_hold and evt.role != "user":
            return  # words the caller does not hear are not the call's
        await super()._handle_evt_transcript_delta(evt)

    def _over_finished_speech(self) -> bool:
        return False if self.on_hold else super()._over_finished_speech()
