#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Caller speech and recordings: tones, silence and WAV files as 8 kHz μ-law."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np

from pipecat_realtime_twilio.audio import (
    BYTES_PER_MS,
    SAMPLE_RATE,
    ULAW_SILENCE,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)


def _ms_to_bytes(ms: float) -> int:
    return int(round(ms * BYTES_PER_MS))


def tone(ms: float, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    """Make a sine tone as 8 kHz μ-law, e.g. to stand in for caller speech.

    Args:
        ms: Duration in milliseconds.
        freq: Frequency in Hz.
        amplitude: Peak amplitude as a 16-bit PCM value (0..32767).

    Returns:
        The μ-law encoded tone, ``ms * 8`` bytes.
    """
    n = _ms_to_bytes(ms)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    pcm = np.clip(np.round(amplitude * np.sin(2 * np.pi * freq * t)), -32768, 32767)
    return pcm16_to_ulaw(pcm.astype("<i2").tobytes())


def silence(ms: float) -> bytes:
    """Make μ-law silence (code 0xFF).

    Args:
        ms: Duration in milliseconds.

    Returns:
        ``ms * 8`` bytes of μ-law silence.
    """
    return bytes([ULAW_SILENCE]) * _ms_to_bytes(ms)


_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _read_riff(path: str | Path) -> tuple[int, int, int, int, bytes]:
    """Read a WAV file's format and data chunks without the `wave` module.

    Python's `wave` module only reads integer PCM, so μ-law and
    ``WAVE_FORMAT_EXTENSIBLE`` files are read here.

    Returns:
        ``(format_tag, channels, sample_rate, bits_per_sample, data)``.
    """
    raw = Path(path).read_bytes()
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    data: bytes | None = None
    while pos + 8 <= len(raw):
        chunk_id = raw[pos : pos + 4]
        (size,) = struct.unpack_from("<I", raw, pos + 4)
        body = raw[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise ValueError(f"{path}: truncated fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack_from("<H", body, 24)  # first field of the SubFormat GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise ValueError(f"{path}: missing fmt or data chunk")
    return (*fmt, data)


def _resample_linear(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    if rate == new_rate or len(samples) == 0:
        return samples
    n_out = int(round(len(samples) * new_rate / rate))
    positions = np.arange(n_out, dtype=np.float64) * (rate / new_rate)
    return np.interp(positions, np.arange(len(samples), dtype=np.float64), samples)


def load_wav_as_ulaw(path: str | Path) -> bytes:
    """Load a WAV file as 8 kHz mono μ-law, ready for `TwilioCaller.say`.

    Reads integer PCM (8, 16 or 32 bit) with the stdlib `wave` module and
    μ-law WAV files with a small RIFF reader, at any sample rate and channel
    count. Channels are averaged to mono and other rates are resampled to
    8 kHz by linear interpolation. An 8 kHz mono μ-law file is returned
    byte for byte.

    Args:
        path: The WAV file to read.

    Returns:
        The audio as 8 kHz μ-law bytes.

    Raises:
        ValueError: If the file is not a WAV file in a supported encoding.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            tag = _WAVE_FORMAT_PCM
            channels = wav.getnchannels()
            rate = wav.getframerate()
            bits = wav.getsampwidth() * 8
            data = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError):
        tag, channels, rate, bits, data = _read_riff(path)

    if channels < 1 or rate < 1:
        raise ValueError(f"{path}: invalid WAV header ({channels} channels, {rate} Hz)")
    if tag == _WAVE_FORMAT_MULAW and bits == 8:
        if channels == 1 and rate == SAMPLE_RATE:
            return bytes(data)
        frames = len(data) // channels
        pcm = np.frombuffer(ulaw_to_pcm16(data[: frames * channels]), dtype="<i2")
        samples = pcm.astype(np.float64)
    elif tag == _WAVE_FORMAT_PCM and bits in (8, 16, 32):
        width = bits // 8
        frames = len(data) // (width * channels)
        data = data[: frames * width * channels]
        if bits == 8:
            samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
        elif bits == 16:
            samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
        else:
            samples = np.frombuffer(data, dtype="<i4").astype(np.float64) / 65536.0
    else:
        raise ValueError(
            f"{path}: unsupported WAV encoding (format tag {tag:#06x}, {bits} bits); "
            "use 8/16/32-bit PCM or 8-bit μ-law"
        )
    mono = samples.reshape(-1, channels).mean(axis=1)
    resampled = _resample_linear(mono, rate, SAMPLE_RATE)
    pcm16 = np.clip(np.round(resampled), -32768, 32767).astype("<i2")
    return pcm16_to_ulaw(pcm16.tobytes())


def write_ulaw_wav(path: str | Path, ulaw: bytes) -> None:
    """Write μ-law audio as a 16-bit PCM, 8 kHz, mono WAV file (e.g. `TwilioCaller.heard`).

    Args:
        path: Where to write the file.
        ulaw: 8 kHz μ-law audio.
    """
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(ulaw_to_pcm16(bytes(ulaw)))
