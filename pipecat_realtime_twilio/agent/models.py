#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Realtime and transcription models with an announced shutdown, and what to say about them.

OpenAI announces when a model shuts down; the ``openai`` package says so only in
the docstrings of its Realtime types (the ``model`` field's "Deprecated values:"
list). `shutdown_dates` reads them from the installed package, over a built-in
table of the same facts (for when its source cannot be read), and
`model_warnings` turns the configured models into one line each::

    for line in model_warnings(["gpt-realtime"], ["gpt-4o-mini-transcribe"]):
        logger.warning(line)
    # Realtime model 'gpt-realtime' has an announced shutdown on 2027-01-20 (in 51 days);
    # move to gpt-realtime-2.1

A dated snapshot id (``gpt-realtime-2025-08-28``) has a shutdown only if it is
listed itself; model ids match case aside.
"""

import functools
import importlib
import inspect
import re
from collections.abc import Iterable
from datetime import date

from loguru import logger

SOURCE_MODULES = (
    "openai.types.realtime.audio_transcription",
    "openai.types.realtime.realtime_session_create_request",
)
"""Modules of the ``openai`` package whose docstrings list the deprecated models."""

_BUILT_IN_DATES: dict[str, date] = {
    # Realtime models (openai 3.57, realtime_session_create_request.py, field model).
    **dict.fromkeys(
        (
            "gpt-realtime",
            "gpt-realtime-2025-08-28",
            "gpt-realtime-mini",
            "gpt-realtime-mini-2025-12-15",
            "gpt-audio-mini",
            "gpt-audio-mini-2025-12-15",
        ),
        date(2027, 1, 20),
    ),
    # Transcription models (openai 3.57, audio_transcription.py, field model).
    **dict.fromkeys(
        (
            "whisper-1",
            "gpt-4o-mini-transcribe",
            "gpt-4o-mini-transcribe-2025-12-15",
            "gpt-4o-transcribe",
            "gpt-4o-transcribe-diarize",
        ),
        date(2027, 2, 26),
    ),
}
"""Announced shutdown dates as the ``openai`` package listed them when this was written."""

REALTIME_REPLACEMENT = "gpt-realtime-2.1"
"""What to move a Realtime model with a shutdown to (a mini one: `MINI_REPLACEMENT`)."""

MINI_REPLACEMENT = "gpt-realtime-2.1-mini"
"""What to move a mini Realtime model with a shutdown to."""

TRANSCRIPTION_REPLACEMENT = "gpt-realtime-whisper"
"""What to move a transcription model with a shutdown to."""

_MINI_FAMILIES = ("gpt-realtime-mini", "gpt-audio-mini", "gpt-4o-mini-")
"""Prefixes of the mini Realtime families (replaced by `MINI_REPLACEMENT`)."""

_KINDS = {"realtime": "Realtime", "transcription": "Transcription"}

_BLOCK = re.compile(r"Deprecated values:(.*?)(?=Deprecated values:|\"\"\"|'''|\Z)", re.S)
_ENTRY = re.compile(
    r"((?:[\"'`][^\"'`\s]+[\"'`]\s*,?\s*)+):?\s*"
    r"Announced shutdown date:\s*(\d{4}-\d{2}-\d{2})"
)
_MODEL_ID = re.compile(r"[\"'`]([^\"'`\s]+)[\"'`]")

_warned: set[tuple[str, str]] = set()


def parse_deprecations(source: str) -> dict[str, date]:
    """Read the shutdown dates from the "Deprecated values:" blocks of some source.

    A block lists quoted model ids followed by ``Announced shutdown date: YYYY-MM-DD``,
    possibly wrapped over lines and with more than one such entry.

    Args:
        source: Python source (or any text) with docstrings.

    Returns:
        The date of each model id listed (lower case); an entry with an impossible
        date is skipped.
    """
    dates: dict[str, date] = {}
    for block in _BLOCK.findall(source):
        for ids, day in _ENTRY.findall(" ".join(block.split())):
            try:
                when = date.fromisoformat(day)
            except ValueError:
                continue
            for model in _MODEL_ID.findall(ids):
                dates[model.lower()] = when
    return dates


@functools.cache
def _package_dates() -> dict[str, date]:
    dates: dict[str, date] = {}
    for name in SOURCE_MODULES:
        try:
            source = inspect.getsource(importlib.import_module(name))
        except (ImportError, OSError, TypeError) as error:
            logger.debug(f"Model shutdown dates: cannot read {name} ({error}); built-in table")
            continue
        dates.update(parse_deprecations(source))
    return dates


def shutdown_dates() -> dict[str, date]:
    """The announced shutdown date of each Realtime and transcription model id.

    The dates the installed ``openai`` package lists (read once per process), over
    a built-in table of the same facts: the package's date wins where they differ.

    Returns:
        A new dict of dates by model id (lower case).
    """
    return {**_BUILT_IN_DATES, **_package_dates()}


def replacement_for(kind: str, model: str) -> str:
    """The current model to move to from ``model``.

    Args:
        kind: ``"realtime"`` or ``"transcription"``.
        model: The model with a shutdown.

    Returns:
        `TRANSCRIPTION_REPLACEMENT` for a transcription model, `MINI_REPLACEMENT`
        for a mini Realtime model, else `REALTIME_REPLACEMENT`.
    """
    if _kind(kind) == "transcription":
        return TRANSCRIPTION_REPLACEMENT
    name = model.strip().lower()
    return MINI_REPLACEMENT if name.startswith(_MINI_FAMILIES) else REALTIME_REPLACEMENT


def model_warning(
    kind: str,
    model: str,
    *,
    today: date | None = None,
    dates: dict[str, date] | None = None,
) -> str | None:
    """The warning line for one model, or None if it has no announced shutdown.

    Args:
        kind: ``"realtime"`` or ``"transcription"``.
        model: The model id as configured.
        today: The date to count from; today by default.
        dates: The shutdown dates; `shutdown_dates` by default.

    Returns:
        ``<Kind> model '<id>' has an announced shutdown on <date> (in N days); move
        to <model>``, or ``... was shut down on <date>; ...`` once the date is past.

    Raises:
        ValueError: If ``kind`` is neither.
    """
    label = _KINDS[_kind(kind)]
    name = (model or "").strip()
    when = (shutdown_dates() if dates is None else dates).get(name.lower())
    if not name or when is None:
        return None
    today = today or date.today()
    days = (when - today).days
    if days < 0:
        status = f"was shut down on {when.isoformat()}"
    else:
        left = "today" if days == 0 else f"in {days} day{'' if days == 1 else 's'}"
        status = f"has an announced shutdown on {when.isoformat()} ({left})"
    return f"{label} model '{name}' {status}; move to {replacement_for(kind, name)}"


def model_warnings(
    realtime_models: Iterable[str],
    transcription_models: Iterable[str],
    *,
    today: date | None = None,
) -> list[str]:
    """One warning line per configured model that has an announced shutdown.

    Args:
        realtime_models: Realtime model ids (a single id as a string works too).
        transcription_models: Transcription model ids.
        today: The date to count from; today by default.

    Returns:
        The lines, Realtime models first, each model once (case aside), in the
        order given.
    """
    dates = shutdown_dates()
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    for kind, models in (("realtime", realtime_models), ("transcription", transcription_models)):
        for model in [models] if isinstance(models, str) else models:
            if not isinstance(model, str) or (kind, model.strip().lower()) in seen:
                continue
            seen.add((kind, model.strip().lower()))
            line = model_warning(kind, model, today=today, dates=dates)
            if line is not None:
                lines.append(line)
    return lines


def warn_once(kind: str, model: str) -> None:
    """Log the warning for ``model`` if it has an announced shutdown, once per process.

    For the agent to call when it is built with a model: the first call for a
    model logs (loguru, WARNING), later ones for the same kind and model do not.

    Args:
        kind: ``"realtime"`` or ``"transcription"``.
        model: The model id.

    Raises:
        ValueError: If ``kind`` is neither.
    """
    key = (_kind(kind), (model or "").strip().lower())
    if key in _warned:
        return
    line = model_warning(kind, model)
    if line is not None:
        _warned.add(key)
        logger.warning(line)


def _kind(kind: str) -> str:
    name = kind.strip().lower()
    if name not in _KINDS:
        raise ValueError(f"model kind must be 'realtime' or 'transcription', not {kind!r}")
    return name
