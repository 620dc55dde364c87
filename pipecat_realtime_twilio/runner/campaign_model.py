#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What campaigns are made of: outcomes, statuses, a new campaign's settings, a claim.

Shared by the store (:mod:`~pipecat_realtime_twilio.runner.campaign_store`,
:mod:`~pipecat_realtime_twilio.runner.campaign_outcomes`), the dialer and the routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OUTCOMES = (
    "answered",
    "voicemail",
    "machine",
    "busy",
    "no_answer",
    "failed",
    "canceled",
    "hung_up",
    "invalid",
    "expired",
)
"""Every outcome a number can end with (``expired``: its zones share no calling hours)."""

RETRIED = {"busy": "busy", "no-answer": "no_answer", "failed": "failed"}
"""Final call statuses that are tried again, and the outcome of the last try."""

FINAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
"""Twilio's final call statuses."""

HUMAN = ("human", "unknown")
"""AMD results the bot takes."""

AMD_WAIT_SECS = 30
"""Seconds an answered call waits (``<Pause>``) for AMD before the bot takes it anyway."""


@dataclass(frozen=True)
class CampaignSpec:
    """A new campaign's settings.

    Parameters:
        name: Its name.
        bot: The bot that talks to the people who answer.
        from_number: The caller ID.
        rate_per_minute: Calls placed per minute, across all instances.
        calling_hours: ``HH:MM-HH:MM`` in each number's zones.
        max_attempts: Tries per number.
        retry_secs: Wait before the second try (doubled per try after it).
        ring_secs: How long a call rings.
    """

    name: str
    bot: str
    from_number: str
    rate_per_minute: float
    calling_hours: str
    max_attempts: int
    retry_secs: float
    ring_secs: int


@dataclass(frozen=True)
class Claim:
    """A number this instance is to dial now.

    Parameters:
        campaign_id: Its campaign.
        number_id: Its row.
        number: E.164.
        attempt: Which try this is (1 for the first).
        bot: The campaign's bot.
        from_number: The caller ID.
        ring_secs: How long the call rings.
        at: Its slot (Unix time): the call is placed then, to keep the campaign's pace.
    """

    campaign_id: str
    number_id: int
    number: str
    attempt: int
    bot: str
    from_number: str
    ring_secs: int
    at: float


@dataclass(frozen=True)
class ClaimResult:
    """What a claim found.

    Parameters:
        claim: The number to dial, if one was due.
        wait: Seconds until the next claim could succeed (at most a second).
        outcomes: Outcomes given meanwhile (numbers whose zones share no hours).
    """

    claim: Claim | None
    wait: float
    outcomes: tuple[str, ...] = ()


def answered_outcome(answered_by: str | None, voicemail_left: bool, duration: int | None) -> str:
    """The outcome of an answered call that completed."""
    if answered_by in HUMAN:
        return "answered"
    if answered_by is not None and answered_by.startswith("machine_end"):
        return "voicemail" if voicemail_left else "machine"
    if answered_by is not None:  # machine_start, fax
        return "machine"
    # No AMD result: the bot took the call once the pause ran out, or it was hung up first.
    return "answered" if duration is not None and duration >= AMD_WAIT_SECS else "hung_up"


def number_row(campaign_id: str, line: int, number: str, zones: str, now: float) -> dict[str, Any]:
    """A new number's row: pending, due ``now``."""
    return {
        "campaign_id": campaign_id,
        "line": line,
        "number": number,
        "timezones": zones[:1000],
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "call_sid": None,
        "last_status": None,
        "last_sequence": -1,
        "answered_at": None,
        "answered_by": None,
        "voicemail_left": False,
        "outcome": None,
        "detail": None,
        "claimed_by": None,
        "claimed_at": None,
        "updated_at": now,
    }
