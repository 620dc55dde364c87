#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Audio in the Realtime API formats: decoding, encoding, durations and synthetic speech.

The emulator works in three formats: ``audio/pcmu`` (8 kHz μ-law), ``audio/pcma``
(8 kHz A-law) and ``audio/pcm`` (24 kHz 16-bit little-endian PCM). Scripted replies
are 8 kHz μ-law, converted to the session's output format when sent.
"""

import base64
import binascii
import zlib
from typing import Any

import numpy as np

from ...audio import (
    BYTES_PER_MS,
    SAMPLE_RATE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

PCM_RATE = 24000
"""Sample rate of the ``audio/pcm`` format."""

FORMAT_RATES = {"audio/pcmu": SAMPLE_RATE, "audio/pcma": SAMPLE_RATE, "audio/pcm": PCM_RATE}
"""Sample rate of each supported format, in Hz."""

SAMPLE_BYTES = {"audio/pcmu": 1, "audio/pcma": 1, "audio/pcm": 2}
"""Bytes per sample of each supported format."""


def format_type(fmt: Any) -> str:
    """Return the format name of a session's ``format`` object.

    Args:
        fmt: A format object such as ``{"type": "audio/pcmu"}`` (or anything else).

    Returns:
        Its ``type`` if it is a supported format, else ``"audio/pcm"``.
    """
    if isinstance(fmt, dict) and fmt.get("type") in FORMAT_RATES:
        return fmt["type"]
    return "audio/pcm"


def bytes_per_ms(fmt: str) -> int:
    """Return how many bytes one millisecond of audio takes in ``fmt``."""
    return FORMAT_RATES[fmt] * SAMPLE_BYTES[fmt] // 1000


def audio_duration_ms(num_bytes: int, fmt: str) -> float:
    """Return how many milliseconds ``num_bytes`` of audio in ``fmt`` last."""
    return num_bytes / bytes_per_ms(fmt)


def decode_base64_audio(text: str) -> bytes | None:
    """Decode base64 audio strictly, as the server does.

    Args:
        text: The base64 text of an ``audio`` field.

    Returns:
        The bytes, or None if ``text`` isn't valid base64.
    """
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_audio(data: bytes, fmt: str) -> np.ndarray:
    """Decode audio in a Realtime API format to int16 samples at the format's rate.

    Args:
        data: Encoded audio (``audio/pcm`` must be a whole number of samples).
        fmt: ``"audio/pcmu"``, ``"audio/pcma"`` (8 kHz) or ``"audio/pcm"`` (24 kHz PCM16).

    Returns:
        The samples as a 1-D ``int16`` array (8 kHz or 24 kHz).
    """
    if fmt == "audio/pcmu":
        return np.frombuffer(ulaw_to_pcm16(data), dtype=np.int16)
    if fmt == "audio/pcma":
        return np.frombuffer(alaw_to_pcm16(data), dtype=np.int16)
    if fmt == "audio/pcm":
        return np.frombuffer(data, dtype="<i2", count=len(data) // 2).astype(np.int16)
    raise ValueError(f"unsupported audio format: {fmt!r}")


def encode_ulaw_as(ulaw: bytes, fmt: str) -> bytes:
    """Convert 8 kHz μ-law audio to a Realtime API output format.

    ``audio/pcmu`` is returned unchanged (bit-exact). ``audio/pcma`` is transcoded
    through PCM16. ``audio/pcm`` is decoded and upsampled to 24 kHz by linear
    interpolation.

    Args:
        ulaw: 8 kHz μ-law audio.
        fmt: The target format.

    Returns:
        The audio in ``fmt``.
    """
    if fmt == "audio/pcmu":
        return bytes(ulaw)
    pcm = ulaw_to_pcm16(ulaw)
    if fmt == "audio/pcma":
        return pcm16_to_alaw(pcm)
    if fmt == "audio/pcm":
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        if len(samples) == 0:
            return b""
        factor = PCM_RATE // SAMPLE_RATE
        positions = np.arange(len(samples) * factor) / factor
        upsampled = np.interp(positions, np.arange(len(samples)), samples)
        return np.round(upsampled).astype("<i2").tobytes()
    raise ValueError(f"unsupported audio format: {fmt!r}")


def speech_duration_ms(text: str) -> int:
    """Return the default length of synthesized speech for ``text``.

    Args:
        text: The words to speak.

    Returns:
        About 60 ms per character, at least 400 ms.
    """
    return max(400, 60 * len(text))


def synthesize_speech(text: str, duration_ms: int | None = None) -> bytes:
    """Synthesize deterministic, speech-like 8 kHz μ-law audio for ``text``.

    The waveform is a voiced tone (a fundamental between 110 and 170 Hz picked
    from the text, plus two harmonics) under a syllable-rate (4 Hz) amplitude
    envelope that never drops below about a third of full level, so every 20 ms
    window carries energy well above a typical VAD threshold.

    Args:
        text: The words to "speak"; only used to pick the pitch and default length.
        duration_ms: Length of the audio; defaults to ``speech_duration_ms(text)``.

    Returns:
        μ-law bytes at 8 kHz, ``duration_ms * 8`` of them.
    """
    if duration_ms is None:
        duration_ms = speech_duration_ms(text)
    n = max(0, int(duration_ms)) * BYTES_PER_MS
    t = np.arange(n) / SAMPLE_RATE
    f0 = 110 + zlib.crc32(text.encode()) % 60
    voiced = (
        np.sin(2 * np.pi * f0 * t)
        + 0.5 * np.sin(2 * np.pi * 2 * f0 * t + 0.3)
        + 0.25 * np.sin(2 * np.pi * 3 * f0 * t + 0.7)
    )
    envelope = 0.35 + 0.65 * np.abs(np.sin(np.pi * 4 * t))
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / 40.0)  # 5 ms fades
    ramp = np.maximum(ramp, 0.2)
    pcm = np.round(5000 * voiced * envelope * ramp).astype(np.int16)
    return pcm16_to_ulaw(pcm.tobytes())
