#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The ``warm_transfer:`` key of a prompt bot's front matter.

Example ``bots/receptionist.md`` front matter::

    tools: [end_call, warm_transfer]
    warm_transfer:
      number: "+15551230000"   # or sip:desk@pbx.example.com
      ring_secs: 25            # 5 to 120; default 25
      caller_id: "+15550001111"  # optional: the number the human sees

The tool (:func:`~pipecat_realtime_twilio.agent.warm_transfer.warm_transfer`) needs
Twilio REST credentials (``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``) at call time.
"""

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from pipecat_realtime_twilio.agent.tools import RealtimeTool
from pipecat_realtime_twilio.agent.warm_transfer import DEFAULT_RING_SECS, warm_transfer
from pipecat_realtime_twilio.targets import InvalidTransferTarget, check_transfer_target

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class WarmTransferSpec(BaseModel):
    """The ``warm_transfer:`` front matter key, checked.

    Parameters:
        number: Where the human is: a phone number (E.164) or a SIP address.
        ring_secs: How long the human's phone rings before the caller is back with the bot.
        caller_id: The number the human sees (E.164, a number of the account); the
            call's own number by default.
    """

    model_config = ConfigDict(extra="forbid")

    number: str
    ring_secs: float = Field(default=DEFAULT_RING_SECS, ge=5, le=120)
    caller_id: str | None = None

    @field_validator("number", "caller_id", mode="before")
    @classmethod
    def _number_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("number")
    @classmethod
    def _a_target(cls, value: str) -> str:
        try:
            return check_transfer_target(value)
        except InvalidTransferTarget:
            raise PydanticCustomError(
                "transfer_target",
                "{value} is neither a phone number (E.164, e.g. '+15551234567') nor a SIP "
                "address (sip:user@host)",
                {"value": repr(value)},
            ) from None

    @field_validator("caller_id")
    @classmethod
    def _a_number(cls, value: str | None) -> str | None:
        if value is not None and not _E164.fullmatch(value.strip()):
            raise PydanticCustomError(
                "caller_id",
                "{value} is no E.164 phone number (e.g. '+15551234567')",
                {"value": repr(value)},
            )
        return value.strip() if value is not None else None

    def tool(self) -> RealtimeTool:
        """The ``warm_transfer`` tool these settings make."""
        return warm_transfer(self.number, ring_secs=self.ring_secs, caller_id=self.caller_id)
