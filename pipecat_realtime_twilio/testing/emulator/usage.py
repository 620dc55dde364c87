#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Deterministic token usage, by the formulas in the package docstring."""

import math

from .records import EmulatedResponse, ItemMeta


def text_tokens(text: str | None) -> int:
    """Return the tokens of a text: ``ceil(len(text) / 4)``, 0 for no text."""
    return math.ceil(len(text) / 4) if text else 0


def input_audio_tokens(audio_ms: float) -> int:
    """Return the tokens of input audio: 10 per second (``ms * 10 // 1000``)."""
    return int(audio_ms) * 10 // 1000


def output_audio_tokens(audio_ms: float) -> int:
    """Return the tokens of output audio: 20 per second (``ms * 20 // 1000``)."""
    return int(audio_ms) * 20 // 1000


def _item_texts(item: dict) -> list[str]:
    kind = item.get("type")
    if kind == "message":
        texts = []
        for part in item.get("content") or []:
            if part.get("type") in ("input_text", "output_text"):
                texts.append(part.get("text") or "")
            elif part.get("type") == "output_audio":
                texts.append(part.get("transcript") or "")
        return texts
    if kind == "function_call":
        return [item.get("arguments") or ""]
    if kind == "function_call_output":
        return [item.get("output") or ""]
    return []


def conversation_input_tokens(
    instructions: str, context: list[dict], item_meta: dict[str, ItemMeta]
) -> tuple[int, int]:
    """Return the input tokens of a response: what the model "sees" when it starts.

    Args:
        instructions: The instructions in effect.
        context: The conversation items the response sees.
        item_meta: The emulator's record of every item (for the user audio's length).

    Returns:
        ``(audio_tokens, text_tokens)``.
    """
    audio_ms = sum(
        item_meta[i["id"]].audio_ms
        for i in context
        if i.get("id") in item_meta and i.get("role") == "user"
    )
    texts = text_tokens(instructions) + sum(
        text_tokens(text) for i in context for text in _item_texts(i)
    )
    return input_audio_tokens(audio_ms), texts


def response_usage(response: EmulatedResponse, audio_in: int, text_in: int) -> dict:
    """Return the ``usage`` object of ``response.done``.

    Args:
        response: The finished response (its audio and transcript as actually sent).
        audio_in: Its input audio tokens.
        text_in: Its input text tokens.

    Returns:
        The usage, cached tokens always 0.
    """
    audio_out = output_audio_tokens(response.audio_ms) if response.kind == "audio" else 0
    text_out = text_tokens(response.transcript) + text_tokens(response.arguments)
    input_tokens = audio_in + text_in
    output_tokens = audio_out + text_out
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def transcription_usage(audio_ms: float, transcript: str) -> dict:
    """Return the ``usage`` object of an input audio transcription.

    Args:
        audio_ms: Length of the transcribed audio.
        transcript: The transcript.

    Returns:
        Token usage: the audio in, the transcript out.
    """
    audio_tokens = input_audio_tokens(audio_ms)
    output_tokens = text_tokens(transcript)
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "output_tokens": output_tokens,
        "total_tokens": audio_tokens + output_tokens,
        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
    }
