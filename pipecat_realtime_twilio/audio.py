#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""G.711 μ-law audio for an 8 kHz phone line.

Twilio Media Streams carry 8 kHz μ-law, and the OpenAI Realtime API can speak
``audio/pcmu`` in both directions, so the bytes never need to change. Pipecat
processors work on 16-bit PCM, so the pipeline decodes μ-law on the way in and
encodes on the way out. The tables below make that round trip the identity on
all 256 μ-law codes: ``encode(decode(x)) == x``. (The textbook decoder maps both
zero codes, 0xFF and 0x7F, to 0; here 0x7F, "negative zero", decodes to -1,
which the encoder maps back to 0x7F. The two are inaudibly different.)
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

_BIAS = 0x84
_CLIP_14 = 8159
_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    table = np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)
    table[0x7F] = -1  # negative zero keeps its own code through a round trip
    return table


def _build_encode_table() -> np.ndarray:
    # The classic G.711 encoder (as in CPython's audioop) on the 14 high bits.
    samples = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _CLIP_14) + (_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude)
    codes = ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask
    codes = np.where(segment >= 8, 0x7F ^ mask, codes)  # full scale
    codes[32768 - 1] = 0x7F  # -1 is the negative zero (see the module docstring)
    # Index by the sample's bit pattern read as unsigned: 0..32767, then -32768..-1.
    return np.roll(codes.astype(np.uint8), -32768)


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode μ-law bytes to 16-bit little-endian PCM at the same rate.

    Args:
        ulaw: μ-law encoded samples, one byte each.

    Returns:
        PCM16 samples, two bytes each.
    """
    return _DECODE[np.frombuffer(ulaw, dtype=np.uint8)].tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian PCM to μ-law bytes at the same rate.

    Args:
        pcm: PCM16 samples, two bytes each (a trailing odd byte is ignored).

    Returns:
        μ-law encoded samples, one byte each.
    """
    usable = len(pcm) - (len(pcm) & 1)
    return _ENCODE[np.frombuffer(pcm, dtype=np.uint16, count=usable // 2)].tobytes()


def ulaw_duration_ms(num_bytes: int) -> float:
    """Return how many milliseconds ``num_bytes`` of 8 kHz μ-law last."""
    return num_bytes / BYTES_PER_MS
