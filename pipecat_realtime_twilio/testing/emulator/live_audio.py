#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Audio in the Live WebSocket formats: G.711 at 8 kHz, 16-bit PCM at 16 or 24 kHz.

The formats are ``audio/pcmu`` and ``audio/pcma`` (8 kHz) and ``audio/pcm`` (16-bit
little-endian, 16000 or 24000 Hz). One format serves both directions, chosen by
``session.start`` (``audio.format``); without one the session uses ``audio/pcm`` at
24 kHz. Scripted replies are 8 kHz
μ-law: ``audio/pcmu`` sends them unchanged (bit-exact), ``audio/pcma`` transcodes,
``audio/pcm`` upsamples by linear interpolation.
"""

import numpy as np

from ...audio import ALAW_SILENCE, SAMPLE_RATE, pcm16_to_alaw, ulaw_to_pcm16
from .audio import decode_audio

DEFAULT_LIVE_FORMAT = {"type": "audio/pcm", "rate": 24000}
"""The format of a session whose ``session.start`` names none."""

_ULAW_SILENCE = b"\xff"


def format_of(config: dict | None) -> tuple[str, int]:
    """Return ``(type, rate)`` of a ``session.audio.format`` object (the default if absent).

    Args:
        config: The format object, e.g. ``{"type": "audio/pcmu", "rate": 8000}``.

    Returns:
        The format type and its sample rate.
    """
    fmt = config if isinstance(config, dict) else DEFAULT_LIVE_FORMAT
    kind = str(fmt.get("type", "audio/pcm"))
    rate = fmt.get("rate")
    return kind, int(rate) if isinstance(rate, int) else SAMPLE_RATE


def bytes_per_ms(kind: str, rate: int) -> int:
    """Return how many bytes one millisecond of audio takes.

    Args:
        kind: The format type.
        rate: The sample rate.

    Returns:
        8 for G.711, ``rate * 2 / 1000`` for PCM.
    """
    return rate * 2 // 1000 if kind == "audio/pcm" else rate // 1000


def sample_bytes(kind: str) -> int:
    """Return the bytes per sample of a format: 2 for PCM, 1 for G.711."""
    return 2 if kind == "audio/pcm" else 1


def decode_live(data: bytes, kind: str) -> np.ndarray:
    """Decode Live audio to int16 samples at the format's rate.

    Args:
        data: The audio (PCM must be a whole number of samples).
        kind: The format type.

    Returns:
        The samples as a 1-D ``int16`` array.
    """
    if kind == "audio/pcm":
        return np.frombuffer(data, dtype="<i2", count=len(data) // 2).astype(np.int16)
    return decode_audio(data, kind)


def encode_ulaw_live(ulaw: bytes, kind: str, rate: int) -> bytes:
    """Convert 8 kHz μ-law audio to a Live format.

    Args:
        ulaw: 8 kHz μ-law audio.
        kind: The target format type.
        rate: The target sample rate (PCM: 16000 or 24000).

    Returns:
        The audio in that format; ``audio/pcmu`` is ``ulaw`` unchanged.
    """
    if kind == "audio/pcmu":
        return bytes(ulaw)
    pcm = ulaw_to_pcm16(ulaw)
    if kind == "audio/pcma":
        return pcm16_to_alaw(pcm)
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    if len(samples) == 0:
        return b""
    factor = rate // SAMPLE_RATE
    positions = np.arange(len(samples) * factor) / factor
    upsampled = np.interp(positions, np.arange(len(samples)), samples)
    return np.round(upsampled).astype("<i2").tobytes()


def silence(kind: str, rate: int, ms: int) -> bytes:
    """Return ``ms`` milliseconds of digital silence in a Live format.

    Args:
        kind: The format type.
        rate: The sample rate.
        ms: The duration.

    Returns:
        μ-law ``0xFF``, A-law ``0xD5`` or PCM zeros.
    """
    count = ms * bytes_per_ms(kind, rate)
    if kind == "audio/pcmu":
        return _ULAW_SILENCE * count
    if kind == "audio/pcma":
        return bytes([ALAW_SILENCE]) * count
    return bytes(count)
