"""Guards for the private Pipecat behaviour RealtimeAgent overrides.

pyproject pins pipecat-ai to the 1.14 line. If an upgrade renames or reshapes
one of these, this file fails loudly instead of a call failing quietly.
"""

import inspect

from pipecat.services.openai.realtime.llm import CurrentAudioResponse, OpenAIRealtimeLLMService

from pipecat_realtime_twilio.realtime import RealtimeAgent

OVERRIDDEN = [
    "_connect",
    "_disconnect",
    "_send_user_audio",
    "_handle_evt_audio_delta",
    "_calculate_audio_duration_ms",
    "_handle_evt_session_created",
    "_handle_evt_session_updated",
    "_handle_evt_audio_transcript_delta",
    "_handle_evt_response_done",
    "handle_evt_input_audio_transcription_completed",
]


def test_overridden_methods_still_exist_in_pipecat():
    for name in OVERRIDDEN:
        base = getattr(OpenAIRealtimeLLMService, name, None)
        assert inspect.iscoroutinefunction(base) or callable(base), name
        assert getattr(RealtimeAgent, name) is not base, f"{name} is not overridden"


def test_receive_loop_dispatches_the_events_we_override():
    source = inspect.getsource(OpenAIRealtimeLLMService._receive_task_handler)
    for event, handler in [
        ("session.created", "_handle_evt_session_created"),
        ("session.updated", "_handle_evt_session_updated"),
        ("response.output_audio.delta", "_handle_evt_audio_delta"),
        ("response.output_audio_transcript.delta", "_handle_evt_audio_transcript_delta"),
        ("response.done", "_handle_evt_response_done"),
        (
            "conversation.item.input_audio_transcription.completed",
            "handle_evt_input_audio_transcription_completed",
        ),
    ]:
        assert f'"{event}"' in source and handler in source, event


def test_state_the_agent_relies_on():
    source = inspect.getsource(OpenAIRealtimeLLMService)
    for attribute in [
        "self._context",
        "self._llm_needs_conversation_setup",
        "self._api_session_ready",
        "self._response_active",
        "self._current_audio_response",
        "self._websocket",
        "self._resampler",
    ]:
        assert attribute in source, attribute
    truncate = inspect.getsource(OpenAIRealtimeLLMService._truncate_current_audio_response)
    assert "_calculate_audio_duration_ms(current.total_size)" in truncate
    assert {"item_id", "content_index", "start_time_ms", "total_size", "response_id"} <= set(
        CurrentAudioResponse.__dataclass_fields__
    )
