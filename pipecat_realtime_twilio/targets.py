#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Where a call can be transferred: a phone number, or a SIP address.

One check for every place a target is given (``transfer_call(...)``, an agent's
``fallback_number``, a bot file's ``transfer_number``/``fallback_number``) and
for the TwiML that dials it, so a wrong target is reported when the bot is built
(``bots check`` shows it as ``FILE:LINE``), not when a caller is being transferred.
"""

import re

from pipecat_realtime_twilio.errors import CallControlError

_SIP_URI = re.compile(r"sips?:\S+", re.IGNORECASE)
_PHONE_NUMBER = re.compile(r"\+?[0-9]{3,15}")


class InvalidTransferTarget(CallControlError, ValueError):
    """A transfer target that is neither a phone number nor a SIP URI."""


def is_sip_uri(target: str) -> bool:
    """Whether ``target`` is a SIP address (``sip:``/``sips:``, any case), dialled as ``<Sip>``.

    Args:
        target: A transfer target.

    Returns:
        True for a SIP URI.
    """
    return bool(_SIP_URI.fullmatch(target.strip()))


def check_transfer_target(target: str) -> str:
    """Return ``target`` stripped if a call can be transferred there.

    Args:
        target: A phone number (E.164, e.g. ``+15551234567``; spaces and dashes
            allowed) or a SIP URI (``sip:desk@pbx.example.com``).

    Returns:
        The target, stripped.

    Raises:
        InvalidTransferTarget: If it is neither (a ``ValueError`` and a
            ``CallControlError``).
    """
    target = (target or "").strip()
    if is_sip_uri(target) or _PHONE_NUMBER.fullmatch(target.replace(" ", "").replace("-", "")):
        return target
    raise InvalidTransferTarget(
        f"cannot transfer to {target!r}: not a phone number (E.164, e.g. +15551234567) "
        "or a SIP URI (sip:user@host)"
    )
