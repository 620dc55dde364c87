#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The Responses API's ``POST /v1/responses``, as the emulator answers it (post-call analysis).

:class:`ResponsesApi` checks each request as the real API would: a Bearer key (an
``api-key`` with ``azure``), JSON, every parameter against the ``openai`` package's
``ResponseCreateParamsNonStreaming`` (unknown parameters refused, as the real API
refuses them), and a strict ``json_schema`` text format must be strict indeed
(every object ``additionalProperties: false`` and every property ``required``).
A refused request gets a 400 shaped like OpenAI's: ``{"error": {"message", "type",
"param", "code"}}``.

A valid request is answered with a ``Response`` object (checked against the
``openai`` package's ``Response``): its output text is JSON matching the request's
schema, with deterministic values (an enum's first value, ``true``, ``1``, ``1.0``,
``"emulated <name>"``, one item per array), or what a test scripted in
:attr:`ResponsesApi.outputs`. Usage is deterministic: ``ceil(len(text) / 4)`` tokens
of the instructions and input, and of the output. An output longer than
``max_output_tokens`` is cut there and the response is ``incomplete``.

The ways the real API fails are armed for the next ``n`` requests:
:meth:`ResponsesApi.fail_next` (an HTTP error with OpenAI's body: 401, 429 with
``Retry-After``, 500...) and :meth:`ResponsesApi.stall_next` (no answer for a while,
or until the client gives up).
"""

import asyncio
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from openai.types.responses import Response
from pydantic import ValidationError

from .faults import Countdown, api_error, azure_key_refusal, bearer_refusal, check_secs
from .plain_http import HttpAnswer, HttpRequest, error_answer, json_answer
from .responses_checks import check_request

RESPONSES_PATH = "/v1/responses"
"""The Responses API's path (``/openai/v1/responses`` for an ``azure`` emulator)."""

JSON_BODY_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
TEXT_ANSWER = "This is the emulated model's answer."
"""The output of a request without a ``json_schema`` text format."""

Output = dict | list | str | Callable[[dict], Any]
"""A scripted output: JSON (dumped), text (as is), or a callable of the request body."""


@dataclass
class HttpFailure:
    """A failure armed by :meth:`ResponsesApi.fail_next`.

    Parameters:
        status: The HTTP status.
        code: The ``error.code``; None for the status's usual one.
        message: The ``error.message``; None for the usual one.
        retry_after: Seconds in ``Retry-After`` (and ``retry-after-ms``), if any.
    """

    status: int
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None


@dataclass
class ResponsesCall:
    """One request the Responses API got, and what it answered.

    Parameters:
        path: The request's path.
        status: The HTTP status answered (0: none, the client left first).
        body: The request body, parsed (None if it was not JSON).
        error: The ``error.code`` (or message) of a refusal, None for a 200.
        retry: The client's retry count (``x-stainless-retry-count``; 0 for a first try).
        at: When it arrived (``loop.time()``).
    """

    path: str
    status: int = 0
    body: Any = None
    error: str | None = None
    retry: int = 0
    at: float = 0.0


class _Keys(Protocol):
    api_key: str | None
    azure: bool


class ResponsesApi:
    """``POST /v1/responses`` on the emulator's port.

    Attributes:
        requests: The body of every request answered 200, in order.
        calls: Every request, with its answer (:class:`ResponsesCall`).
        outputs: Scripted outputs, consumed in order (see :data:`Output`); when none
            is left, the output follows the request's schema.
        answer_errors: Responses the emulator made that failed validation against the
            ``openai`` package's ``Response`` (should stay empty).
    """

    def __init__(self, keys: _Keys):
        """Initialize the API.

        Args:
            keys: Where the key to require (``api_key``) and ``azure`` are read, each time.
        """
        self._keys = keys
        self.requests: list[dict] = []
        self.calls: list[ResponsesCall] = []
        self.outputs: list[Output] = []
        self.answer_errors: list[str] = []
        self._failures: Countdown[HttpFailure] = Countdown()
        self._stalls: Countdown[float] = Countdown()
        self._ids = itertools.count(1)

    @property
    def path(self) -> str:
        """The path served: ``/v1/responses``, with ``azure`` ``/openai/v1/responses``."""
        return "/openai" + RESPONSES_PATH if self._keys.azure else RESPONSES_PATH

    def fail_next(
        self,
        n: int,
        status: int = 500,
        *,
        code: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``n`` requests with an HTTP error, OpenAI's JSON body.

        The status picks the usual code: 401 ``invalid_api_key``, 429
        ``rate_limit_exceeded`` (``insufficient_quota`` as ``code`` for the quota),
        5xx ``server_error``. They come before the key is checked.

        Args:
            n: How many requests (0 disarms; arming again replaces what is left).
            status: The HTTP status, 400 to 599.
            code: The ``error.code``; None for the status's usual one.
            message: The ``error.message``; None for the usual one.
            retry_after: Seconds the client is asked to wait (``Retry-After``).

        Raises:
            ValueError: For a status that is no HTTP error, or a negative ``n``/``retry_after``.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), got {status}")
        check_secs(retry_after, "retry_after")
        self._failures.arm(n, HttpFailure(status, code, message, retry_after))

    def stall_next(self, n: int, secs: float = math.inf) -> None:
        """Give the next ``n`` requests no answer for ``secs`` seconds (then answer them).

        With ``inf`` the answer never comes: the client's timeout ends it.

        Args:
            n: How many requests (0 disarms; arming again replaces what is left).
            secs: How long each waits.

        Raises:
            ValueError: If ``n`` or ``secs`` is negative.
        """
        check_secs(secs, "secs")
        self._stalls.arm(n, secs)

    async def answer(self, request: HttpRequest) -> HttpAnswer:
        """Answer one plain HTTP request made to the emulator's port.

        Args:
            request: The request.
        """
        path = request.path.split("?", 1)[0]
        call = ResponsesCall(path=path, at=asyncio.get_running_loop().time())
        call.retry = _int(request.headers.get("x-stainless-retry-count"))
        self.calls.append(call)
        request_id = f"req_emu_{next(self._ids)}"
        answer = await self._answer(request, path, call)
        answer.headers.append(("x-request-id", request_id))
        call.status = answer.status
        return answer

    async def _answer(self, request: HttpRequest, path: str, call: ResponsesCall) -> HttpAnswer:
        if request.method != "POST" or path != self.path:
            return self._refuse(call, 404, None, f"Invalid URL ({request.method} {path})")
        stall = self._stalls.take()
        if stall is not None:
            await (asyncio.sleep(stall) if math.isfinite(stall) else asyncio.Event().wait())
        failure = self._failures.take()
        if failure is not None:
            return self._fail(call, failure)
        check_key = azure_key_refusal if self._keys.azure else bearer_refusal
        refused = check_key(request.headers, self._keys.api_key)
        if refused is not None:
            status, reason, body = refused
            call.error = reason
            return json_answer(status, body)
        try:
            body = json.loads(request.body)
        except ValueError:
            return self._refuse(call, 400, None, JSON_BODY_MESSAGE)
        call.body = body
        problem = check_request(body, request.body)
        if problem is not None:
            return self._refuse(call, 400, problem.code, problem.message, problem.param)
        self.requests.append(body)
        return json_answer(200, self._response(body))

    def _refuse(
        self,
        call: ResponsesCall,
        status: int,
        code: str | None,
        message: str,
        param: str | None = None,
    ) -> HttpAnswer:
        call.error = code or message
        return error_answer(status, message, code, param)

    def _fail(self, call: ResponsesCall, failure: HttpFailure) -> HttpAnswer:
        error = api_error(failure.status, failure.code, failure.message)
        call.error = error["code"] or error["message"]
        headers = []
        if failure.retry_after is not None:
            headers.append(("retry-after", str(math.ceil(failure.retry_after))))
            headers.append(("retry-after-ms", str(round(failure.retry_after * 1000))))
        return json_answer(failure.status, {"error": error}, headers)

    def _response(self, body: dict) -> dict:
        """The ``Response`` object answering a valid request."""
        text = self._output_text(body)
        limit = body.get("max_output_tokens")
        incomplete = False
        if isinstance(limit, int) and _tokens(text) > limit:
            text, incomplete = text[: limit * 4], True
        input_text = json.dumps(body.get("input", "")) + (body.get("instructions") or "")
        number = next(self._ids)
        now = time.time()
        response = {
            "id": f"resp_emu_{number}",
            "object": "response",
            "created_at": now,
            "completed_at": None if incomplete else now,
            "status": "incomplete" if incomplete else "completed",
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": limit,
            "metadata": body.get("metadata") or {},
            "model": body["model"],
            "output": [
                {
                    "id": f"msg_emu_{number}",
                    "type": "message",
                    "role": "assistant",
                    "status": "incomplete" if incomplete else "completed",
                    "content": [
                        {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                    ],
                }
            ],
            "parallel_tool_calls": True,
            "temperature": body.get("temperature", 1.0),
            "tool_choice": "auto",
            "tools": [],
            "top_p": body.get("top_p", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "usage": {
                "input_tokens": _tokens(input_text),
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": _tokens(text),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": _tokens(input_text) + _tokens(text),
            },
        }
        try:
            Response.model_validate(response)
        except ValidationError as error:
            self.answer_errors.append(str(error))
        return response

    def _output_text(self, body: dict) -> str:
        if self.outputs:
            output = self.outputs.pop(0)
            if callable(output):
                output = output(body)
            return output if isinstance(output, str) else json.dumps(output)
        fmt = (body.get("text") or {}).get("format") or {}
        if fmt.get("type") == "json_schema":
            return json.dumps(sample(fmt["schema"], fmt["schema"].get("$defs", {})))
        return "{}" if fmt.get("type") == "json_object" else TEXT_ANSWER


def sample(schema: dict, defs: dict, name: str = "value") -> Any:
    """A deterministic value matching a JSON schema (see the module's docstring).

    Args:
        schema: The schema.
        defs: Its ``$defs``, for ``$ref``.
        name: The property's name (strings say it: ``"emulated <name>"``).
    """
    if "$ref" in schema:
        return sample(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, name)
    if schema.get("anyOf"):
        return sample(schema["anyOf"][0], defs, name)
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {k: sample(v, defs, k) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [sample(schema.get("items", {}), defs, name)]
    return {"boolean": True, "integer": 1, "number": 1.0, "null": None}.get(
        str(kind), f"emulated {name}"
    )


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
