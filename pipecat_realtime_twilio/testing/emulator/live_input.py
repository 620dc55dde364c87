#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The caller's side of a Live session: input audio, turn taking and input transcripts.

The model decides turns itself; here an energy VAD stands in for it, on the audio of
``session.input_audio.append`` in 20 ms windows (a window is speech when its RMS level
reaches the emulator's ``vad_threshold``; muted input counts as silence).
``vad_start_ms`` of continuous speech start a caller turn: a model turn being spoken
stops there (barge-in: the model stops itself, within one window of detection), and
a turn stalled by ``stall_next_responses`` is dropped. ``live_turn_silence_ms`` of
silence end the turn: its scripted transcript (the emulator's ``transcripts``, in
order) goes out as ``session.input_transcript.delta`` fragments on 200 ms boundaries
of the input timeline, then the model answers (a turn triggered ``"vad"``).

The input timeline is the milliseconds of input audio appended since
``session.started``. Usage is billed on it: ``session.usage.updated`` every
``live_usage_interval_ms`` of it, ``usage.seconds`` = whole seconds of it.
"""

import base64
import binascii
import math
import re
from typing import TYPE_CHECKING

import numpy as np
from loguru import logger

from .live_audio import decode_live, sample_bytes
from .live_host import LiveParts
from .live_records import CallerTurn

_WINDOW_MS = 20
_FRAME_MS = 200


def split_words(text: str) -> list[str]:
    """Split ``text`` into words, each with the whitespace before it (joined back: ``text``)."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


class LiveInput(LiveParts):
    """Caller audio handling of ``LiveSession`` (a mixin; the session provides the rest)."""

    if TYPE_CHECKING:
        input_audio: bytearray
        muted: bool
        close_reason: str | None

        def _refuse(
            self, data: dict, message: str, code: str, param: str | None = None
        ) -> None: ...

        def _barge_in(self) -> bool: ...

        def _wake_speaker(self) -> None: ...

    def _init_input(self) -> None:
        self.input_audio = bytearray()
        self.caller_turns: list[CallerTurn] = []
        self._input_ms = 0.0
        self._byte_tail = b""
        self._pcm_tail = np.zeros(0, dtype=np.int16)
        self._vad_pos_ms = 0.0
        self._caller_speaking = False
        self._run_start_ms: float | None = None
        self._run_ms = 0.0
        self._silence_ms = 0.0
        self._last_voiced_ms = 0.0
        self._usage_reported_s = 0

    # -- public --------------------------------------------------------------------

    @property
    def input_ms(self) -> float:
        """Milliseconds of input audio appended (the input timeline)."""
        return self._input_ms

    @property
    def caller_speaking(self) -> bool:
        """Whether the VAD is in a caller turn."""
        return self._caller_speaking

    @property
    def usage(self) -> dict:
        """The session's cumulative usage: ``{"seconds": whole seconds of input audio}``."""
        return {"seconds": float(int(self._input_ms // 1000))}

    @property
    def input_transcript(self) -> str:
        """Every ``session.input_transcript.delta`` sent, joined."""
        return "".join(t.transcript or "" for t in self.caller_turns)

    # -- session.input_audio.append --------------------------------------------------

    def _on_session_input_audio_append(self, data: dict) -> None:
        try:
            raw = base64.b64decode(data["audio"], validate=True)
        except (binascii.Error, ValueError):
            self._refuse(data, "Invalid 'audio': expected base64 audio bytes.", "invalid_value")
            return
        self.input_audio += raw
        kind, rate = self.audio_format
        if kind == "audio/pcm":
            raw = self._byte_tail + raw
            usable = len(raw) - len(raw) % sample_bytes(kind)
            raw, self._byte_tail = raw[:usable], raw[usable:]
        samples = decode_live(raw, kind)
        if self.muted:
            samples = np.zeros_like(samples)  # a muted input reaches the model as silence
        self._input_ms += len(samples) * 1000 / rate
        samples = np.concatenate([self._pcm_tail, samples])
        window = rate * _WINDOW_MS // 1000
        count = len(samples) // window
        if count:
            frames = samples[: count * window].astype(np.float64).reshape(count, window)
            levels = np.sqrt(np.mean(frames * frames, axis=1))
            for level in levels.tolist():
                start = self._vad_pos_ms
                self._vad_pos_ms = start + _WINDOW_MS
                self._vad_window(level, start, self._vad_pos_ms)
        self._pcm_tail = samples[count * window :].copy()
        self._report_usage()

    def _report_usage(self) -> None:
        interval = max(1, int(self._emulator.live_usage_interval_ms))
        due = int(self._input_ms) // interval * interval // 1000
        if due > self._usage_reported_s and self.close_reason is None:
            self._usage_reported_s = due
            self._emit({"type": "session.usage.updated", "usage": self.usage})

    # -- VAD ------------------------------------------------------------------------

    def _vad_window(self, level: float, start_ms: float, end_ms: float) -> None:
        voiced = level >= self._emulator.vad_threshold
        if not self._caller_speaking:
            if not voiced:
                self._run_start_ms = None
                self._run_ms = 0.0
                return
            if self._run_start_ms is None:
                self._run_start_ms = start_ms
            self._run_ms += _WINDOW_MS
            self._last_voiced_ms = end_ms
            if self._run_ms >= self._emulator.vad_start_ms:
                self._caller_started(self._run_start_ms, end_ms)
            return
        if voiced:
            self._silence_ms = 0.0
            self._last_voiced_ms = end_ms
            return
        self._silence_ms += _WINDOW_MS
        if self._silence_ms >= self._emulator.live_turn_silence_ms:
            self._caller_stopped()

    def _caller_started(self, onset_ms: float, detected_ms: float) -> None:
        self._caller_speaking = True
        self._silence_ms = 0.0
        turn = CallerTurn(onset_ms, detected_ms, self._loop.time())
        turn.barged_in = self._barge_in()
        self.caller_turns.append(turn)
        logger.debug(
            f"Live emulator {self.id}: caller speaks at {onset_ms:.0f} ms"
            + (" (barge-in)" if turn.barged_in else "")
        )

    def _caller_stopped(self) -> None:
        turn = self.caller_turns[-1]
        turn.end_ms = self._last_voiced_ms
        self._caller_speaking = False
        self._run_start_ms = None
        self._run_ms = 0.0
        self._silence_ms = 0.0
        text = self._emulator._next_transcript(turn.end_ms - turn.start_ms)
        turn.transcript = text
        self.conversation.append(("user", text))
        logger.debug(f"Live emulator {self.id}: caller turn ends at {turn.end_ms:.0f} ms")
        self._send_input_transcript(text, turn.start_ms, turn.end_ms)
        if not self._closing:
            self._queue_turn("vad")
        self._wake_speaker()

    def _send_input_transcript(self, text: str, start_ms: float, end_ms: float) -> None:
        """Send the transcript in fragments, one per 200 ms frame that has words."""
        words = split_words(text)
        frames = max(1, math.ceil((end_ms - start_ms) / _FRAME_MS))
        for index in range(frames):
            lo = -(-index * len(words) // frames)
            hi = -(-(index + 1) * len(words) // frames)
            if hi <= lo:
                continue
            begin = start_ms + index * _FRAME_MS
            self._emit(
                {
                    "type": "session.input_transcript.delta",
                    "delta": "".join(words[lo:hi]),
                    "start_ms": int(begin),
                    "end_ms": int(min(end_ms, begin + _FRAME_MS)),
                }
            )
