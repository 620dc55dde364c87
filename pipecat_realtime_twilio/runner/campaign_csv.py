#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A campaign's numbers: read from CSV text or a JSON list, checked with ``phonenumbers``.

The CSV is read with the standard :mod:`csv` module. Its first row is a header when one of
its cells is ``number`` (or ``phone``, ``phone_number``, ``to``; any case); the numbers are
then in that column and an optional ``timezone`` column gives each number's IANA zone
(which wins over what ``phonenumbers`` says). Without a header, the first column holds the
numbers. Blank lines are skipped.

Every number must be international (``+`` and the country code) and valid for
``phonenumbers``; it is kept in E.164. A number that is not (or whose zone is unknown) is
*invalid*: reported with its line, and stored with the outcome ``invalid`` at once. A
number seen before in the same campaign is a *duplicate*: reported and dropped.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import phonenumbers

from pipecat_realtime_twilio.runner.calling_hours import CallingHoursError, zone, zones_for_number

NUMBER_COLUMNS = ("number", "phone", "phone_number", "to")
"""Header names of the numbers' column."""

TIMEZONE_COLUMNS = ("timezone", "time_zone", "tz")
"""Header names of the optional time zone column."""

MAX_NUMBERS = 100_000
"""Most numbers in one campaign."""

MAX_FIELD_CHARS = 64
"""Longest number or zone kept as given in a report."""


class CampaignInputError(ValueError):
    """The numbers cannot be read at all (not CSV, no number column, too many)."""


@dataclass(frozen=True)
class NumberEntry:
    """A number of a campaign.

    Parameters:
        number: E.164 (as given, for an invalid one).
        timezones: The zones it is called in (empty for an invalid one).
        line: Its line in the CSV (its position, 1-based, in a list).
        problem: Why it is invalid; None for a good one.
    """

    number: str
    timezones: tuple[str, ...]
    line: int
    problem: str | None = None


@dataclass
class CampaignNumbers:
    """The numbers read, sorted out.

    Parameters:
        valid: Good numbers, in order, without duplicates.
        invalid: Numbers that cannot be called, with why.
        duplicates: Numbers given again, with the line of each repeat.
    """

    valid: list[NumberEntry] = field(default_factory=list)
    invalid: list[NumberEntry] = field(default_factory=list)
    duplicates: list[NumberEntry] = field(default_factory=list)

    def add(self, raw: str, timezone: str | None, line: int, seen: set[str]) -> None:
        """Check one number and file it as valid, invalid or a duplicate.

        Args:
            raw: The number as given.
            timezone: Its zone as given, if any.
            line: Its line (or position).
            seen: The E.164 numbers already filed (updated).
        """
        entry = check_number(raw, timezone, line)
        key = entry.number
        if key in seen:
            self.duplicates.append(entry)
            return
        seen.add(key)
        (self.invalid if entry.problem else self.valid).append(entry)

    def report(self) -> dict[str, object]:
        """Counts and the numbers refused, JSON-ready."""
        return {
            "numbers": len(self.valid) + len(self.invalid),
            "valid": len(self.valid),
            "invalid": [
                {"line": e.line, "number": e.number, "problem": e.problem} for e in self.invalid
            ],
            "duplicates": [{"line": e.line, "number": e.number} for e in self.duplicates],
        }


def check_number(raw: str, timezone: str | None, line: int) -> NumberEntry:
    """Check one number (and its zone): E.164 and zones, or why it is invalid.

    Args:
        raw: The number as given, e.g. ``+1 212 555 0100``.
        timezone: An IANA zone given for it (wins over ``phonenumbers``'), or None.
        line: Its line (or position).

    Returns:
        The entry; ``problem`` says what is wrong with an invalid one.
    """
    text = raw.strip()
    shown = text[:MAX_FIELD_CHARS]
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return NumberEntry(shown, (), line, "not a phone number in international form (+...)")
    if not phonenumbers.is_valid_number(parsed):
        return NumberEntry(shown, (), line, "not a valid phone number")
    number = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if timezone and timezone.strip():
        try:
            zone(timezone.strip())
        except CallingHoursError as e:
            return NumberEntry(number, (), line, str(e))
        return NumberEntry(number, (timezone.strip(),), line)
    return NumberEntry(number, zones_for_number(parsed), line)


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    cells = [cell.strip().lower() for cell in header]
    return next((cells.index(name) for name in names if name in cells), None)


def read_csv(text: str) -> CampaignNumbers:
    """Read a campaign's numbers from CSV text (see the module docstring).

    Args:
        text: The CSV.

    Returns:
        The numbers sorted out.

    Raises:
        CampaignInputError: If the text is not CSV, has a header without a number
            column, no numbers, or more than :data:`MAX_NUMBERS`.
    """
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, list[str]]] = []  # (line, cells)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise CampaignInputError(f"the CSV cannot be read: {e}") from None
    if not rows:
        raise CampaignInputError("the CSV has no numbers")
    header = rows[0][1]
    number_at, zone_at, body = 0, None, rows
    looks_like_header = not any(cell.lstrip().startswith("+") for cell in header)
    if looks_like_header and any(c.isalpha() for c in "".join(header)):
        found = _column(header, NUMBER_COLUMNS)
        if found is None:
            raise CampaignInputError(
                f"the CSV's header has no number column: name one of {', '.join(NUMBER_COLUMNS)}"
            )
        number_at, zone_at, body = found, _column(header, TIMEZONE_COLUMNS), rows[1:]
    if len(body) > MAX_NUMBERS:
        raise CampaignInputError(f"at most {MAX_NUMBERS} numbers in one campaign")
    numbers = CampaignNumbers()
    seen: set[str] = set()
    for line, row in body:
        raw = row[number_at] if number_at < len(row) else ""
        given_zone = row[zone_at] if zone_at is not None and zone_at < len(row) else None
        numbers.add(raw, given_zone, line, seen)
    if not numbers.valid and not numbers.invalid:
        raise CampaignInputError("the CSV has no numbers")
    return numbers


def read_list(items: list[object]) -> CampaignNumbers:
    """Read a campaign's numbers from JSON: strings, or ``{"number", "timezone"}`` objects.

    Args:
        items: The list.

    Returns:
        The numbers sorted out.

    Raises:
        CampaignInputError: If an item is neither, or there are none or too many.
    """
    if not items:
        raise CampaignInputError('"numbers" is empty')
    if len(items) > MAX_NUMBERS:
        raise CampaignInputError(f"at most {MAX_NUMBERS} numbers in one campaign")
    numbers = CampaignNumbers()
    seen: set[str] = set()
    for position, item in enumerate(items, start=1):
        if isinstance(item, str):
            numbers.add(item, None, position, seen)
        elif isinstance(item, dict) and isinstance(item.get("number"), str):
            timezone = item.get("timezone")
            if timezone is not None and not isinstance(timezone, str):
                raise CampaignInputError(f"numbers[{position - 1}]: timezone must be text")
            numbers.add(item["number"], timezone, position, seen)
        else:
            raise CampaignInputError(
                f'numbers[{position - 1}]: give a number as text or {{"number", "timezone"}}'
            )
    return numbers
