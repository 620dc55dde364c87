#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The operator's read API and console: call records, recordings, an overview.

Routes (all off, 404, without ``RUNNER_API_KEY``; the API wants
``Authorization: Bearer RUNNER_API_KEY``, checked before anything is read):

- ``GET /api/calls``: the calls, newest first, as summaries (the record without its
  transcript, ``turns`` its length). Filters: ``bot``, ``since``/``until`` (ISO 8601,
  Unix seconds, or ``7d`` ago; on the start), ``reason`` (``failed`` also matches
  ``failed: connect: quota``), ``direction``, ``number`` (from or to), ``search``
  (text in the transcript), ``limit`` (at most 500) and ``offset``. Answers
  ``{"calls", "total", "limit", "offset"}``.
- ``GET /api/calls/{CallSid}``: the whole record (``CallRecord.to_dict()``).
- ``GET /api/calls/{CallSid}/recording``: the call's WAV (``audio/wav``); one byte
  range (``Range: bytes=a-b``) answers 206, so players can seek.
- ``GET /api/overview?days=N`` (or ``since``/``until``): calls, minutes, cost and
  response latency per day (UTC), cost per bot, end reasons.
- ``GET /console``: one page (vanilla JavaScript, no build step, nothing from a CDN)
  that asks for the key, keeps it in the tab's ``sessionStorage`` and reads the API.
  Its files are served from the package at ``/console/assets/...``; the charts are
  drawn by uPlot (MIT), shipped there too.

A recording is read whole into memory to be served (an hour of call is about 115 MB
of WAV), from local disk or S3 alike.
"""

import hashlib
import math
import re
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from loguru import logger

from pipecat_realtime_twilio.runner.operator_api import require_api_key
from pipecat_realtime_twilio.runner.queries import MAX_LIMIT, CallQuery
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.store import CallStore, describe_error
from pipecat_realtime_twilio.runner.timespec import parse_time
from pipecat_realtime_twilio.settings import Settings

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
"""The form of a Twilio CallSid; anything else is refused before the store is asked."""

DEFAULT_LIMIT = 50
"""Calls per page when ``limit`` is not given."""

MAX_FILTER_CHARS = 200
"""Longest text filter accepted (a number, a bot, words to search for)."""

MAX_OVERVIEW_DAYS = 366
"""Most days one overview covers."""

ASSET_TYPES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "uplot.min.js": "text/javascript; charset=utf-8",
    "uplot.min.css": "text/css; charset=utf-8",
    "LICENSE.uplot": "text/plain; charset=utf-8",
}
"""The console's files, served from the package's ``assets`` folder, and their types."""

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; media-src blob:; img-src 'self' data:; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Headers of the console page: its own scripts only, the audio from blob URLs."""

_NO_STORE = {"Cache-Control": "no-store"}


class RecordingReader(Protocol):
    """Where recordings are read (the runner's ``RecordingStore``)."""

    async def read(self, location: str) -> bytes | None:
        """The WAV at ``location``; None when it is not there."""


class CallData(Protocol):
    """What the console reads of the runner (a :class:`~.app.CallRunner` is one)."""

    settings: Settings

    @property
    def store(self) -> CallStore:
        """Where call records are kept."""

    @property
    def recordings(self) -> RecordingReader:
        """Where recordings are kept."""

    async def instances(self) -> list[dict[str, Any]]:
        """The instances alive in the registry (this one alone without ``REDIS_URL``)."""


def asset(name: str) -> bytes:
    """The package's console file ``name`` (one of `ASSET_TYPES`, or ``console.html``).

    Args:
        name: The file's name in the ``assets`` folder.
    """
    return resources.files("pipecat_realtime_twilio").joinpath(f"assets/{name}").read_bytes()


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    if len(value) > MAX_FILTER_CHARS:
        raise HTTPException(400, f"{name}: at most {MAX_FILTER_CHARS} characters")
    return value or None


def _time(params: Mapping[str, str], name: str, now: float) -> float | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        moment = parse_time(value, now=now)
    except ValueError as e:
        raise HTTPException(400, f"{name}: {e}") from None
    if not math.isfinite(moment):
        raise HTTPException(400, f"{name}: {value!r} is not a time")
    return moment


def _count(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, "").strip()
    if not value:
        return default
    if not value.isdecimal() or not low <= int(value) <= high:
        raise HTTPException(400, f"{name}: a whole number from {low} to {high}")
    return int(value)


def call_query(params: Mapping[str, str], now: float | None = None) -> CallQuery:
    """Read ``GET /api/calls``'s query parameters.

    Args:
        params: The query parameters.
        now: The present, for times like ``7d`` (the clock's by default).

    Returns:
        The query for the store.

    Raises:
        HTTPException: 400 naming the parameter that cannot be read.
    """
    present = time.time() if now is None else now
    since, until = _time(params, "since", present), _time(params, "until", present)
    if since is not None and until is not None and since >= until:
        raise HTTPException(400, "since: must be before until")
    direction = _text(params, "direction")
    if direction not in (None, "inbound", "outbound"):
        raise HTTPException(400, "direction: inbound or outbound")
    return CallQuery(
        bot=_text(params, "bot"),
        since=since,
        until=until,
        end_reason=_text(params, "reason"),
        direction=direction,
        number=_text(params, "number"),
        search=_text(params, "search"),
        limit=_count(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_count(params, "offset", 0, 0, 10**9),
    )


def overview_range(params: Mapping[str, str], now: float | None = None) -> tuple[float, float]:
    """Read ``GET /api/overview``'s range: ``days`` (default 30) up to today, or since/until.

    Args:
        params: The query parameters.
        now: The present (the clock's by default).

    Returns:
        ``(since, until)`` as Unix times; ``days=N`` covers N whole days (UTC), today's
        included.

    Raises:
        HTTPException: 400 naming the parameter that cannot be read.
    """
    present = time.time() if now is None else now
    since, until = _time(params, "since", present), _time(params, "until", present)
    if since is None and until is None:
        days = _count(params, "days", 30, 1, MAX_OVERVIEW_DAYS)
        tomorrow = (present // 86400 + 1) * 86400  # Unix days are UTC days
        return tomorrow - days * 86400, tomorrow
    until = present if until is None else until
    since = until - 30 * 86400 if since is None else since
    if since >= until:
        raise HTTPException(400, "since: must be before until")
    if until - since > MAX_OVERVIEW_DAYS * 86400:
        raise HTTPException(400, f"since, until: at most {MAX_OVERVIEW_DAYS} days apart")
    return since, until


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range a ``Range`` header asks of ``size`` bytes, or None for all of them.

    Only ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` are read; several ranges, or a
    header of another form, get the whole body (as RFC 9110 allows).

    Args:
        header: The request's ``Range`` header.
        size: The body's length.

    Returns:
        ``(first, last)``, both inclusive, or None.

    Raises:
        HTTPException: 416 when the range starts past the end.
    """
    found = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header or "")
    if found is None or found.group(1) == found.group(2) == "":
        return None
    first_text, last_text = found.groups()
    if first_text == "":  # the last n bytes
        first, last = max(size - int(last_text), 0), size - 1
    else:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
        if first > last and last_text and first < size:
            return None  # a range that makes no sense: the whole body
    if first >= size or size == 0:
        raise HTTPException(416, "the range is past the end", {"Content-Range": f"bytes */{size}"})
    return first, last


def summary(record: CallRecord) -> dict[str, Any]:
    """The record as ``GET /api/calls`` lists it: without its transcript, ``turns`` counted.

    Args:
        record: The call's record.
    """
    data = record.to_dict()
    data["turns"] = len(data.pop("transcript", []))
    return data


class Console:
    """The read API's and the console's routes, on the runner's records and recordings."""

    def __init__(self, runner: CallData):
        """Initialize the routes.

        Args:
            runner: The runner whose records and recordings are read.
        """
        self.runner = runner
        self._assets = {name: asset(name) for name in ASSET_TYPES}
        self._etags = {
            name: '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            for name, body in self._assets.items()
        }
        version = hashlib.sha256("".join(self._etags.values()).encode()).hexdigest()[:12]
        self._page = asset("console.html").decode().replace("{{version}}", version)
        self.router = APIRouter()
        route = self.router.add_api_route
        route("/api/calls", self.calls, methods=["GET"])
        route("/api/calls/{call_sid}", self.call, methods=["GET"])
        route("/api/calls/{call_sid}/recording", self.recording, methods=["GET"])
        route("/api/overview", self.overview, methods=["GET"])
        route("/api/info", self.info, methods=["GET"])
        route("/console", self.page, methods=["GET"])
        route("/console/assets/{name}", self.asset, methods=["GET"])

    @property
    def settings(self) -> Settings:
        """The runner's settings."""
        return self.runner.settings

    def _on(self) -> None:
        if self.settings.runner_api_key is None:
            raise HTTPException(404, "the console is off: set RUNNER_API_KEY")

    async def _record(self, call_sid: str) -> CallRecord:
        if CALL_SID.fullmatch(call_sid) is None:
            raise HTTPException(400, "not a CallSid: CA and 32 hex digits")
        try:
            record = await self.runner.store.aget(call_sid)
        except Exception as e:
            raise self._unavailable("read", e) from None
        if record is None:
            raise HTTPException(404, "no such call")
        return record

    @staticmethod
    def _unavailable(what: str, error: BaseException) -> HTTPException:
        logger.error(f"The console could not {what} the call store: {describe_error(error)}")
        return HTTPException(503, "the call store is unavailable; see the runner's log")

    async def calls(self, request: Request) -> JSONResponse:
        """The calls matching the filters, newest first, as summaries."""
        require_api_key(request, self.settings, "the call API")
        query = call_query(request.query_params)
        try:
            page = await self.runner.store.asearch(query)
        except Exception as e:
            raise self._unavailable("search", e) from None
        body = {
            "calls": [summary(record) for record in page.records],
            "total": page.total,
            "limit": query.limit,
            "offset": query.offset,
        }
        return JSONResponse(body, headers=_NO_STORE)

    async def call(self, call_sid: str, request: Request) -> JSONResponse:
        """The call's whole record."""
        require_api_key(request, self.settings, "the call API")
        record = await self._record(call_sid)
        return JSONResponse(record.to_dict(), headers=_NO_STORE)

    async def recording(self, call_sid: str, request: Request) -> Response:
        """The call's recording as WAV; one byte range answers 206."""
        require_api_key(request, self.settings, "the call API")
        record = await self._record(call_sid)
        location = (record.recording or {}).get("location")
        if not isinstance(location, str) or not location:
            raise HTTPException(404, "the call has no recording")
        try:
            wav = await self.runner.recordings.read(location)
        except Exception as e:
            logger.error(f"Could not read the recording of call {call_sid}: {describe_error(e)}")
            raise HTTPException(
                503, "the recording cannot be read now; see the runner's log"
            ) from None
        if wav is None:
            raise HTTPException(404, "the recording is gone (RECORDING_RETENTION_DAYS?)")
        headers = {
            **_NO_STORE,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{call_sid}.wav"',
        }
        wanted = byte_range(request.headers.get("range"), len(wav))
        if wanted is None:
            return Response(wav, media_type="audio/wav", headers=headers)
        first, last = wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{len(wav)}"
        return Response(wav[first : last + 1], 206, media_type="audio/wav", headers=headers)

    async def overview(self, request: Request) -> JSONResponse:
        """Calls, minutes, cost and latency per day; cost per bot; end reasons."""
        require_api_key(request, self.settings, "the call API")
        since, until = overview_range(request.query_params)
        try:
            body = await self.runner.store.aoverview(since, until)
        except Exception as e:
            raise self._unavailable("summarize", e) from None
        return JSONResponse({**body, "since": since, "until": until}, headers=_NO_STORE)

    async def info(self, request: Request) -> JSONResponse:
        """What the runner keeps (a webhook, recordings), and the instances that take calls."""
        require_api_key(request, self.settings, "the call API")
        body = {
            "webhook_configured": self.settings.call_webhook_url is not None,
            "record_calls": self.settings.record_calls,
            "twilio_record": self.settings.twilio_record,
            "instances": await self.runner.instances(),
        }
        return JSONResponse(body, headers=_NO_STORE)

    async def page(self) -> HTMLResponse:
        """The console's page (it asks for the key itself)."""
        self._on()
        return HTMLResponse(self._page, headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"})

    async def asset(self, name: str, request: Request) -> Response:
        """One of the console's files, cached for a day (the page names them by version)."""
        self._on()
        if name not in self._assets:
            raise HTTPException(404, "no such file")
        headers = {
            "ETag": self._etags[name],
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == self._etags[name]:
            return Response(status_code=304, headers=headers)
        return Response(self._assets[name], media_type=ASSET_TYPES[name], headers=headers)
