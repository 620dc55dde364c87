#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Response latency as the caller lives it: their last word leaving the phone → the answer heard."""

import time
from collections import deque

from pipecat_realtime_twilio.agent.events import TurnLatency
from pipecat_realtime_twilio.audio import BYTES_PER_MS

_APPENDS_KEPT = 500


class ResponseLatency:
    """Measures, per answer, from the end of the caller's speech to the first audio heard.

    The end of speech is when the packet that carried the caller's last word was
    appended (server VAD's ``speech_stopped`` says where in the input audio that
    was, counting its trailing silence); the answer is heard when the phone
    output reports the bot speaking (a mark echo).
    """

    def __init__(self, vad_silence_ms: float = 0.0):
        """Initialize the meter.

        Args:
            vad_silence_ms: The silence server VAD waits for before ``speech_stopped``.
        """
        self.samples_ms: list[float] = []
        self._vad_silence_ms = vad_silence_ms
        self._appended_ms = 0.0
        self._appends: deque[tuple[float, float]] = deque(maxlen=_APPENDS_KEPT)  # (end ms, when)
        self._speech_ended_at: float | None = None

    def appended(self, size: int) -> None:
        """Note caller audio appended to the input buffer (``size`` bytes of μ-law)."""
        self._appended_ms += size / BYTES_PER_MS
        self._appends.append((self._appended_ms, time.monotonic()))

    def speech_stopped(self, audio_end_ms: float) -> None:
        """The caller stopped speaking (``speech_stopped.audio_end_ms``): start a sample."""
        ended = audio_end_ms - self._vad_silence_ms
        self._speech_ended_at = next(
            (when for end_ms, when in self._appends if end_ms >= ended), time.monotonic()
        )

    def cancel(self) -> None:
        """Drop the sample in progress (the caller cut in; no answer is due)."""
        self._speech_ended_at = None

    def heard(self) -> TurnLatency | None:
        """The phone started playing the bot: close the sample in progress, if any.

        Returns:
            The sample closed, with the Unix time the caller stopped speaking; None
            when no sample was in progress.
        """
        if self._speech_ended_at is None:
            return None
        waited = time.monotonic() - self._speech_ended_at
        self._speech_ended_at = None
        self.samples_ms.append(waited * 1000)
        return TurnLatency(at=time.time() - waited, response_ms=waited * 1000)
