#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The input side of a session: the input audio buffer, the server VAD and user items.

An energy VAD runs on the appended audio in 20 ms windows: a window is speech when
its RMS level reaches the emulator's ``vad_threshold`` (scaled by the session's
``threshold``). ``vad_start_ms`` of continuous speech start a turn
(``speech_started``, barge-in); ``silence_duration_ms`` of silence end it
(``speech_stopped``, the committed user item, an optional transcription and an
automatic response).

``semantic_vad`` has no language model here: it reads the caller's next scripted
transcript instead. A turn whose transcript ends a sentence (``.``, ``?``, ``!``)
ends after the eagerness's short wait (high 200 ms, medium and auto 500 ms, low
1000 ms of silence); any other scripted transcript waits the eagerness's longest
(high 2 s, medium and auto 4 s, low 8 s). With no scripted transcript left, the
turn counts as finished.

``idle_timeout_ms`` (``server_vad`` only) counts, as the API does, from a response's end
of playback: its ``response.done`` plus the duration of the audio it sent. If no speech
starts by then plus the timeout, the session sends ``input_audio_buffer.timeout_triggered``,
commits the silent audio as a user item (not transcribed here: the scripted transcripts are
the caller's words) and answers it like a turn VAD ended (``create_response``).
"""

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger

from .audio import (
    FORMAT_RATES,
    SAMPLE_BYTES,
    audio_duration_ms,
    bytes_per_ms,
    decode_audio,
    decode_base64_audio,
)
from .config import turn_detection
from .host import SessionParts
from .records import ClientEvent, EmulatedResponse, ItemMeta, new_id
from .usage import transcription_usage
from .validation import Problem

_VAD_WINDOW_MS = 20
# semantic_vad: the silence that ends a finished turn, and an unfinished one, per eagerness.
_SEMANTIC_QUICK_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 200}
_SEMANTIC_MAX_MS = {"low": 8000, "medium": 4000, "auto": 4000, "high": 2000}
_SENTENCE_ENDS = (".", "?", "!")


def semantic_silence_ms(eagerness: str | None, transcript: str | None) -> float:
    """Return how much silence ends a ``semantic_vad`` turn.

    Args:
        eagerness: The session's ``eagerness`` (None is ``auto``).
        transcript: What the caller said in this turn (the next scripted transcript),
            or None if there is none.

    Returns:
        The eagerness's short wait if the turn sounds finished (no transcript, or one
        ending with ``.``, ``?`` or ``!``), else its longest wait.
    """
    level = eagerness if eagerness in _SEMANTIC_QUICK_MS else "auto"
    if transcript is None or transcript.rstrip().endswith(_SENTENCE_ENDS):
        return _SEMANTIC_QUICK_MS[level]
    return _SEMANTIC_MAX_MS[level]


class InputAudio(SessionParts):
    """Input audio handling of ``EmulatedSession`` (a mixin; the session provides the rest).

    It owns the input buffer and VAD state (``_init_input_audio``) and handles the
    ``input_audio_buffer.*`` client events. From the session it uses the configuration,
    the conversation items, event sending and the response methods (to barge in and to
    answer a finished turn).
    """

    if TYPE_CHECKING:
        # What this mixin uses of ``EmulatedSession`` and ``Responses`` beyond
        # ``SessionParts``, for the type checker only.
        client_events: list[ClientEvent]
        input_audio: bytearray
        _active: EmulatedResponse | None

        @property
        def input_format(self) -> str:
            """The negotiated input audio format."""

        def item(self, item_id: str) -> dict | None:
            """Return the conversation item with this id, or None."""

        def _reject(self, record: ClientEvent, problem: Problem, event: Any) -> None: ...

        def _spawn(self, coro: Awaitable, name: str) -> asyncio.Task: ...

        def _start_response(self, trigger: str, params: dict) -> EmulatedResponse: ...

        def _cancel_response(self, response: EmulatedResponse, reason: str) -> None: ...

        def _transcription_failed(self, item_id: str) -> bool: ...

    def _init_input_audio(self) -> None:
        self._idle_task: asyncio.Task | None = None
        self._input_ms = 0.0
        self._buffer = bytearray()
        self._buffer_start_ms = 0.0
        self._byte_tail = b""
        self._pcm_tail = np.zeros(0, dtype=np.int16)
        self._vad_pos_ms = 0.0
        self._reset_vad()

    def _reset_vad(self) -> None:
        self._speaking = False
        self._run_start_ms: float | None = None
        self._run_ms = 0.0
        self._silence_ms = 0.0
        self._speech_item_id: str | None = None
        self._speech_start_ms = 0.0

    def _clear_input_buffer(self) -> None:
        self._buffer.clear()
        self._buffer_start_ms = self._input_ms
        self._reset_vad()

    def _turn_detection(self) -> dict | None:
        return turn_detection(self.config)

    def _input_settings_changed(self, old_format: str) -> None:
        """Follow a ``session.update``: a new input format, or turn detection turned off."""
        if self.input_format != old_format:
            # Audio buffered in the old format can't be interpreted any more.
            self._byte_tail = b""
            self._pcm_tail = np.zeros(0, dtype=np.int16)
            self._vad_pos_ms = self._input_ms
            self._clear_input_buffer()
        if self._turn_detection() is None:
            self._reset_vad()
            self._pcm_tail = np.zeros(0, dtype=np.int16)
            self._vad_pos_ms = self._input_ms

    # -- input_audio_buffer.* ---------------------------------------------------------

    def _on_input_audio_buffer_append(self, data: dict, model: Any) -> None:
        raw = decode_base64_audio(data["audio"])
        if raw is None:
            self._reject(
                self.client_events[-1],
                Problem(
                    "Invalid 'audio'. Expected base64-encoded audio bytes.",
                    "invalid_value",
                    "audio",
                ),
                data,
            )
            return
        self.input_audio += raw
        self._buffer += raw
        fmt = self.input_format
        if fmt == "audio/pcm":
            raw = self._byte_tail + raw
            usable = len(raw) - (len(raw) & 1)
            raw, self._byte_tail = raw[:usable], raw[usable:]
        samples = decode_audio(raw, fmt)
        rate = FORMAT_RATES[fmt]
        self._input_ms += len(samples) * 1000 / rate
        if self._turn_detection() is None:
            self._vad_pos_ms = self._input_ms
            return
        samples = np.concatenate([self._pcm_tail, samples])
        window = rate * _VAD_WINDOW_MS // 1000
        count = len(samples) // window
        if count:
            frames = samples[: count * window].astype(np.float64).reshape(count, window)
            levels = np.sqrt(np.mean(frames * frames, axis=1))
            for level in levels.tolist():
                start = self._vad_pos_ms
                self._vad_pos_ms = start + _VAD_WINDOW_MS
                self._vad_window(level, start, self._vad_pos_ms)
        self._pcm_tail = samples[count * window :].copy()

    def _on_input_audio_buffer_commit(self, data: dict, model: Any) -> None:
        buffered_ms = audio_duration_ms(len(self._buffer), self.input_format)
        if buffered_ms < 100:
            self._send_error(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
                event_id=self._event_id(data),
            )
            return
        item_id = (
            self._speech_item_id if self._speaking and self._speech_item_id else new_id("item")
        )
        audio = bytes(self._buffer)
        self._clear_input_buffer()
        self._commit(item_id, audio, buffered_ms)

    def _on_input_audio_buffer_clear(self, data: dict, model: Any) -> None:
        self._clear_input_buffer()
        self._emit({"type": "input_audio_buffer.cleared"})

    # -- VAD ----------------------------------------------------------------------------

    def _vad_threshold(self) -> float:
        detection = self._turn_detection() or {}
        threshold = detection.get("threshold")
        scale = threshold / 0.5 if isinstance(threshold, (int, float)) and threshold > 0 else 1.0
        return self._emulator.vad_threshold * scale

    def _silence_duration_ms(self) -> float:
        detection = self._turn_detection() or {}
        if detection.get("type") == "semantic_vad":
            scripted = self._emulator.transcripts
            return semantic_silence_ms(
                detection.get("eagerness"), scripted[0] if scripted else None
            )
        value = detection.get("silence_duration_ms")
        return float(value) if value is not None else 500.0

    def _vad_window(self, level: float, start_ms: float, end_ms: float) -> None:
        voiced = level >= self._vad_threshold()
        if not self._speaking:
            if not voiced:
                self._run_start_ms = None
                self._run_ms = 0.0
                return
            if self._run_start_ms is None:
                self._run_start_ms = start_ms
            self._run_ms += _VAD_WINDOW_MS
            if self._run_ms >= self._emulator.vad_start_ms:
                self._on_speech_started(self._run_start_ms)
            return
        if voiced:
            self._silence_ms = 0.0
            return
        self._silence_ms += _VAD_WINDOW_MS
        if self._silence_ms >= self._silence_duration_ms():
            self._on_speech_stopped(end_ms)

    def _on_speech_started(self, onset_ms: float) -> None:
        detection = self._turn_detection() or {}
        padding = detection.get("prefix_padding_ms")
        padding = 300 if padding is None else padding
        self._disarm_idle_timeout()
        self._speaking = True
        self._silence_ms = 0.0
        self._speech_item_id = new_id("item")
        self._speech_start_ms = max(self._buffer_start_ms, onset_ms - padding)
        logger.debug(f"Realtime emulator {self.id}: speech started at {onset_ms:.0f} ms")
        self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": int(round(self._speech_start_ms)),
                "item_id": self._speech_item_id,
            }
        )
        if detection.get("interrupt_response", True) and self._active is not None:
            self._cancel_response(self._active, "turn_detected")

    def _on_speech_stopped(self, end_ms: float) -> None:
        item_id = self._speech_item_id or new_id("item")
        start_ms = self._speech_start_ms
        logger.debug(f"Realtime emulator {self.id}: speech stopped at {end_ms:.0f} ms")
        self._reset_vad()
        self._emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": int(round(end_ms)),
                "item_id": item_id,
            }
        )
        begin = self._buffer_offset(start_ms)
        cut = self._buffer_offset(end_ms)
        audio = bytes(self._buffer[begin:cut])
        del self._buffer[:cut]
        self._buffer_start_ms = end_ms
        self._commit(item_id, audio, end_ms - start_ms)
        detection = self._turn_detection() or {}
        if detection.get("create_response", True):
            if self._active is not None:
                logger.debug(
                    f"Realtime emulator {self.id}: not responding, {self._active.id} still active"
                )
            else:
                self._start_response("vad", {})

    # -- idle timeout (server_vad's idle_timeout_ms) ----------------------------------

    def _idle_timeout_ms(self) -> int | None:
        detection = self._turn_detection() or {}
        if detection.get("type") != "server_vad":
            return None
        timeout = detection.get("idle_timeout_ms")
        return timeout if isinstance(timeout, int) else None

    def _arm_idle_timeout(self, response: EmulatedResponse) -> None:
        """A response is done: time the caller's silence from its end of playback.

        Args:
            response: The response just done; only one in the default conversation counts.
        """
        self._disarm_idle_timeout()
        timeout = self._idle_timeout_ms()
        if timeout is None or response.conversation != "auto" or self._speaking:
            return
        playback_ms = audio_duration_ms(len(response.audio), response.output_format)
        self._idle_task = self._spawn(
            self._idle_timeout_after((playback_ms + timeout) / 1000), "emulator-idle-timeout"
        )

    def _disarm_idle_timeout(self) -> None:
        task, self._idle_task = self._idle_task, None
        if task is not None:
            task.cancel()

    async def _idle_timeout_after(self, secs: float) -> None:
        await asyncio.sleep(secs)
        self._idle_task = None
        timeout = self._idle_timeout_ms()
        if timeout is None or self._speaking or self._active is not None:
            return
        end_ms = self._input_ms
        start_ms = max(self._buffer_start_ms, end_ms - timeout)
        item_id = new_id("item")
        logger.debug(f"Realtime emulator {self.id}: idle timeout at {end_ms:.0f} ms")
        self._emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "item_id": item_id,
                "audio_start_ms": int(round(start_ms)),
                "audio_end_ms": int(round(end_ms)),
            }
        )
        begin = self._buffer_offset(start_ms)
        cut = self._buffer_offset(end_ms)
        audio = bytes(self._buffer[begin:cut])
        del self._buffer[:cut]
        self._buffer_start_ms = end_ms
        self._commit(item_id, audio, end_ms - start_ms, transcribe=False)
        if (self._turn_detection() or {}).get("create_response", True):
            self._start_response("vad", {})

    def _buffer_offset(self, ms: float) -> int:
        fmt = self.input_format
        offset = int(round((ms - self._buffer_start_ms) * bytes_per_ms(fmt)))
        offset -= offset % SAMPLE_BYTES[fmt]
        return max(0, min(len(self._buffer), offset))

    # -- the user item and its transcription ---------------------------------------------

    def _commit(self, item_id: str, audio: bytes, audio_ms: float, transcribe: bool = True) -> None:
        previous = self._id_before(len(self.items))
        self._emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        item = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.items.append(item)
        self._item_meta[item_id] = ItemMeta(
            audio=audio, audio_format=self.input_format, audio_ms=audio_ms
        )
        for kind in ("conversation.item.added", "conversation.item.done"):
            self._emit_item(kind, item, previous)
        if transcribe and self.config["audio"]["input"].get("transcription") is not None:
            delay = self._emulator.transcription_delay_ms
            if delay > 0:
                self._spawn(self._transcribe_later(item_id, audio_ms, delay), "emulator-transcribe")
            else:
                self._transcribe(item_id, audio_ms)

    async def _transcribe_later(self, item_id: str, audio_ms: float, delay_ms: float) -> None:
        await asyncio.sleep(delay_ms / 1000)
        self._transcribe(item_id, audio_ms)

    def _transcribe(self, item_id: str, audio_ms: float) -> None:
        text = self._emulator._next_transcript(audio_ms)  # a failed turn uses its script up
        if self._transcription_failed(item_id):
            return
        item = self.item(item_id)
        if item is not None:
            item["content"][0]["transcript"] = text
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": text,
            }
        )
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
                "usage": transcription_usage(audio_ms, text),
            }
        )
