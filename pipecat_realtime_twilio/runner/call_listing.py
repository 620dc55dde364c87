#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Call records as text for the terminal (``pipecat-realtime-twilio calls``), times in UTC."""

from typing import Any

from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.runner.timespec import utc_text

_RESULT_CHARS = 80


def row(record: CallRecord) -> str:
    """One line of the call list: SID, start (UTC), direction, bot, duration, cost, end.

    Args:
        record: The call's record.
    """
    cost = f"${record.cost_usd:.4f}" if record.cost_usd is not None else "-"
    return (
        f"{record.call_sid}  {utc_text(record.started_at)}  {record.direction:<8}  "
        f"{record.bot:<12}  {record.duration_s or 0:6.1f}s  {cost:>9}  {record.end_reason}"
    )


def record_lines(record: CallRecord, *, webhook_configured: bool) -> list[str]:
    """The whole record as lines: the call, its cost, what happened when, the transcript.

    Args:
        record: The call's record.
        webhook_configured: Whether ``CALL_WEBHOOK_URL`` is set (else the record's
            delivery is not news: it says "no webhook configured").

    Returns:
        The lines, without line ends.
    """
    r = record
    lines = [
        f"Call {r.call_sid} ({r.direction}) to bot '{r.bot}', {r.from_number} -> {r.to_number}",
        f"  started {utc_text(r.started_at)}, {r.duration_s or 0:.1f} s, ended: {r.end_reason}",
    ]
    usage = ", ".join(f"{k.removesuffix('_tokens')} {v}" for k, v in r.usage.as_dict().items())
    cost = f"${r.cost_usd:.4f}" if r.cost_usd is not None else "unknown (no price for the model)"
    lines.append(f"  model {r.model}; tokens: {usage}; cost {cost}")
    if r.cost:
        split = ", ".join(f"{kind} ${usd:.4f}" for kind, usd in r.cost.items() if usd)
        lines.append(f"  cost by kind: {split or 'nothing'}")
    p50 = r.latency.get("p50_ms")
    if p50 is not None:
        answers = len(r.latency.get("response_ms") or [])
        lines.append(f"  response latency p50 {p50:.0f} ms over {answers} answers")
    if webhook_configured:
        lines.append(f"  webhook delivered: {'yes' if r.webhook_delivered else 'not yet'}")
    else:
        lines.append("  webhook: no webhook configured")
    if r.recording:
        lines.append(
            f"  recording: {r.recording.get('location')} ({r.recording.get('duration_s', 0):.1f} s)"
        )
    if r.twilio_recording_url:
        lines.append(f"  Twilio's recording: {r.twilio_recording_url}")
    if r.analysis:
        lines.extend(_analysis_lines(r.analysis))
    events = _events(r)
    if events:
        lines.append("  timeline:")
        lines.extend(f"    [{at - r.started_at:6.1f} s] {text}" for at, text in events)
    lines.append("  transcript:")
    for turn in r.transcript:
        cut = " (interrupted)" if turn.get("interrupted") else ""
        lines.append(
            f"    [{turn['at'] - r.started_at:6.1f} s] {turn['role']:>6}: {turn['text']}{cut}"
        )
    return lines


def _analysis_lines(analysis: dict[str, Any]) -> list[str]:
    if analysis.get("error"):
        return [f"  analysis ({analysis.get('model')}): failed: {analysis['error']}"]
    lines = [f"  analysis ({analysis.get('model')}):"]
    for name, value in (analysis.get("fields") or {}).items():
        lines.append(f"    {name}: {value}")
    return lines


def _events(r: CallRecord) -> list[tuple[float, str]]:
    """Everything on the call's clock but the transcript, in order."""
    events: list[tuple[float, str]] = []
    for e in r.stream_events:
        error = f": {e['error']}" if e.get("error") else ""
        events.append((e.get("at", r.started_at), f"stream {e.get('event')}{error}"))
    for t in r.turn_latencies:
        events.append((t["at"], f"answer heard after {t['response_ms']:.0f} ms"))
    for b in r.barge_ins:
        events.append((b["at"], f"barge-in after {b['heard_ms']:.0f} ms of the answer heard"))
    for c in r.tool_calls:
        outcome = f"error: {c['error']}" if c.get("error") else f"-> {c.get('result')}"
        text = f"tool {c['name']}({c.get('arguments', '')}) {outcome}"
        if len(text) > _RESULT_CHARS:
            text = text[: _RESULT_CHARS - 1] + "…"
        events.append((c["at"], f"{text} [{c.get('duration_ms', 0):.0f} ms]"))
    for k in r.keypad:
        events.append((k["at"], f"keypad {k['digits']}"))
    for x in r.transfers:
        events.append((x["at"], f"{x.get('kind', 'transfer')} to {x['target']}"))
    return sorted(events, key=lambda event: event[0])
