#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Calling hours: when a campaign may ring a number, in the number's own time zones.

A campaign's hours are ``HH:MM-HH:MM`` of local wall-clock time (``CAMPAIGN_CALLING_HOURS``,
``09:00-20:00`` by default); they may wrap midnight (``18:00-02:00``) and end at ``24:00``.
A number's zones come from the CSV's ``timezone`` column, or else from the ``phonenumbers``
package (:func:`zones_for_number`); a number with several zones (a toll-free or a
non-geographic one) is called only while it is inside the hours in every one of them.
Times are computed with :mod:`zoneinfo`, so a day that changes to or from summer time is
as long as it really is.

Example::

    hours = CallingHours.parse("09:00-20:00")
    hours.open_at(("America/New_York",), time.time())
    hours.next_opening(("America/New_York", "Europe/London"), time.time())
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

_HOURS = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")

SEARCH_DAYS = 8
"""How far ahead a common opening of several zones is looked for (then: never)."""

UNKNOWN_ZONE = "Etc/Unknown"
"""What ``phonenumbers`` answers for a number it cannot place."""


class CallingHoursError(ValueError):
    """Calling hours or a time zone that cannot be used."""


@cache
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Args:
        name: E.g. ``America/New_York``.

    Returns:
        The zone.

    Raises:
        CallingHoursError: If there is no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CallingHoursError(f"unknown time zone {name[:60]!r}") from None


def zones_for_number(number: phonenumbers.PhoneNumber) -> tuple[str, ...]:
    """The time zones a phone number may ring in, as ``phonenumbers`` knows them.

    Args:
        number: A parsed number.

    Returns:
        The zones; ``("UTC",)`` when ``phonenumbers`` cannot place the number.
    """
    zones = tuple(z for z in phone_timezones.time_zones_for_number(number) if z != UNKNOWN_ZONE)
    return zones or ("UTC",)


@dataclass(frozen=True)
class CallingHours:
    """A daily window of local time, ``[start, end)`` in minutes after midnight.

    Parameters:
        start: The window's first minute (0 to 1439).
        end: The minute it closes (1 to 1440); at or before ``start`` it wraps midnight.
    """

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> CallingHours:
        """Read ``HH:MM-HH:MM`` (``24:00`` may end it).

        Args:
            text: E.g. ``09:00-20:00`` or ``18:00-02:00``.

        Returns:
            The hours.

        Raises:
            CallingHoursError: If ``text`` is not of that form, or starts and ends at once.
        """
        match = _HOURS.fullmatch(text.strip())
        if match is None or (match[3] == "24" and match[4] != "00"):
            raise CallingHoursError(f"calling hours must be HH:MM-HH:MM, not {text[:40]!r}")
        start = int(match[1]) * 60 + int(match[2])
        end = int(match[3]) * 60 + int(match[4])
        if start == end % 1440 and end != 1440:
            raise CallingHoursError("calling hours must not start and end at the same time")
        return cls(start, end)

    def __str__(self) -> str:
        """The hours as ``HH:MM-HH:MM``."""
        return f"{_clock(self.start)}-{_clock(self.end)}"

    def _open_minute(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # wraps midnight

    def open_in(self, name: str, at: float) -> bool:
        """Whether ``at`` is within the hours in zone ``name``.

        Args:
            name: An IANA zone.
            at: Unix time.
        """
        local = datetime.fromtimestamp(at, zone(name))
        return self._open_minute(local.hour * 60 + local.minute)

    def open_at(self, zones: tuple[str, ...] | list[str], at: float) -> bool:
        """Whether ``at`` is within the hours in every one of ``zones``.

        Args:
            zones: IANA zones.
            at: Unix time.
        """
        return all(self.open_in(name, at) for name in zones)

    def _opening_in(self, name: str, at: float) -> float:
        """The first moment at or after ``at`` that is within the hours in zone ``name``."""
        if self.open_in(name, at):
            return at
        tz = zone(name)
        local = datetime.fromtimestamp(at, tz)
        for days in range(3):
            day = local.date() + timedelta(days=days)
            wall = datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(minutes=self.start)
            # Wall-clock arithmetic: the opening's local time, whatever the day's length.
            opening = wall.astimezone(UTC).timestamp()
            if opening > at and self.open_in(name, opening):
                return opening
            if opening > at:  # an opening that falls in a summer-time gap: a minute on
                return self._opening_in(name, opening + 60)
        raise AssertionError("a daily window opens within three days")  # pragma: no cover

    def next_opening(self, zones: tuple[str, ...] | list[str], at: float) -> float | None:
        """The first moment at or after ``at`` within the hours in all of ``zones``.

        Args:
            zones: IANA zones (at least one).
            at: Unix time.

        Returns:
            Unix time (``at`` itself when it is open now); None when the zones share
            no moment within the hours in the next :data:`SEARCH_DAYS` days.
        """
        moment = at
        horizon = at + SEARCH_DAYS * 86400
        while moment <= horizon:
            later = max(self._opening_in(name, moment) for name in zones)
            if later == moment:
                return moment
            moment = later
            if all(self.open_in(name, moment) for name in zones):
                return moment
        return None


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
