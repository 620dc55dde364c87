#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Post-call analysis: after a call, a text model fills the fields its bot declares.

A bot declares the fields (:mod:`~pipecat_realtime_twilio.runner.analysis_spec`).
Once the call's record is kept (stored and sent: the analysis never holds it
back), :class:`PostCallAnalysis` sends the call's transcript to the Responses
API (``OPENAI_BASE_URL``, else derived from ``OPENAI_REALTIME_URL``) with a strict
JSON schema of the fields, checks the answer against the declaration, and amends
the record (:meth:`~pipecat_realtime_twilio.runner.bookkeeping.RecordKeeper.amend_with`),
which is stored and sent to the webhook again, one ``revision`` higher::

    record.analysis == {"model": "gpt-4.1-mini-2025-04-14", "at": 1767225600.0, "error": None,
                        "fields": {"summary": "...", "outcome": "message_taken", ...}}

Its cost goes to ``record.cost["analysis"]`` and into ``cost_usd``
(:data:`TEXT_PRICES`). When the API fails (after the ``openai`` client's own
retries of 429s, 5xx and timeouts), the answer does not match, or the runner shuts
down first, ``fields`` is None and ``error`` says why, in one line. A call in which
the caller neither spoke nor pressed a key is not analysed (its ``analysis``
stays None). ``prt_call_analyses_total{bot,result}`` counts the outcomes: ``ok``,
``failed``, ``skipped``, ``abandoned``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import openai
from loguru import logger
from openai.types.responses import ResponseUsage
from prometheus_client import Counter
from pydantic import ValidationError

from pipecat_realtime_twilio.agent.configuration import is_azure_url
from pipecat_realtime_twilio.logs import field
from pipecat_realtime_twilio.runner.analysis_spec import AnalysisSpec, output_model
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.settings import Settings

if TYPE_CHECKING:
    from pipecat_realtime_twilio.runner.bookkeeping import RecordKeeper
    from pipecat_realtime_twilio.runner.metrics import RunnerMetrics

ANALYSIS_TIMEOUT_SECS = 30.0
"""Most seconds one request to the Responses API may take."""

ANALYSIS_RETRIES = 2
"""Tries after the first on a 429, a 5xx, a timeout or a lost connection (the client's own)."""

MAX_TRANSCRIPT_CHARS = 24_000
"""Most characters of a call's text sent; a longer call keeps its start and its end."""

MAX_OUTPUT_TOKENS = 4_000
"""Most tokens the model may answer with (reasoning included)."""

ABANDONED = "abandoned: the runner shut down before the analysis finished"

INSTRUCTIONS = (
    "You analyse a phone call that has ended, from its transcript. The bot is an automated "
    "phone agent; the caller is a person. Fill in every field as its description says, from "
    "what the transcript shows only: do not invent names, numbers or facts. When the "
    "transcript does not settle a field, pick the value that claims the least."
)


@dataclass(frozen=True)
class TextPrice:
    """A text model's prices, USD per million tokens.

    Parameters:
        input: Uncached input tokens.
        cached_input: Cached input tokens.
        output: Output tokens (reasoning included).
    """

    input: float
    cached_input: float
    output: float


TEXT_PRICES: Mapping[str, TextPrice] = MappingProxyType(
    {
        "gpt-4.1": TextPrice(2.00, 0.50, 8.00),
        "gpt-4.1-mini": TextPrice(0.40, 0.10, 1.60),
        "gpt-4.1-nano": TextPrice(0.10, 0.025, 0.40),
        "gpt-4o": TextPrice(2.50, 1.25, 10.00),
        "gpt-4o-mini": TextPrice(0.15, 0.075, 0.60),
        "gpt-5": TextPrice(1.25, 0.125, 10.00),
        "gpt-5-mini": TextPrice(0.25, 0.025, 2.00),
        "gpt-5-nano": TextPrice(0.05, 0.005, 0.40),
    }
)
"""OpenAI's standard prices of common text models (a dated snapshot is priced as its model)."""


def analysis_cost_usd(model: str, usage: ResponseUsage | None) -> float | None:
    """What an analysis cost, from the Responses API's ``usage``.

    Args:
        model: The model that answered (``gpt-4.1-mini`` or ``gpt-4.1-mini-2025-04-14``).
        usage: The response's usage.

    Returns:
        USD, or None for a model not in :data:`TEXT_PRICES` or no usage.
    """
    price = TEXT_PRICES.get(re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model))
    if price is None or usage is None:
        return None
    cached = usage.input_tokens_details.cached_tokens if usage.input_tokens_details else 0
    return (
        (usage.input_tokens - cached) * price.input
        + cached * price.cached_input
        + usage.output_tokens * price.output
    ) / 1_000_000


def call_text(record: CallRecord, limit: int = MAX_TRANSCRIPT_CHARS) -> str:
    """The call as the model reads it: how it ended, then who said what, labelled.

    Keypad presses are lines of their own. Text beyond ``limit`` characters is left
    out of the middle (the start and the end of a call say most about it).

    Args:
        record: The call's record.
        limit: Most characters.
    """
    lines: list[tuple[float, str]] = []
    for turn in record.transcript:
        who = "Caller" if turn.get("role") == "caller" else "Bot"
        text = "[could not be transcribed]" if turn.get("unrecognised") else turn.get("text", "")
        cut = " [cut off by the caller]" if turn.get("interrupted") else ""
        lines.append((float(turn.get("at") or 0), f"{who}: {text}{cut}"))
    for press in record.keypad:
        lines.append((float(press.get("at") or 0), f"Caller pressed keys: {press.get('digits')}"))
    lines.sort(key=lambda line: line[0])
    head = (
        f"The call lasted {record.duration_s or 0:.0f} s and ended: {record.end_reason}.\n"
        "Transcript:\n"
    )
    text = head + "\n".join(line for _, line in lines)
    if len(text) <= limit:
        return text
    half = limit // 2
    left_out = len(text) - 2 * half
    return f"{text[:half]}\n[... {left_out} characters left out ...]\n{text[-half:]}"


def _caller_took_part(record: CallRecord) -> bool:
    return bool(record.keypad) or any(t.get("role") == "caller" for t in record.transcript)


class AnalysisFailed(Exception):
    """The analysis could not be made (its message is the record's ``error``)."""


class PostCallAnalysis:
    """Runs the post-call analyses of a runner's calls, in the background.

    Attributes:
        timeout_secs: Most seconds per request.
        max_retries: Tries after the first (429, 5xx, timeouts).
    """

    def __init__(
        self,
        settings: Settings,
        records: RecordKeeper,
        metrics: RunnerMetrics | None = None,
        *,
        timeout_secs: float = ANALYSIS_TIMEOUT_SECS,
        max_retries: int = ANALYSIS_RETRIES,
    ):
        """Initialize the analyses.

        Args:
            settings: The runner's settings (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
                ``ANALYSIS_MODEL``).
            records: Where the analysed calls' records are amended.
            metrics: Where ``prt_call_analyses_total`` goes, if anywhere.
            timeout_secs: Most seconds per request.
            max_retries: Tries after the first.
        """
        self.settings = settings
        self.records = records
        self.timeout_secs = timeout_secs
        self.max_retries = max_retries
        self._client: openai.AsyncOpenAI | None = None
        self._running: dict[asyncio.Task, tuple[str, str, str]] = {}  # call_sid, bot, model
        self._counter = (
            Counter(
                "prt_call_analyses",
                "Post-call analyses by bot and result (ok, failed, skipped, abandoned).",
                ["bot", "result"],
                registry=metrics.registry,
            )
            if metrics is not None
            else None
        )

    @property
    def in_flight(self) -> int:
        """How many analyses are running."""
        return len(self._running)

    def start(self, record: CallRecord, spec: AnalysisSpec | None) -> None:
        """Analyse a finished call in the background, if its bot declares an analysis.

        Args:
            record: The call's record, already kept.
            spec: Its bot's declaration; None: nothing to do.
        """
        if spec is None:
            return
        if not _caller_took_part(record):
            logger.info(
                f"Call {record.call_sid}: no post-call analysis, the caller neither spoke nor "
                "pressed a key"
            )
            self._count(record.bot, "skipped")
            return
        model = spec.model or self.settings.analysis_model
        task = asyncio.create_task(self._analyse(record, spec, model))
        self._running[task] = (record.call_sid, record.bot, model)
        task.add_done_callback(lambda done: self._running.pop(done, None))

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the analyses, then abandon the rest.

        An abandoned analysis is logged and its record amended with the error.

        Args:
            timeout: Most seconds to wait.
        """
        if self._running:
            await asyncio.wait(list(self._running), timeout=max(timeout, 0.0))
        for task, (call_sid, bot, model) in list(self._running.items()):
            if task.done():
                continue  # it kept its result already
            task.cancel()
            self._running.pop(task, None)
            logger.error(f"Call {call_sid}: post-call analysis {ABANDONED}")
            self._keep(call_sid, bot, _failure(model, ABANDONED), None, "abandoned")

    async def close(self, settle_secs: float = 2.0) -> None:
        """Settle the analyses (see :meth:`settle`) and close the HTTP client.

        Args:
            settle_secs: Most seconds to wait for analyses in flight.
        """
        await self.settle(settle_secs)
        if self._client is not None:
            await self._client.close()
            self._client = None

    #
    # one analysis
    #

    async def _analyse(self, record: CallRecord, spec: AnalysisSpec, model: str) -> None:
        try:
            fields, answered_by, cost = await self._ask(record, spec, model)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # whatever went wrong, the record says so: one line
            message = self._describe(error)
            logger.warning(f"Call {record.call_sid}: post-call analysis failed: {message}")
            self._keep(record.call_sid, record.bot, _failure(model, message), None, "failed")
            return
        analysis = {"model": answered_by, "fields": fields, "error": None, "at": time.time()}
        self._keep(record.call_sid, record.bot, analysis, cost, "ok")

    async def _ask(
        self, record: CallRecord, spec: AnalysisSpec, model: str
    ) -> tuple[dict[str, Any], str, float | None]:
        """The fields, the model that answered, and the cost (USD, None if unknown)."""
        instructions = INSTRUCTIONS
        if spec.instructions:
            instructions += "\n\n" + spec.instructions
        client = self._client_for().with_options(
            timeout=self.timeout_secs, max_retries=self.max_retries
        )
        response = await client.responses.parse(
            model=model,
            instructions=instructions,
            input=call_text(record),
            text_format=output_model(spec),
            max_output_tokens=MAX_OUTPUT_TOKENS,
            store=False,  # the call's words stay out of OpenAI's stored responses
        )
        answered_by = response.model or model
        if response.status == "incomplete":
            reason = response.incomplete_details.reason if response.incomplete_details else None
            raise AnalysisFailed(f"the answer was cut short ({reason or 'incomplete'})")
        parsed = response.output_parsed
        if parsed is None:
            raise AnalysisFailed("the model gave no analysis (a refusal, or no text)")
        fields = parsed.model_dump(mode="json", by_alias=True)
        return fields, answered_by, analysis_cost_usd(answered_by, response.usage)

    def _client_for(self) -> openai.AsyncOpenAI:
        if self._client is None:
            key = self.settings.openai_api_key
            if key is None:
                raise AnalysisFailed("OPENAI_API_KEY is not set")
            url = self.settings.openai_http_url
            azure = {"api-key": key.get_secret_value()} if is_azure_url(url) else None
            self._client = openai.AsyncOpenAI(
                api_key=key.get_secret_value(), base_url=url, default_headers=azure
            )
        return self._client

    def _describe(self, error: Exception) -> str:
        """One line saying what went wrong, for the record and the log."""
        tries = 1 + self.max_retries
        if isinstance(error, openai.APITimeoutError):
            text = f"no answer within {self.timeout_secs:g} s ({tries} tries)"
        elif isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error
            text = f"cannot reach {self.settings.openai_http_url}: {cause}"
        elif isinstance(error, openai.APIStatusError):
            body = error.body if isinstance(error.body, dict) else {}
            detail = body.get("message") or error.response.reason_phrase
            code = f" {error.code}" if error.code else ""
            text = f"HTTP {error.status_code}{code}: {detail}"
        elif isinstance(error, ValidationError):
            first = error.errors()[0]
            if first["type"] == "json_invalid":
                text = "the answer is not valid JSON"
            else:
                where = ".".join(str(p) for p in first["loc"]) or "the answer"
                text = f"the answer does not match the declared fields: {where}: {first['msg']}"
        elif isinstance(error, AnalysisFailed):
            text = str(error)
        else:
            text = f"{type(error).__name__}: {error}"
        return " ".join(text.split())[:300]

    def _keep(
        self,
        call_sid: str,
        bot: str,
        analysis: dict[str, Any],
        cost: float | None,
        result: str,
    ) -> None:
        """Put the analysis on the call's record (stored and sent again), and count it."""

        def change(record: CallRecord) -> None:
            record.analysis = analysis
            if cost is not None:
                record.cost["analysis"] = cost
                if record.cost_usd is not None:
                    record.cost_usd += cost

        if not self.records.amend_with(call_sid, change):
            logger.warning(
                f"Call {call_sid}: its record is no longer in memory; its post-call analysis "
                f"is lost: {field(analysis, 2000)}"
            )
        self._count(bot, result)

    def _count(self, bot: str, result: str) -> None:
        if self._counter is not None:
            self._counter.labels(bot or "-", result).inc()


def _failure(model: str, error: str) -> dict[str, Any]:
    return {"model": model, "fields": None, "error": error, "at": time.time()}
