"""Guards for the private Pipecat behaviour RealtimeAgent overrides.

pyproject pins pipecat-ai to the 1.14 line. If an upgrade renames or reshapes
one of these, this file fails loudly instead of a call failing quietly.
"""

import inspect

from pipecat.services.openai.realtime.llm import CurrentAudioResponse, OpenAIRealtimeLLMService
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketTransport,
)

from pipecat_realtime_twilio.agent.realtime import RealtimeAgent
from pipecat_realtime_twilio.phone.output import TwilioOutputTransport

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
    "_handle_evt_speech_started",
    "_handle_evt_speech_stopped",
    "_handle_evt_response_created",
    "_truncate_current_audio_response",
    "_create_response",
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
        ("response.created", "_handle_evt_response_created"),
        ("input_audio_buffer.speech_started", "_handle_evt_speech_started"),
        ("input_audio_buffer.speech_stopped", "_handle_evt_speech_stopped"),
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
        "self._response_create_owed",
    ]:
        assert attribute in source, attribute
    truncate = inspect.getsource(OpenAIRealtimeLLMService._truncate_current_audio_response)
    assert "_calculate_audio_duration_ms(current.total_size)" in truncate
    assert {"item_id", "content_index", "start_time_ms", "total_size", "response_id"} <= set(
        CurrentAudioResponse.__dataclass_fields__
    )


def test_interruptions_and_function_results_reach_what_we_override():
    # An InterruptionFrame from upstream truncates through _truncate_current_audio_response,
    # and a function result asks for a response through _create_response.
    interruption = inspect.getsource(OpenAIRealtimeLLMService._handle_interruption)
    assert "_truncate_current_audio_response()" in interruption
    done = inspect.getsource(OpenAIRealtimeLLMService._handle_evt_response_done)
    assert "_create_response()" in done


def test_phone_output_overrides_still_fit_pipecat():
    # TwilioOutputTransport replaces the transport's output and hooks these private parts.
    for name in ("_handle_frame", "_write_frame"):
        assert name in vars(BaseOutputTransport) or name in vars(FastAPIWebsocketOutputTransport)
        assert name in vars(TwilioOutputTransport)
    init = inspect.getsource(FastAPIWebsocketTransport.__init__)
    for attribute in ("self._client", "self._output", "self._output_name", "self._params"):
        assert attribute in init, attribute
    process = inspect.getsource(BaseOutputTransport.process_frame)
    assert "await self._handle_frame(frame)" in process
    interruption = inspect.getsource(FastAPIWebsocketOutputTransport.process_frame)
    assert "await self._write_frame(frame)" in interruption


def test_our_receive_loop_dispatches_exactly_what_pipecats_does():
    import re

    from pipecat_realtime_twilio.agent.session_keeper import SERVER_EVENT_HANDLERS

    source = inspect.getsource(OpenAIRealtimeLLMService._receive_task_handler)
    pairs = dict(re.findall(r'evt\.type == "([^"]+)":\s+await self\.(\w+)\(evt\)', source))
    assert pairs == SERVER_EVENT_HANDLERS
    for handler in SERVER_EVENT_HANDLERS.values():
        assert callable(getattr(RealtimeAgent, handler))
    # Pipecat's error handling we keep: the retrieve error and the two benign codes.
    assert "_maybe_handle_evt_retrieve_conversation_item_error" in source
    assert "conversation_already_has_active_response" in source


def test_private_service_methods_the_agent_calls():
    # Called, not overridden: same name, coroutine, same parameters.
    for name, parameters in [
        ("_ws_send", ["realtime_message"]),
        ("_send_session_update", []),
        ("_send_message_item", ["text", "role"]),
        ("_auth_headers", []),
        ("_maybe_handle_evt_retrieve_conversation_item_error", ["evt"]),
    ]:
        method = getattr(OpenAIRealtimeLLMService, name)
        assert inspect.iscoroutinefunction(method), name
        assert list(inspect.signature(method).parameters)[1:] == parameters, name
    # The caller-audio hot path hands _ws_send a plain dict: it must send it as JSON text
    # and stay quiet while the service disconnects.
    ws_send = inspect.getsource(OpenAIRealtimeLLMService._ws_send)
    assert "json.dumps(realtime_message)" in ws_send and "self._disconnecting" in ws_send
    # The session keeper opens its own socket with these headers.
    assert "Authorization" in inspect.getsource(OpenAIRealtimeLLMService._auth_headers)


def test_private_service_state_the_session_keeper_resets():
    init = inspect.getsource(OpenAIRealtimeLLMService.__init__)
    for attribute in [
        "self._disconnecting",
        "self._open_function_calls",
        "self._receive_task",
        "self._audio_input_paused",
        "self._api_session_ready",
    ]:
        assert attribute in init, attribute
    # A disconnect forgets the session's open function calls, as the keeper does itself
    # when a socket is lost (Pipecat's _disconnect is not called then).
    disconnect = inspect.getsource(OpenAIRealtimeLLMService._disconnect)
    assert "self._disconnecting = True" in disconnect
    assert "self._open_function_calls = set()" in disconnect
    # Function results are answered only for call ids the API is waiting on.
    result = inspect.getsource(OpenAIRealtimeLLMService._handle_function_call_result)
    assert "self._open_function_calls" in result


def test_the_websocket_client_sends_through_the_socket_attach_sets():
    from pipecat.transports.websocket.fastapi import FastAPIWebsocketClient

    client_init = inspect.getsource(FastAPIWebsocketClient.__init__)
    assert "self._websocket = websocket" in client_init
    send = inspect.getsource(FastAPIWebsocketClient.send)
    assert "self._websocket.send_text(data)" in send
