#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""TwiML documents the runner answers Twilio with, built with the ``twilio`` package."""

from twilio.twiml.voice_response import Connect, VoiceResponse


def stream_twiml(
    stream_url: str, parameters: dict[str, str] | None = None, *, action_url: str | None = None
) -> str:
    """Build TwiML that connects the call to a bidirectional Media Stream.

    Args:
        stream_url: The ``wss://`` URL of the runner's media-stream websocket.
        parameters: Values Twilio hands back in the stream's ``start`` message
            (``start.customParameters``).
        action_url: Where Twilio asks for more TwiML once the stream ends; with
            none, the call ends with the stream.

    Returns:
        The TwiML document.
    """
    response = VoiceResponse()
    connect = Connect(action=action_url) if action_url else Connect()
    stream = connect.stream(url=stream_url)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def dial_twiml(number: str) -> str:
    """Build TwiML that transfers the call to ``number`` (a cold transfer).

    Args:
        number: The phone number (E.164) or SIP URI to dial.

    Returns:
        The TwiML document.
    """
    response = VoiceResponse()
    response.dial(number)
    return str(response)


def hangup_twiml() -> str:
    """Build TwiML that ends the call."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def say_twiml(message: str) -> str:
    """Build TwiML that says ``message`` (Twilio's own voice, no Realtime session) and hangs up.

    Args:
        message: What the caller hears, e.g. that all lines are busy.

    Returns:
        The TwiML document.
    """
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)
