#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Call records: what happened on a call, as a dataclass that round-trips through JSON.

- `CallRecord`: one call (who, when, how it ended, transcript, token usage and cost,
  response latency).
- `latency_summary`: the record's latency figures from per-answer samples.
- `summary_line`: the one log line a finished call gets.

Records are kept by :class:`~pipecat_realtime_twilio.runner.store.CallStore` and sent by
:class:`~pipecat_realtime_twilio.runner.webhook.WebhookSender`;
:class:`~pipecat_realtime_twilio.runner.bookkeeping.RecordKeeper` does both for the runner.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast

from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
from pipecat_realtime_twilio.agent.usage import Usage
from pipecat_realtime_twilio.logs import mask_numbers


def _json_safe(value: Any) -> Any:
    """Return ``value`` with only JSON types: non-finite floats become None, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _percentile(ordered: list[float], fraction: float) -> float:
    """Return a percentile of sorted samples, interpolating between the closest ranks."""
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(response_ms: Iterable[float]) -> dict[str, Any]:
    """Return the ``latency`` dict of a `CallRecord` from response latency samples.

    Args:
        response_ms: Milliseconds from the end of the caller's turn to the first
            audio of the answer, one per answer (non-finite samples are dropped).

    Returns:
        ``{"response_ms": [...], "p50_ms": float | None, "p90_ms": float | None}``;
        the percentiles interpolate between the closest ranks and are None without
        samples.
    """
    samples = [float(s) for s in response_ms if math.isfinite(float(s))]
    ordered = sorted(samples)
    return {
        "response_ms": samples,
        "p50_ms": _percentile(ordered, 0.5) if ordered else None,
        "p90_ms": _percentile(ordered, 0.9) if ordered else None,
    }


@dataclass
class CallRecord:
    """What happened on one call.

    Parameters:
        call_sid: Twilio's CallSid; the record's key.
        bot: Name of the bot that answered.
        from_number: Caller's number (Twilio's ``From``).
        to_number: Called number (Twilio's ``To``).
        direction: ``"inbound"`` or ``"outbound"``.
        model: Realtime model id of the call.
        started_at: Start, as a Unix timestamp in seconds.
        ended_at: End, as a Unix timestamp in seconds; None while the call lasts.
        duration_s: Length of the call in seconds.
        end_reason: Why the call ended (e.g. ``"caller_hung_up"``, ``"end_call"``).
        transcript: Turns in order, each ``{"role": "caller" | "bot", "text": str,
            "at": float (Unix timestamp: the utterance complete), "interrupted": bool}``,
            ``"started_at": float`` when its start is known (the caller's speech
            detected, the answer's first audio), and ``"unrecognised": true`` on a
            caller turn that could not be transcribed.
        usage: Realtime tokens used by the call.
        cost_usd: What the tokens cost, or None for a model without a price.
        latency: Response latency, as `latency_summary` returns it.
        webhook_delivered: Whether the record reached the webhook.
        stream_events: The media stream's status events from Twilio (its
            ``statusCallback``), in arrival order, each ``{"event": "stream-started" |
            "stream-stopped" | "stream-error", "at": float (Unix timestamp),
            "stream_sid": str, "error": str (stream-error only)}``.
        revision: 0 for the record made when the call ended, one more each time it
            was amended since (a stream event that came later); of two records of
            one call, the higher revision is the newer.
        caller_audio_dropped_ms: Caller audio dropped for arriving faster than real
            time (a stream flooding the runner), in milliseconds.
        tool_calls: Each tool the model called, in order: ``{"name": str, "call_id":
            str, "arguments": str (JSON text), "result": str | None, "error": str |
            None, "at": float (Unix timestamp), "duration_ms": float}``; ``result`` is
            None when ``error`` is set, and text over 2000 characters is cut with a mark.
            Each of these lists is capped per call (200 tool calls, 1000 of the others).
        keypad: Keys the caller pressed, one entry per group sent to the model:
            ``{"digits": str, "at": float}``.
        transfers: Transfers of the call: ``{"target": str, "at": float, "kind":
            "transfer" | "fallback"}``.
        barge_ins: Each time the caller cut the bot off: ``{"at": float,
            "heard_ms": float (of the cut answer, as heard), "item_id": str | None}``.
        turn_latencies: Per answer, ``{"at": float (the caller stopped speaking),
            "response_ms": float (until the first audio of the answer was heard)}``.
        recording: The call's recording, if kept: ``{"location": str (a file path or
            ``s3://bucket/key``), "bytes": int, "duration_s": float, "sample_rate":
            8000, "channels": 2}``.
        twilio_recording_url: Twilio's own recording of the call (``TWILIO_RECORD``).
        cost: ``cost_usd`` split by kind, USD: ``audio_in``, ``cached_audio_in``,
            ``audio_out``, ``text_in``, ``cached_text_in``, ``text_out`` (Realtime
            tokens) and ``analysis`` (the post-call analysis); empty without a price.
        analysis: The post-call analysis, if the bot declares one: ``{"model": str,
            "fields": dict (the bot's declared fields, ``summary`` first), "error": str |
            None, "at": float}``.
        greeting: Where the bot's greeting came from: ``"cache"`` (played from the
            greeting cache at the stream's start; its transcript turn has ``"cached":
            true``), ``"model"`` (spoken by the model), or None (no greeting).
        warm_transfer: The call's warm transfer, if the bot tried one (the last attempt):
            ``{"number": str, "outcome": "bridged" | "no_answer" | "busy" | "failed" |
            "declined" | "caller_hung_up", "human_call_sid": str | None, "conference":
            str, "summary": str, "rang_secs": float | None, "held_secs": float | None,
            "at": float, "error": str | None, "attempts": int}``.
        engine: The speech-to-speech API of the call: ``"realtime"`` (OpenAI Realtime,
            billed by tokens) or ``"live"`` (GPT-Live, billed by the minute).
        live: GPT-Live billing, for ``engine == "live"``: ``{"billed_seconds": float
            (active session, as the server reported it), "sessions": int,
            "backend_model": str}``; ``usage`` then holds the backend model's tokens and
            ``cost`` the kinds ``live`` (the minutes) and ``text_in``, ``cached_text_in``,
            ``text_out`` (the backend's tokens).
    """

    call_sid: str
    bot: str = ""
    from_number: str | None = None
    to_number: str | None = None
    direction: str = "inbound"
    model: str = ""
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    duration_s: float | None = None
    end_reason: str | None = None
    transcript: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    latency: dict[str, Any] = field(default_factory=lambda: latency_summary([]))
    webhook_delivered: bool = False
    stream_events: list[dict[str, Any]] = field(default_factory=list)
    revision: int = 0
    caller_audio_dropped_ms: float = 0.0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    keypad: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    turn_latencies: list[dict[str, Any]] = field(default_factory=list)
    recording: dict[str, Any] | None = None
    twilio_recording_url: str | None = None
    cost: dict[str, float] = field(default_factory=dict)
    analysis: dict[str, Any] | None = None
    greeting: str | None = None
    warm_transfer: dict[str, Any] | None = None
    engine: str = "realtime"
    live: dict[str, Any] | None = None

    def add_turn(
        self,
        role: str,
        text: str,
        at: float | None = None,
        interrupted: bool = False,
        *,
        unrecognised: bool = False,
        started_at: float | None = None,
    ) -> None:
        """Append a turn to the transcript.

        Args:
            role: ``"caller"`` or ``"bot"``.
            text: What was said.
            at: When, as a Unix timestamp; now if None.
            interrupted: Whether the caller cut the bot off.
            unrecognised: The caller spoke but could not be transcribed (the turn is
                kept with ``"unrecognised": true``).
            started_at: When the utterance began, as a Unix timestamp, if known.
        """
        entry = TranscriptEntry(
            role=cast(Any, role),  # kept as given
            text=text,
            at=time.time() if at is None else at,
            interrupted=interrupted,
            unrecognised=unrecognised,
            started_at=started_at,
        )
        self.transcript.append(entry.as_dict())

    def finish(self, end_reason: str, ended_at: float | None = None) -> None:
        """Set the end of the call: ``end_reason``, ``ended_at`` and ``duration_s``.

        Args:
            end_reason: Why the call ended.
            ended_at: When, as a Unix timestamp; now if None.
        """
        self.end_reason = end_reason
        self.ended_at = time.time() if ended_at is None else ended_at
        self.duration_s = max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a dict of JSON types (``usage`` as a dict of counts)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["usage"] = self.usage.as_dict()
        return _json_safe(data)

    def to_json(self) -> str:
        """Return the record as compact JSON text (non-finite floats become null)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        """Return the record that `to_dict` returned; unknown keys are ignored.

        Args:
            data: The record as a dict; only ``call_sid`` is required.

        Returns:
            The record.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["usage"] = Usage.from_dict(data.get("usage"))
        values["transcript"] = [dict(t) for t in data.get("transcript") or []]
        values["latency"] = dict(data.get("latency") or latency_summary([]))
        values["webhook_delivered"] = bool(data.get("webhook_delivered", False))
        values["stream_events"] = [dict(e) for e in data.get("stream_events") or []]
        values["revision"] = int(data.get("revision") or 0)
        for name in ("tool_calls", "keypad", "transfers", "barge_ins", "turn_latencies"):
            values[name] = [dict(entry) for entry in data.get(name) or []]
        values["cost"] = dict(data.get("cost") or {})
        return cls(**values)

    def add_stream_event(self, event: dict[str, Any]) -> None:
        """Add a stream status event that came after the record was made.

        The record becomes a new revision, not yet sent to the webhook.

        Args:
            event: The event, as :attr:`stream_events` holds them.
        """
        self.stream_events.append(dict(event))
        self.revision += 1
        self.webhook_delivered = False

    @classmethod
    def from_json(cls, text: str | bytes) -> CallRecord:
        """Return the record that `to_json` returned.

        Args:
            text: JSON text of a record.

        Returns:
            The record.
        """
        return cls.from_dict(json.loads(text))


def stream_event(form: Mapping[str, str]) -> dict[str, Any]:
    """A stream status callback of Twilio's, as ``CallRecord.stream_events`` keeps it.

    Args:
        form: The callback's form parameters (``StreamEvent``, ``StreamSid``,
            ``Timestamp``, ``StreamError``...).

    Returns:
        ``{"event", "at", "stream_sid"}``, and ``"error"`` for a ``stream-error``;
        ``at`` is Twilio's ``Timestamp`` (ISO 8601 or RFC 2822) as Unix time, or now.
    """
    event: dict[str, Any] = {
        "event": form.get("StreamEvent", ""),
        "at": _unix_time(form.get("Timestamp")),
        "stream_sid": form.get("StreamSid", ""),
    }
    if event["event"] == "stream-error" or form.get("StreamError"):
        event["error"] = form.get("StreamError", "")
    return event


def _unix_time(timestamp: str | None) -> float:
    """Twilio's timestamp (UTC) as Unix time; now if it is missing or unreadable."""
    text = (timestamp or "").strip()
    for parse in (
        lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")),
        parsedate_to_datetime,
    ):
        try:
            moment = parse(text)
        except (ValueError, TypeError, IndexError):
            continue
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return time.time()


def summary_line(record: CallRecord) -> str:
    """The one log line of a finished call: bot, duration, end, turns, cost, p50 latency.

    Args:
        record: The finished call's record.
    """
    p50 = record.latency["p50_ms"]
    p50_text = f"{p50:.0f}ms" if p50 is not None else "-"
    cost = f"${record.cost_usd:.4f}" if record.cost_usd is not None else "unknown cost"
    return (
        f"Call {record.call_sid} summary: bot={record.bot} duration={record.duration_s or 0:.1f}s "
        f"end={mask_numbers(record.end_reason or '')!r} turns={len(record.transcript)} cost={cost} "
        f"p50_response={p50_text}"
    )
