#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a Realtime session is opened with: the connection, and the session for a phone line."""

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.services.openai.realtime import events

from pipecat_realtime_twilio.settings import DEFAULT_REALTIME_URL, SettingsError, current_settings

DEFAULT_VOICE = "marin"
"""The Realtime voice of a bot that names none."""

DEFAULT_TRANSCRIPTION_MODEL = "gpt-realtime-whisper"
"""The model that transcribes the caller, unless a bot names another: a streaming
model made for Realtime sessions, with no announced shutdown (``gpt-4o-mini-transcribe``
and the other ``gpt-4o-*-transcribe`` and ``whisper-1`` models shut down on 2027-02-26)."""

_NO_KEY_NEEDED = "no-key-needed"

TurnDetection = events.TurnDetection | events.SemanticTurnDetection
"""Server turn detection: server VAD or semantic VAD."""


def connection(
    api_key: str | None, base_url: str | None, model: str | None
) -> tuple[str, str, str]:
    """The key, URL and model to connect with: as given, else from the settings.

    Args:
        api_key: The API key, or None for ``OPENAI_API_KEY``.
        base_url: The websocket URL, or None for ``OPENAI_REALTIME_URL``.
        model: The model, or None for ``OPENAI_REALTIME_MODEL``.

    Returns:
        ``(api_key, base_url, model)``; a URL other than OpenAI's (a local emulator,
        a keyless gateway) needs no key.

    Raises:
        SettingsError: If no API key is given or configured for OpenAI's own URL.
    """
    if api_key is not None and base_url is not None and model is not None:
        return api_key, base_url, model
    settings = current_settings()
    base_url = base_url or settings.openai_realtime_url
    model = model or settings.openai_realtime_model
    if api_key is None:
        if settings.openai_api_key is not None:
            api_key = settings.openai_api_key.get_secret_value()
        elif base_url.rstrip("/") == DEFAULT_REALTIME_URL:
            raise SettingsError("OPENAI_API_KEY is not set: the Realtime API needs a key")
        else:
            api_key = _NO_KEY_NEEDED
    return api_key, base_url, model


def phone_session(
    *,
    voice: str,
    speed: float | None,
    turn_detection: TurnDetection,
    transcription_model: str | None,
    tools: ToolsSchema | None,
) -> events.SessionProperties:
    """The session of a phone call: audio only, 8 kHz μ-law (``audio/pcmu``) both ways.

    Args:
        voice: The Realtime voice.
        speed: Speaking speed (0.25 to 1.5), or None for the model's.
        turn_detection: Server turn detection.
        transcription_model: The model that transcribes the caller; None: no transcript.
        tools: The tools' schema, if any.

    Returns:
        The session properties to send in ``session.update``.
    """
    audio_input = events.AudioInput(
        format=events.PCMUAudioFormat(),
        turn_detection=turn_detection,
        transcription=(
            events.InputAudioTranscription(model=transcription_model)
            if transcription_model
            else None
        ),
    )
    audio_output = events.AudioOutput(format=events.PCMUAudioFormat(), voice=voice, speed=speed)
    return events.SessionProperties(
        output_modalities=["audio"],
        audio=events.AudioConfiguration(input=audio_input, output=audio_output),
        tools=tools,
    )
