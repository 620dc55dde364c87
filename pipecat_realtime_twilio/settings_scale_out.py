#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The settings of several instances and of outbound campaigns, a part of ``Settings``.

:class:`ScaleOutSettings` holds ``REDIS_URL`` and what the instances share through it
(``REDIS_PREFIX``, ``MAX_CALLS_TOTAL``, ``INSTANCE_ID``) and the campaign defaults
(``CAMPAIGN_*``). :class:`~pipecat_realtime_twilio.settings.Settings` inherits them:
it stays the one class to read and build settings with.
"""

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings


class ScaleOutSettings(BaseSettings):
    """Redis shared by the instances, and the campaigns' defaults (inherited by ``Settings``)."""

    redis_url: str | None = Field(
        default=None,
        description=(
            "Redis shared by every instance (redis://host:6379/0): stream tokens single use "
            "across instances, MAX_CALLS_TOTAL, pre-warmed sessions handed over, the instance "
            "registry. Without it, one process keeps all of that itself."
        ),
    )
    redis_prefix: str = Field(
        default="prt:",
        min_length=1,
        description="Prefix of this deployment's Redis keys and channel (several on one Redis).",
    )
    max_calls_total: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Most calls at once across every instance sharing REDIS_URL (the account's cap); "
            "more hear the busy message. Without REDIS_URL it caps this process."
        ),
    )
    instance_id: str | None = Field(
        default=None,
        description="This instance's name in the registry and logs; host name and PID by default.",
    )
    campaign_dialer: bool = Field(
        default=True,
        description="Place calls of outbound campaigns from this instance (the queue is shared).",
    )
    campaign_rate_per_minute: float = Field(
        default=30.0,
        gt=0,
        le=6000,
        description="A campaign's default pace: calls placed per minute, across all instances.",
    )
    campaign_calling_hours: str = Field(
        default="09:00-20:00",
        description="A campaign's default calling hours, HH:MM-HH:MM in each number's time zone.",
    )
    campaign_max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="A campaign's default tries per number (busy, no answer and failed retry).",
    )
    campaign_retry_secs: float = Field(
        default=600.0,
        gt=0,
        description="Wait before a number's second try; doubled for each try after it.",
    )
    campaign_ring_secs: int = Field(
        default=25,
        ge=5,
        le=600,
        description="How long a campaign call rings before it counts as no answer.",
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("campaign_calling_hours")
    @classmethod
    def _check_calling_hours(cls, value: str) -> str:
        match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)", value.strip())
        if match is None or (match[3] == "24" and match[4] != "00"):
            raise ValueError("must be HH:MM-HH:MM, e.g. 09:00-20:00")
        if match.group(1, 2) == match.group(3, 4):
            raise ValueError("must not start and end at the same time")
        return value.strip()
