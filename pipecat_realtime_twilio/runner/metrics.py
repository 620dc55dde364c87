#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Prometheus metrics of the runner (prometheus-client), one registry per runner."""

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipecat_realtime_twilio.phone.ending import CallEnd, EndKind
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.seams import CallAgent

_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
_DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
STREAM_EVENTS = ("stream-started", "stream-stopped", "stream-error")
"""The ``StreamEvent`` values of Twilio's stream status callbacks."""

__all__ = ["CONTENT_TYPE", "RunnerMetrics"]


def end_label(end: CallEnd | None) -> str:
    """The ``end_reason`` label of a call's end: one of a few kinds, never free text.

    Args:
        end: How the call ended (None: ``unknown``).
    """
    if end is None:
        return "unknown"
    if end.failure is not None:  # bounded: the code as the failure metric has it
        return f"failed: {end.failure.stage}: {end.failure.metric_code}"
    if end.kind in (EndKind.ENDED, EndKind.TRANSFERRED, EndKind.FAILED):
        return end.kind.value  # not the bot's reason, not the number
    return end.reason


class RunnerMetrics:
    """The runner's series, all prefixed ``prt_`` (pipecat-realtime-twilio).

    - ``prt_calls_active``: calls streaming now.
    - ``prt_calls_total{end_reason,bot}``: finished calls, by how they ended (a bounded
      kind: ``caller hung up``, ``stream closed``, ``ended``, ``transferred``,
      ``runner shutting down``, ``pipeline ended``, ``failed: <stage>: <code>``; never
      a number or a bot's free text) and by bot.
    - ``prt_calls_rejected_total{reason}``: calls or streams turned away
      (``busy``, ``signature``, ``token``, ``replay``, ``account``).
    - ``prt_call_duration_seconds``: stream start to end.
    - ``prt_response_latency_seconds``: the caller stops speaking to the first
      audio of the answer heard on the phone.
    - ``prt_barge_ins_total``: times the caller cut the bot off.
    - ``prt_tool_calls_total{outcome}``: tools the model called, ``ok`` or ``error``
      (raised, timed out, cancelled, unfinished).
    - ``prt_keypad_groups_total``: groups of keys sent to the model;
      ``prt_keypad_deferred_total``: those whose response the rate limit held back.
    - ``prt_realtime_reconnects_total``: Realtime sessions reopened after a drop.
    - ``prt_realtime_tokens_total{kind}``: Realtime API tokens by kind
      (``input_text``, ``input_audio``, ``cached_text``, ``cached_audio``,
      ``output_text``, ``output_audio``).
    - ``prt_call_cost_usd_total``: cost of the Realtime API, from the price table.
    - ``prt_prewarm_total{outcome}``: pre-warmed Realtime sessions, by what became of
      them: ``used`` (the call's stream took it), ``expired`` (no stream came within
      ``PREWARM_TIMEOUT_SECS``; closed), ``failed`` (it could not open; the call
      connects when its stream starts), ``dropped`` (closed unused for another
      reason: the webhook asked again, another bot, the runner stopping), ``elsewhere``
      (its stream started on another instance, which said so through Redis; closed at once).
    - ``prt_greeting_total{source}``: calls that greeted, by where the greeting came from:
      ``cache`` (played from the greeting cache at the stream's start) or ``model``.
    - ``prt_warm_transfers_total{outcome}``: calls that tried a warm transfer, by the
      outcome of the last attempt (``bridged``, ``no_answer``, ``busy``, ``failed``,
      ``declined``, ``caller_hung_up``).
    - ``prt_live_seconds_total``: GPT-Live session seconds billed (``engine: live`` calls).
    - ``prt_records_pending``: call records waiting in the outbox for the database.
    - ``prt_call_failures_total{stage,code}``: calls handed to the fallback, by the
      stage that failed (``build``, ``connect``, ``configure``, ``greet``, ``respond``,
      ``reconnect``, ``rotate``, ``task``) and a bounded code (see
      :data:`~pipecat_realtime_twilio.failures.KNOWN_CODES`; others count as ``other``).
    - ``prt_caller_audio_dropped_seconds_total``: caller audio dropped for arriving
      faster than real time (a stream flooding the runner; see ``phone/inbound.py``).
    - ``prt_stream_events_total{event}``: Twilio's media stream status callbacks, by
      event: ``stream-started``, ``stream-stopped``, ``stream-error`` (``other`` for
      anything else).
    - ``prt_shared_state_errors_total{operation}``: Redis operations that failed
      (``REDIS_URL``); the instance went on with what it knows itself.
    - ``prt_account_calls``: lines in use across every instance, as last read
      (what ``MAX_CALLS_TOTAL`` counts); ``prt_instances``: instances alive in the registry.
    - ``prt_campaign_dials_total{result}``: campaign calls asked of Twilio: ``placed``,
      ``refused`` (Twilio said no), ``error`` (no answer from Twilio).
    - ``prt_campaign_outcomes_total{outcome}``: campaign numbers finished, by their one
      outcome (``answered``, ``voicemail``, ``machine``, ``busy``, ``no_answer``,
      ``failed``, ``canceled``, ``hung_up``, ``invalid``, ``expired``).
    - ``prt_campaign_amd_total{answered_by}``: Twilio's answering-machine detection
      results (``human``, ``machine_end_beep``, ``machine_start``, ``fax``, ``unknown``...).
    """

    def __init__(self) -> None:
        """Create the series in a registry of their own."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("prt_calls_active", "Calls streaming now.", registry=r)
        self.calls = Counter(
            "prt_calls", "Finished calls, by end reason and bot.", ["end_reason", "bot"], registry=r
        )
        self.rejected = Counter(
            "prt_calls_rejected", "Calls or streams turned away.", ["reason"], registry=r
        )
        self.duration = Histogram(
            "prt_call_duration_seconds",
            "Call duration (stream start to end).",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.response_latency = Histogram(
            "prt_response_latency_seconds",
            "Caller stops speaking to the first answer audio heard on the phone.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter("prt_barge_ins", "Times the caller cut the bot off.", registry=r)
        self.tool_calls = Counter(
            "prt_tool_calls", "Tools the model called, by outcome.", ["outcome"], registry=r
        )
        self.keypad_groups = Counter(
            "prt_keypad_groups", "Groups of keys sent to the model.", registry=r
        )
        self.keypad_deferred = Counter(
            "prt_keypad_deferred", "Keypad groups whose response was held back.", registry=r
        )
        self.reconnects = Counter(
            "prt_realtime_reconnects", "Realtime sessions reopened after a drop.", registry=r
        )
        self.tokens = Counter(
            "prt_realtime_tokens", "Realtime API tokens, by kind.", ["kind"], registry=r
        )
        self.cost = Counter(
            "prt_call_cost_usd", "Realtime API cost in USD (price table).", registry=r
        )
        self.prewarm = Counter(
            "prt_prewarm", "Pre-warmed Realtime sessions, by outcome.", ["outcome"], registry=r
        )
        self.greetings = Counter(
            "prt_greeting", "Calls that greeted, by source (cache, model).", ["source"], registry=r
        )
        self.warm_transfers = Counter(
            "prt_warm_transfers", "Warm transfers, by outcome.", ["outcome"], registry=r
        )
        self.live_seconds = Counter(
            "prt_live_seconds", "GPT-Live session seconds billed.", registry=r
        )
        self.records_pending = Gauge(
            "prt_records_pending", "Call records in the outbox, not yet stored.", registry=r
        )
        self.failures = Counter(
            "prt_call_failures",
            "Calls handed to the fallback, by stage and code.",
            ["stage", "code"],
            registry=r,
        )
        self.caller_audio_dropped = Counter(
            "prt_caller_audio_dropped_seconds",
            "Caller audio dropped for arriving faster than real time.",
            registry=r,
        )
        self.stream_events = Counter(
            "prt_stream_events",
            "Twilio media stream status callbacks, by event.",
            ["event"],
            registry=r,
        )

        # Several instances (REDIS_URL): runner.shared_state.
        self.shared_state_errors = Counter(
            "prt_shared_state_errors",
            "Shared-state (Redis) operations that failed, by operation; the instance fell "
            "back on what it knows itself.",
            ["operation"],
            registry=r,
        )
        self.account_calls = Gauge(
            "prt_account_calls",
            "Lines in use across every instance (MAX_CALLS_TOTAL's count), as last read.",
            registry=r,
        )
        self.instances = Gauge(
            "prt_instances", "Instances alive in the registry, as last read.", registry=r
        )
        # Outbound campaigns: runner.dialer.
        self.campaign_dials = Counter(
            "prt_campaign_dials",
            "Campaign calls asked of Twilio, by result (placed, refused, error).",
            ["result"],
            registry=r,
        )
        self.campaign_outcomes = Counter(
            "prt_campaign_outcomes",
            "Campaign numbers finished, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.campaign_amd = Counter(
            "prt_campaign_amd",
            "Answering-machine detection results (Twilio's AnsweredBy).",
            ["answered_by"],
            registry=r,
        )

    def count_stream_event(self, event: str) -> None:
        """Count a stream status callback.

        Args:
            event: Its ``StreamEvent``; unknown ones are counted as ``other``.
        """
        self.stream_events.labels(event if event in STREAM_EVENTS else "other").inc()

    def count_call(
        self, record: CallRecord, agent: CallAgent | None, end: CallEnd | None = None
    ) -> None:
        """Count a finished call: end, duration, latencies, barge-ins, tools, keys, tokens, cost.

        Args:
            record: The call's record.
            agent: The agent that talked on it, if one started.
            end: How it ended (None: unknown).
        """
        failure = end.failure if end is not None else None
        if failure is not None:
            self.failures.labels(str(failure.stage), failure.metric_code).inc()
        self.calls.labels(end_label(end), record.bot or "-").inc()
        self.duration.observe(record.duration_s or 0.0)
        for ms in record.latency["response_ms"]:
            self.response_latency.observe(ms / 1000)
        if agent is not None:
            self.barge_ins.inc(agent.barge_ins)
            self.reconnects.inc(agent.reconnects)
            self.keypad_groups.inc(agent.keypad_groups)
            self.keypad_deferred.inc(agent.keypad_deferred)
        for call in record.tool_calls:
            self.tool_calls.labels("error" if call.get("error") else "ok").inc()
        for kind, count in record.usage.as_dict().items():
            self.tokens.labels(kind.removesuffix("_tokens")).inc(count)
        if record.cost_usd is not None:
            self.cost.inc(record.cost_usd)
        self.caller_audio_dropped.inc(record.caller_audio_dropped_ms / 1000)
        if record.warm_transfer is not None:
            self.warm_transfers.labels(record.warm_transfer.get("outcome") or "unfinished").inc()
        if record.live is not None:
            self.live_seconds.inc(float(record.live.get("billed_seconds") or 0.0))
        if record.greeting in ("cache", "model"):
            self.greetings.labels(record.greeting).inc()

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
