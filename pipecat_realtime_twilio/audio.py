#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""G.711 audio (μ-law and A-law) for an 8 kHz phone line.

Twilio Media Streams carry 8 kHz μ-law, and the OpenAI Realtime API can speak
``audio/pcmu`` in both directions, so the bytes never need to change. Pipecat
processors work on 16-bit PCM, so the pipeline decodes μ-law on the way in and
encodes on the way out. The tables below make that round trip the identity on
all 256 μ-law codes: ``encode(decode(x)) == x``. (The textbook decoder maps both
zero codes, 0xFF and 0x7F, to 0; here 0x7F, "negative zero", decodes to -1,
which the encoder maps back to 0x7F. The two are inaudibly different.)

A-law (``audio/pcma`` in the Realtime API) is the textbook G.711 codec, equal to
CPython's ``audioop`` in both directions; it has no negative zero, so its round
trip is the identity on all 256 codes as it stands.
"""

import numpy as np

SAMPLE_RATE = 8000
"""Phone-line sample rate in Hz."""

BYTES_PER_MS = SAMPLE_RATE // 1000
"""μ-law bytes per millisecond of audio (one byte per sample)."""

FRAME_MS = 20
"""Duration of one Twilio media packet in milliseconds."""

FRAME_BYTES = FRAME_MS * BYTES_PER_MS
"""μ-law bytes in one 20 ms Twilio media packet."""

ULAW_SILENCE = 0xFF
"""The μ-law code for a zero sample."""

ALAW_SILENCE = 0xD5
"""The A-law code for a zero sample."""

_BIAS = 0x84
_CLIP_14 = 8159
_ULAW_SEGMENT_ENDS = np.array(
    [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32
)
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32)
"""Every 16-bit sample, in numeric order."""


def _encode_table(codes: np.ndarray) -> np.ndarray:
    """Turn the codes of ``_ALL_SAMPLES`` (in numeric order) into an encoder lookup table."""
    # Index by the sample's bit pattern read as unsigned: 0..32767, then -32768..-1.
    return np.roll(codes.astype(np.uint8), -32768)


def _build_ulaw_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    table = np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)
    table[0x7F] = -1  # negative zero keeps its own code through a round trip
    return table


def _build_ulaw_encode_table() -> np.ndarray:
    # The classic G.711 encoder (as in CPython's audioop) on the 14 high bits.
    samples = _ALL_SAMPLES >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _CLIP_14) + (_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude)
    codes = ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask
    codes = np.where(segment >= 8, 0x7F ^ mask, codes)  # full scale
    codes[32768 - 1] = 0x7F  # -1 is the negative zero (see the module docstring)
    return _encode_table(codes)


def _build_alaw_decode_table() -> np.ndarray:
    # The classic G.711 A-law decoder (as in Sun's g711.c / CPython's audioop).
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (codes & 0x70) >> 4
    magnitude = ((codes & 0x0F) << 4) + np.where(segment == 0, 8, 0x108)
    magnitude = np.where(segment > 1, magnitude << np.maximum(segment - 1, 0), magnitude)
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


def _build_alaw_encode_table() -> np.ndarray:
    # The classic G.711 A-law encoder on the 13 high bits.
    samples = _ALL_SAMPLES >> 3
    mask = np.where(samples >= 0, 0xD5, 0x55)
    value = np.where(samples >= 0, samples, -samples - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, value)
    shift = np.where(segment < 2, 1, segment)
    codes = (np.minimum(segment, 7) << 4) | ((value >> shift) & 0x0F)
    return _encode_table(np.where(segment >= 8, 0x7F ^ mask, codes ^ mask))  # full scale


_ULAW_DECODE = _build_ulaw_decode_table()
_ULAW_ENCODE = _build_ulaw_encode_table()
_ALAW_DECODE = _build_alaw_decode_table()
_ALAW_ENCODE = _build_alaw_encode_table()


def _decode(table: np.ndarray, codes: bytes) -> bytes:
    """Decode one-byte G.711 codes to PCM16 through a 256-entry table."""
    return table[np.frombuffer(codes, dtype=np.uint8)].tobytes()


def _encode(table: np.ndarray, pcm: bytes) -> bytes:
    """Encode PCM16 to one-byte G.711 codes through a 65536-entry table.

    A trailing odd byte is ignored.
    """
    usable = len(pcm) - (len(pcm) & 1)
    return table[np.frombuffer(pcm, dtype=np.uint16, count=usable // 2)].tobytes()


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode μ-law bytes to 16-bit little-endian PCM at the same rate.

    Args:
        ulaw: μ-law encoded samples, one byte each.

    Returns:
        PCM16 samples, two bytes each.
    """
    return _decode(_ULAW_DECODE, ulaw)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian PCM to μ-law bytes at the same rate.

    Args:
        pcm: PCM16 samples, two bytes each (a trailing odd byte is ignored).

    Returns:
        μ-law encoded samples, one byte each.
    """
    return _encode(_ULAW_ENCODE, pcm)


def alaw_to_pcm16(alaw: bytes) -> bytes:
    """Decode G.711 A-law bytes to 16-bit little-endian PCM at the same rate.

    Args:
        alaw: A-law encoded samples, one byte each.

    Returns:
        PCM16 samples, two bytes each.
    """
    return _decode(_ALAW_DECODE, alaw)


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian PCM to G.711 A-law bytes at the same rate.

    Args:
        pcm: PCM16 samples, two bytes each (a trailing odd byte is ignored).

    Returns:
        A-law encoded samples, one byte each.
    """
    return _encode(_ALAW_ENCODE, pcm)
