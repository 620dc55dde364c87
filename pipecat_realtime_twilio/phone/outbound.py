#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Outbound calls: Twilio calls a number and, once answered, streams it to a bot of ours."""

from urllib.parse import urlencode

from pipecat_realtime_twilio.phone.rest import TwilioRest, TwilioRestException
from pipecat_realtime_twilio.settings import Settings


class OutboundError(Exception):
    """An outbound call could not be placed.

    Attributes:
        upstream: Whether Twilio refused it (rather than our configuration).
    """

    def __init__(self, message: str, *, upstream: bool = False):
        """Initialize the error.

        Args:
            message: What went wrong.
            upstream: Whether Twilio refused the call.
        """
        super().__init__(message)
        self.upstream = upstream


async def place_call(
    settings: Settings,
    to: str,
    *,
    bot: str | None = None,
    from_number: str | None = None,
    rest: TwilioRest | None = None,
) -> str:
    """Have Twilio call ``to``; when answered it requests our webhook and streams to ``bot``.

    The call's voice URL is ``PUBLIC_URL/incoming?bot=NAME``, so the answered
    call goes through the same signed webhook, token and capacity checks as an
    incoming one, and the bot greets the person who picked up.

    Args:
        settings: Settings with ``PUBLIC_URL``, ``TWILIO_ACCOUNT_SID``,
            ``TWILIO_AUTH_TOKEN`` (and ``TWILIO_API_URL``).
        to: The number to call (E.164).
        bot: The bot; ``BOT`` by default.
        from_number: The caller ID; ``TWILIO_PHONE_NUMBER`` by default.
        rest: A REST client to use; one from the settings by default.

    Returns:
        The new call's SID.

    Raises:
        OutboundError: If a setting is missing or Twilio refuses the call.
    """
    from_number = from_number or settings.twilio_phone_number
    missing = [
        name
        for name, value in (
            ("PUBLIC_URL", settings.public_url),
            ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
            ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
            ("TWILIO_PHONE_NUMBER (or a from number)", from_number),
        )
        if value is None
    ]
    own_rest = rest is None
    rest = rest or TwilioRest.from_settings(settings)
    if missing or rest is None or from_number is None:
        raise OutboundError("an outbound call needs " + ", ".join(missing))
    url = f"{settings.public_origin}/incoming?{urlencode({'bot': bot or settings.bot})}"
    try:
        return await rest.create_call(to, from_number, url)
    except TwilioRestException as e:
        raise OutboundError(f"Twilio refused the call: {e.msg}", upstream=True) from e
    except TimeoutError:
        raise OutboundError("Twilio did not answer in time", upstream=True) from None
    finally:
        if own_rest:
            await rest.close()
