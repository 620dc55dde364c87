#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Hold audio: a soft chime played in a loop to a caller on hold, through the call's output.

:func:`hold_sound` makes the bundled sound (8 kHz μ-law, made once per process, no
file); :class:`HoldAudio` plays it, or any μ-law of the caller's choosing, through the
phone output like bot audio (marks, pacing, the call's recording) until it is stopped,
when Twilio's buffer is cleared at once.
"""

import asyncio
import contextlib
import functools
import itertools

import numpy as np
from loguru import logger

from pipecat_realtime_twilio.audio import BYTES_PER_MS, SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16
from pipecat_realtime_twilio.frames import RealtimeAudioFrame
from pipecat_realtime_twilio.phone.output import TwilioOutputTransport

_NOTES_HZ = (523.25, 659.25, 783.99, 659.25)  # C5 E5 G5 E5
_NOTE_SECS = 0.35
_REST_SECS = 1.2
_LEVEL = 0.12  # of full scale: audible, never loud

PIECE_MS = 100
"""Hold audio handed to the output at a time."""

QUEUED_MS = 200
"""Hold audio kept waiting in the output (which paces it to Twilio) while it plays."""


@functools.cache
def hold_sound() -> bytes:
    """The bundled hold sound: four soft chime notes and a rest, about 2.6 s, to loop.

    Returns:
        8 kHz μ-law.
    """
    t = np.arange(int(SAMPLE_RATE * _NOTE_SECS)) / SAMPLE_RATE
    envelope = np.exp(-t * 6.0) * np.minimum(1.0, t / 0.01)  # a soft attack, a bell's decay
    notes = [np.sin(2 * np.pi * hz * t) * envelope for hz in _NOTES_HZ]
    rest = np.zeros(int(SAMPLE_RATE * _REST_SECS))
    wave = np.concatenate([*notes, rest]) * _LEVEL * 32767
    return pcm16_to_ulaw(wave.astype("<i2").tobytes())


class HoldAudio:
    """Plays hold audio on a call in a loop, from :meth:`start` until :meth:`stop`.

    The audio goes through the phone output as frames of its own item, so it is
    paced, marked and recorded like bot audio, and :meth:`stop` clears it from
    Twilio's buffer at once.
    """

    def __init__(self, output: TwilioOutputTransport, sound: bytes | None = None, *, item: str):
        """Initialize the player.

        Args:
            output: The call's phone output.
            sound: 8 kHz μ-law to loop; :func:`hold_sound` when None.
            item: The item id its frames carry (unique per hold).

        Raises:
            ValueError: If ``sound`` is empty.
        """
        sound = hold_sound() if sound is None else sound
        if not sound:
            raise ValueError("hold audio must not be empty")
        self._output = output
        self._sound = sound
        self._item = item
        self._task: asyncio.Task | None = None
        self.sent_bytes = 0

    @property
    def playing(self) -> bool:
        """Whether the loop runs."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start playing (from the beginning of the sound)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._play(), name="hold-audio")

    async def stop(self) -> None:
        """Stop playing, and clear what Twilio has buffered of it."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        try:
            await self._output.interrupt([self._item])
        except Exception as e:  # the stream is gone: nothing is left to clear
            logger.debug(f"Hold audio: no clear sent ({e!r})")

    async def _play(self) -> None:
        piece = PIECE_MS * BYTES_PER_MS
        loop = itertools.cycle(range(0, len(self._sound), piece))
        for offset in loop:
            while self._output.queued_ms >= QUEUED_MS:
                await asyncio.sleep(PIECE_MS / 2000)
            ulaw = self._sound[offset : offset + piece]
            frame = RealtimeAudioFrame(
                audio=ulaw_to_pcm16(ulaw),
                sample_rate=SAMPLE_RATE,
                num_channels=1,
                item_id=self._item,
                ulaw=ulaw,
            )
            await self._output.play(frame)
            self.sent_bytes += len(ulaw)
