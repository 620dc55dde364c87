"""Calling hours: in each number's zones, wrapping midnight, several zones, summer time."""

from datetime import UTC, datetime

import pytest

from pipecat_realtime_twilio.runner.calling_hours import CallingHours, CallingHoursError


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_hours_are_read_and_refused_clearly():
    assert CallingHours.parse("09:00-20:00") == CallingHours(540, 1200)
    assert str(CallingHours.parse(" 18:30-24:00 ")) == "18:30-24:00"
    for bad in ("9-17", "09:00-25:00", "24:10-01:00", "10:00-10:00", "nonsense"):
        with pytest.raises(CallingHoursError):
            CallingHours.parse(bad)


def test_open_in_the_numbers_own_zone():
    hours = CallingHours.parse("09:00-20:00")
    # 13:00 UTC in January: 08:00 in New York (closed), 13:00 in London (open).
    assert not hours.open_at(["America/New_York"], at("2026-01-15T13:00:00"))
    assert hours.open_at(["Europe/London"], at("2026-01-15T13:00:00"))
    assert hours.next_opening(["America/New_York"], at("2026-01-15T13:00:00")) == at(
        "2026-01-15T14:00:00"
    )
    # After closing, the next opening is the next morning.
    assert hours.next_opening(["Europe/London"], at("2026-01-15T20:00:00")) == at(
        "2026-01-16T09:00:00"
    )


def test_hours_that_wrap_midnight():
    hours = CallingHours.parse("22:00-02:00")
    assert hours.open_at(["UTC"], at("2026-03-01T23:30:00"))
    assert hours.open_at(["UTC"], at("2026-03-02T01:59:00"))
    assert not hours.open_at(["UTC"], at("2026-03-02T02:00:00"))
    assert hours.next_opening(["UTC"], at("2026-03-02T03:00:00")) == at("2026-03-02T22:00:00")


def test_several_zones_must_all_be_open():
    hours = CallingHours.parse("09:00-20:00")
    zones = ["America/New_York", "America/Los_Angeles"]
    # 14:00 UTC: 09:00 New York, 06:00 Los Angeles: wait for Los Angeles' 09:00 (17:00 UTC).
    assert not hours.open_at(zones, at("2026-01-15T14:00:00"))
    assert hours.next_opening(zones, at("2026-01-15T14:00:00")) == at("2026-01-15T17:00:00")
    # Zones 12 hours apart share no moment of 09:00-12:00.
    assert (
        CallingHours.parse("09:00-12:00").next_opening(
            ["Europe/London", "Pacific/Auckland"], at("2026-01-15T14:00:00")
        )
        is None
    )


def test_a_summer_time_day_opens_at_the_local_hour():
    hours = CallingHours.parse("09:00-20:00")
    # New York springs forward on 2026-03-08: 09:00 is 14:00 UTC the day before, 13:00 UTC on it.
    assert hours.next_opening(["America/New_York"], at("2026-03-07T02:00:00")) == at(
        "2026-03-07T14:00:00"
    )
    assert hours.next_opening(["America/New_York"], at("2026-03-08T02:00:00")) == at(
        "2026-03-08T13:00:00"
    )
    # An opening inside the skipped hour (02:30 does not exist that night) moves past it.
    early = CallingHours.parse("02:30-05:00")
    opening = early.next_opening(["America/New_York"], at("2026-03-08T06:00:00"))
    assert opening is not None and early.open_at(["America/New_York"], opening)
    assert at("2026-03-08T07:00:00") <= opening <= at("2026-03-08T07:31:00")
