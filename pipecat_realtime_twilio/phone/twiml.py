#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""TwiML documents the runner answers Twilio with, built with the ``twilio`` package."""

from loguru import logger
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from pipecat_realtime_twilio.targets import InvalidTransferTarget, check_transfer_target, is_sip_uri

__all__ = [
    "InvalidTransferTarget",
    "dial_twiml",
    "fallback_twiml",
    "hangup_twiml",
    "pause_then_redirect_twiml",
    "say_twiml",
    "stream_twiml",
]


def stream_twiml(
    stream_url: str,
    parameters: dict[str, str] | None = None,
    *,
    action_url: str | None = None,
    status_callback_url: str | None = None,
) -> str:
    """Build TwiML that connects the call to a bidirectional Media Stream.

    Args:
        stream_url: The ``wss://`` URL of the runner's media-stream websocket.
        parameters: Values Twilio hands back in the stream's ``start`` message
            (``start.customParameters``).
        action_url: Where Twilio asks for more TwiML once the stream ends; with
            none, the call ends with the stream.
        status_callback_url: Where Twilio POSTs the stream's status events
            (``stream-started``, ``stream-stopped``, ``stream-error``); with none,
            a stream that cannot connect is visible only in Twilio's debugger.

    Returns:
        The TwiML document.
    """
    response = VoiceResponse()
    connect = Connect(action=action_url) if action_url else Connect()
    callback = (
        {"status_callback": status_callback_url, "status_callback_method": "POST"}
        if status_callback_url
        else {}
    )
    stream = connect.stream(url=stream_url, **callback)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def dial_twiml(target: str) -> str:
    """Build TwiML that transfers the call to ``target`` (a cold transfer).

    A phone number is dialled as ``<Dial>+1555...</Dial>``; a SIP URI
    (``sip:``/``sips:``, any case) as ``<Dial><Sip>sip:...</Sip></Dial>``, which
    is how Twilio dials SIP (as a bare number it would fail).

    Args:
        target: The phone number (E.164) or SIP URI to dial.

    Returns:
        The TwiML document.

    Raises:
        InvalidTransferTarget: If ``target`` is neither (a ``CallControlError`` and a
            ``ValueError``).
    """
    target = check_transfer_target(target)
    response = VoiceResponse()
    if is_sip_uri(target):
        dial = Dial()
        dial.sip(target)
        response.append(dial)
    else:
        response.dial(target)
    return str(response)


def hangup_twiml() -> str:
    """Build TwiML that ends the call."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def fallback_twiml(line: str, transfer_to: str | None = None) -> str:
    """Build the TwiML of a fallback: a transfer to ``transfer_to``, else ``line`` and a hang-up.

    A ``transfer_to`` that cannot be dialled is logged and the line said instead:
    a bad fallback number must not mean silence.

    Args:
        line: What the caller hears (Twilio's voice) when there is no transfer.
        transfer_to: A phone number or SIP URI to transfer the caller to, if any.

    Returns:
        The TwiML document.
    """
    if transfer_to:
        try:
            return dial_twiml(transfer_to)
        except InvalidTransferTarget as e:
            logger.error(f"Fallback transfer impossible ({e}); saying the fallback line")
    return say_twiml(line)


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


def pause_then_redirect_twiml(pause_secs: int, url: str) -> str:
    """Build TwiML that waits in silence, then asks ``url`` (POST) for what comes next.

    A campaign's answered call waits like this for Twilio's answering-machine
    detection; if the detection never answers, the call goes on to ``url``.

    Args:
        pause_secs: Seconds of silence; 0 or less: none, only the ``<Redirect>``
            (Twilio refuses a ``<Pause length>`` that is not positive, warning 13910).
        url: The webhook to redirect to.

    Returns:
        The TwiML document.
    """
    response = VoiceResponse()
    if pause_secs > 0:
        response.pause(length=pause_secs)
    response.redirect(url, method="POST")
    return str(response)
