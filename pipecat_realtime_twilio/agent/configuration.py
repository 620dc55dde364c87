#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a Realtime session is opened with: the connection, and the session for a phone line."""

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from openai.types.realtime.audio_transcription import AudioTranscription
from openai.types.realtime.noise_reduction_type import NoiseReductionType
from openai.types.realtime.realtime_audio_config_input import (
    NoiseReduction,
    RealtimeAudioConfigInput,
)
from openai.types.realtime.realtime_audio_formats import AudioPCMU
from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad
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

TurnDetection = ServerVad | SemanticVad
"""Server turn detection, as the ``openai`` package types it: server VAD or semantic VAD."""

PipecatTurnDetection = events.TurnDetection | events.SemanticTurnDetection
"""Pipecat's models of the same (they lack ``idle_timeout_ms`` and some more)."""

SERVER_VAD_SILENCE_MS = 500
"""The silence that ends a turn under server VAD when ``silence_duration_ms`` is unset."""


def connection(
    api_key: str | None, base_url: str | None, model: str | None
) -> tuple[str, str, str]:
    """The key, URL and model to connect with: as given, else from the settings.

    Args:
        api_key: The API key, or None for ``OPENAI_API_KEY``.
        base_url: The websocket URL, or None for ``OPENAI_REALTIME_URL``.
        model: The model, or None for ``OPENAI_REALTIME_MODEL``.

    Returns:
        ``(api_key, base_url, model)``; a URL other than OpenAI's or Azure's (a local
        emulator, a keyless gateway) needs no key.

    Raises:
        SettingsError: If no API key is given or configured for OpenAI's own URL or
            an Azure OpenAI one (:func:`is_azure_url`).
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
        elif is_azure_url(base_url):
            raise SettingsError("OPENAI_API_KEY is not set: Azure OpenAI needs the resource's key")
        else:
            api_key = _NO_KEY_NEEDED
    return api_key, base_url, model


AZURE_HOST_SUFFIXES = (
    ".openai.azure.com",
    ".cognitiveservices.azure.com",
    ".services.ai.azure.com",
)
"""Hosts of Azure OpenAI resources (Azure OpenAI, AI Services, AI Foundry)."""


def is_azure_url(url: str) -> bool:
    """Whether ``url`` is an Azure OpenAI endpoint, which takes its key as ``api-key``.

    Args:
        url: A Realtime websocket URL.

    Returns:
        True for an Azure host (:data:`AZURE_HOST_SUFFIXES`), or for any host with a
        path under ``/openai/`` (Azure's layout, so that a local emulator can stand in).
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return host.endswith(AZURE_HOST_SUFFIXES) or parts.path.startswith("/openai/")


def realtime_url(base_url: str, model: str) -> str:
    """The URL to open a session at: ``base_url`` with ``model=<model>`` in its query.

    The URL's own query is kept as it is; ``model`` is added only when the query
    names neither ``model`` nor ``deployment`` (an Azure URL may name the deployment
    itself, e.g. ``?api-version=...&deployment=...``).

    Args:
        base_url: The websocket URL, with or without a query.
        model: The model (on Azure: the deployment's name).

    Returns:
        The URL.
    """
    parts = urlsplit(base_url)
    names = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if names & {"model", "deployment"}:
        return base_url
    added = urlencode({"model": model})
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query))


def typed_turn_detection(
    turn_detection: TurnDetection | PipecatTurnDetection | None,
) -> TurnDetection:
    """The ``openai`` model of a turn detection setting.

    Args:
        turn_detection: ``ServerVad`` or ``SemanticVad``; Pipecat's ``TurnDetection`` or
            ``SemanticTurnDetection`` (converted); None: server VAD with the API's defaults.

    Returns:
        The setting as ``ServerVad`` or ``SemanticVad``.
    """
    if turn_detection is None:
        return ServerVad(type="server_vad")
    if isinstance(turn_detection, (ServerVad, SemanticVad)):
        return turn_detection
    values = turn_detection.model_dump(exclude_none=True)
    if isinstance(turn_detection, events.SemanticTurnDetection):
        return SemanticVad.model_validate({**values, "type": "semantic_vad"})
    return ServerVad.model_validate({**values, "type": "server_vad"})


def vad_silence_ms(turn_detection: TurnDetection) -> int:
    """The silence the server waits for before ``speech_stopped`` (0 for semantic VAD).

    Args:
        turn_detection: The session's turn detection.

    Returns:
        Milliseconds: ``silence_duration_ms``, else the API's default (server VAD only).
    """
    if isinstance(turn_detection, SemanticVad):
        return 0
    silence = turn_detection.silence_duration_ms
    return SERVER_VAD_SILENCE_MS if silence is None else silence


def phone_audio_input(
    *,
    turn_detection: TurnDetection,
    noise_reduction: NoiseReductionType | None,
    transcription_model: str | None,
    transcription_language: str | None,
) -> RealtimeAudioConfigInput:
    """The input audio of a phone call (``session.audio.input``): 8 kHz μ-law, in full.

    Args:
        turn_detection: Server turn detection.
        noise_reduction: ``"near_field"`` or ``"far_field"``; None: none.
        transcription_model: The model that transcribes the caller; None: no transcript.
        transcription_language: The caller's language (ISO-639-1, e.g. ``"en"``), if known.

    Returns:
        openai's model of the section, as sent in ``session.update``.
    """
    return RealtimeAudioConfigInput(
        format=AudioPCMU(type="audio/pcmu"),
        turn_detection=turn_detection,
        noise_reduction=NoiseReduction(type=noise_reduction) if noise_reduction else None,
        transcription=(
            AudioTranscription(model=transcription_model, language=transcription_language)
            if transcription_model
            else None
        ),
    )


def phone_session(
    *,
    voice: str,
    speed: float | None,
    audio_input: RealtimeAudioConfigInput,
    tools: ToolsSchema | None,
) -> events.SessionProperties:
    """The session of a phone call: audio only, 8 kHz μ-law (``audio/pcmu``) both ways.

    Pipecat's models cannot hold all of ``audio_input`` (``idle_timeout_ms``, for one):
    the session properties get what Pipecat reads of it, and the ``session.update``
    carries ``audio_input`` itself
    (:meth:`~pipecat_realtime_twilio.agent.guard.SessionGuard.send_client_event`).

    Args:
        voice: The Realtime voice.
        speed: Speaking speed (0.25 to 1.5), or None for the model's.
        audio_input: The input audio section (:func:`phone_audio_input`).
        tools: The tools' schema, if any.

    Returns:
        The session properties Pipecat keeps and sends in ``session.update``.
    """
    transcription = audio_input.transcription
    noise_reduction = audio_input.noise_reduction
    pipecat_input = events.AudioInput(
        format=events.PCMUAudioFormat(),
        turn_detection=_pipecat_turn_detection(audio_input.turn_detection),
        transcription=(
            events.InputAudioTranscription(
                model=transcription.model, language=transcription.language
            )
            if transcription is not None and transcription.model
            else None
        ),
        noise_reduction=(
            events.InputAudioNoiseReduction(type=noise_reduction.type)
            if noise_reduction is not None
            else None
        ),
    )
    audio_output = events.AudioOutput(format=events.PCMUAudioFormat(), voice=voice, speed=speed)
    return events.SessionProperties(
        output_modalities=["audio"],
        audio=events.AudioConfiguration(input=pipecat_input, output=audio_output),
        tools=tools,
    )


def _pipecat_turn_detection(turn_detection: TurnDetection | None) -> PipecatTurnDetection | bool:
    """Pipecat's model of a turn detection setting (False: none, as Pipecat says it)."""
    if turn_detection is None:
        return False
    if isinstance(turn_detection, SemanticVad):
        keep = {"eagerness", "create_response", "interrupt_response"}
        return events.SemanticTurnDetection(
            **turn_detection.model_dump(include=keep, exclude_none=True)
        )
    keep = {"threshold", "prefix_padding_ms", "silence_duration_ms"}
    return events.TurnDetection(**turn_detection.model_dump(include=keep, exclude_none=True))
