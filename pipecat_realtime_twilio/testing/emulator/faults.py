#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What the fault knobs have armed, and the errors shaped like the real API's.

``RealtimeEmulator``'s fault methods (``refuse_handshakes``, ``hang_handshakes``,
``fail_next_responses``, ``stall_next_responses``, ``reject_session_updates``,
``fail_transcriptions``) arm a ``FaultPlan``: one countdown per kind of fault, shared
by every session, so that "the next n" counts across connections. The sessions take
from it (``session_faults`` plays what happens inside a session).

This module also holds the handshake's checks (the path, OpenAI's Bearer key,
Azure's ``api-key``, retired models) and the error bodies the real API sends: the
JSON body of a refused handshake (``handshake_error_body``, Azure's
``azure_error_body``), the ``status_details.error`` of a
failed response (``response_error``) and the ``error`` of a failed input
transcription (``transcription_error``).
"""

import http
import math
from dataclasses import dataclass
from typing import Generic, TypeVar

from websockets.datastructures import Headers

from .audio import synthesize_speech
from .records import Reply

T = TypeVar("T")

QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
RATE_LIMIT_MESSAGE = "Rate limit reached for requests. Please try again in 20s."
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
API_KEY_MESSAGE = (
    "Incorrect API key provided. "
    "You can find your API key at https://platform.openai.com/account/api-keys."
)
FORBIDDEN_MESSAGE = "Country, region, or territory not supported"
MODEL_NOT_FOUND_MESSAGE = "The model `{model}` does not exist or you do not have access to it."

# Per HTTP status: the error (type, code, message) the API answers a handshake with.
# ``{model}`` in a message is the model of the ``?model=`` query.
_HANDSHAKE_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", API_KEY_MESSAGE),
    403: ("request_forbidden", "unsupported_country_region_territory", FORBIDDEN_MESSAGE),
    404: ("invalid_request_error", "model_not_found", MODEL_NOT_FOUND_MESSAGE),
    429: ("requests", "rate_limit_exceeded", RATE_LIMIT_MESSAGE),
    500: ("server_error", "server_error", SERVER_ERROR_MESSAGE),
    502: ("server_error", "server_error", "Bad gateway: the upstream server did not answer."),
    503: ("server_error", "server_error", "The server is overloaded or not ready yet."),
}

# Per error code: its type, and its message when the knob gives none.
_CODE_ERRORS: dict[str, tuple[str, str]] = {
    "invalid_api_key": ("invalid_request_error", API_KEY_MESSAGE),
    "unsupported_country_region_territory": ("request_forbidden", FORBIDDEN_MESSAGE),
    "model_not_found": ("invalid_request_error", MODEL_NOT_FOUND_MESSAGE),
    "rate_limit_exceeded": ("requests", RATE_LIMIT_MESSAGE),
    "insufficient_quota": ("insufficient_quota", QUOTA_MESSAGE),
    "server_error": ("server_error", SERVER_ERROR_MESSAGE),
}

INCOMPLETE_REASONS = ("max_output_tokens", "content_filter")
"""The reasons an ``incomplete`` response may give (``status_details.reason``)."""


def api_error(
    status: int, code: str | None = None, message: str | None = None, *, model: str = ""
) -> dict:
    """Return the ``error`` object of an HTTP error from the API.

    Args:
        status: The HTTP status.
        code: The error code; None picks the status's usual one (401 ``invalid_api_key``,
            403 ``unsupported_country_region_territory``, 404 ``model_not_found``, 429
            ``rate_limit_exceeded``, 5xx ``server_error``).
        message: The message; None picks the code's (or the status's) usual one.
        model: The model named by a ``model_not_found`` message.

    Returns:
        ``{"message", "type", "code", "param"}``, ``param`` always None.
    """
    kind = "server_error" if status >= 500 else "invalid_request_error"
    try:
        default_message = http.HTTPStatus(status).phrase + "."
    except ValueError:
        default_message = f"HTTP {status}."
    default_code: str | None = None
    if status in _HANDSHAKE_DEFAULTS:
        kind, default_code, default_message = _HANDSHAKE_DEFAULTS[status]
    if code is None:
        code = default_code
    elif code != default_code and code in _CODE_ERRORS:
        kind, default_message = _CODE_ERRORS[code]
    text = message if message is not None else default_message.format(model=model)
    return {"message": text, "type": kind, "code": code, "param": None}


def handshake_error_body(
    status: int, code: str | None = None, message: str | None = None, *, model: str = ""
) -> dict:
    """Return the JSON body of a refused websocket handshake: ``{"error": {...}}``.

    Args:
        status: The HTTP status.
        code: The error code (see ``api_error``).
        message: The message (see ``api_error``).
        model: The model of the ``?model=`` query.

    Returns:
        The body, shaped like the real API's.
    """
    return {"error": api_error(status, code, message, model=model)}


# -- the handshake's checks ------------------------------------------------------------

Refused = tuple[int, str, dict]
"""A refused handshake: the HTTP status, why (for ``rejected_handshakes``), the JSON body."""

AZURE_KEY_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)
AZURE_DEPLOYMENT_MESSAGE = (
    "The API deployment for this resource does not exist. If you created the deployment "
    "within the last 5 minutes, please wait a moment and try again."
)


def azure_error_body(code: str, message: str) -> dict:
    """Return an Azure OpenAI error body: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}


def unknown_path(path: str, *, azure: bool) -> Refused:
    """The refusal of a path the emulator does not serve (404), as OpenAI or Azure words it."""
    if azure:
        return 404, "unknown path", azure_error_body("404", "Resource not found")
    error = {
        "type": "invalid_request_error",
        "code": None,
        "message": f"Invalid URL ({path})",
        "param": None,
    }
    return 404, "unknown path", {"error": error}


def bearer_refusal(headers: Headers, api_key: str | None) -> Refused | None:
    """OpenAI's key check: an ``Authorization: Bearer`` key (``api_key`` if set), else 401."""
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth."
        )
        body = handshake_error_body(401, message=message)
        body["error"]["code"] = None  # the real API names no code for a missing key
        return 401, "missing bearer token", body
    if api_key is not None and token != api_key:
        return 401, "wrong api key", handshake_error_body(401)
    return None


def azure_key_refusal(headers: Headers, api_key: str | None) -> Refused | None:
    """Azure's key check: an ``api-key`` header (``api_key`` if set), else 401.

    A Bearer key is no Azure key (its ``Authorization`` header carries Entra ID tokens):
    without an ``api-key`` header the handshake is refused all the same.
    """
    key = (headers.get("api-key") or "").strip()
    if not key:
        reason = (
            "bearer key instead of api-key" if "Authorization" in headers else "missing api-key"
        )
        return 401, reason, azure_error_body("401", AZURE_KEY_MESSAGE)
    if api_key is not None and key != api_key:
        return 401, "wrong api key", azure_error_body("401", AZURE_KEY_MESSAGE)
    return None


def retired_model(model: str, *, azure: bool) -> Refused:
    """The refusal of a model the API no longer serves (404): Azure's missing deployment."""
    if azure:
        return (
            404,
            "retired model",
            azure_error_body("DeploymentNotFound", AZURE_DEPLOYMENT_MESSAGE),
        )
    return 404, "retired model", handshake_error_body(404, model=model)


def response_error(code: str, message: str | None = None) -> dict:
    """Return the ``status_details.error`` of a failed response.

    Args:
        code: ``insufficient_quota``, ``rate_limit_exceeded``, ``server_error`` (or any).
        message: The message; None picks the code's usual one.

    Returns:
        ``{"type", "code", "message"}``; the type matches the code
        (``insufficient_quota``, ``requests``, ``server_error``; ``server_error``
        for codes it doesn't know).
    """
    kind, default_message = _CODE_ERRORS.get(code, ("server_error", SERVER_ERROR_MESSAGE))
    return {"type": kind, "code": code, "message": message or default_message}


def transcription_error(item_id: str, code: str | None, message: str | None) -> dict:
    """Return the ``error`` of a ``conversation.item.input_audio_transcription.failed``.

    Args:
        item_id: The user item whose transcription failed.
        code: The error code; None is a server error without a code, as the real
            server sends for internal failures.
        message: The message; None picks one matching the code.

    Returns:
        ``{"type", "code", "message", "param"}``.
    """
    if code is None:
        kind = "server_error"
        default_message = f"Input transcription failed for item '{item_id}'."
    else:
        kind = "transcription_error"
        default_message = "The input audio could not be transcribed."
    return {"type": kind, "code": code, "message": message or default_message, "param": None}


def duration_text(secs: float) -> str:
    """Say a session cap as the real server does: ``"60 minutes"``, else seconds.

    Args:
        secs: The duration.

    Returns:
        Whole minutes when it is some (``"1 minute"``, ``"60 minutes"``), else seconds
        (``"2 seconds"``, ``"1.5 seconds"``).
    """
    if secs >= 60 and secs % 60 == 0:
        minutes = int(secs // 60)
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{secs:g} second" + ("s" if secs != 1 else "")


def half_reply(reply: Reply, kind: str) -> Reply:
    """Return the first half of a scripted reply: what an ``incomplete`` response plays.

    Args:
        reply: The scripted reply.
        kind: The response kind (``"audio"``, ``"text"`` or ``"function_call"``).

    Returns:
        Half the words (rounded up) and, for audio, half the audio; never a function
        call (a cut-short response does not get to call).
    """
    words = reply.text.split(" ")
    text = " ".join(words[: (len(words) + 1) // 2]).rstrip() if reply.text else ""
    if kind != "audio":
        return Reply(text=text)
    audio = reply.audio
    if audio is None:
        audio = synthesize_speech(reply.text, reply.duration_ms)
    return Reply(text=text, audio=audio[: len(audio) // 2])


# -- what the knobs arm --------------------------------------------------------------


@dataclass
class HandshakeRefusal:
    """A refusal armed by ``refuse_handshakes``.

    Parameters:
        status: The HTTP status.
        code: The error code, or None for the status's usual one.
        message: The message, or None for the usual one.
    """

    status: int
    code: str | None = None
    message: str | None = None


@dataclass
class HandshakeHang:
    """A hang armed by ``hang_handshakes``.

    Parameters:
        secs: How long the upgrade response is held back before a 503; None holds it
            until the client gives up or the emulator stops.
    """

    secs: float | None = None


@dataclass
class ResponseFault:
    """A response failure armed by ``fail_next_responses``.

    Parameters:
        status: ``"failed"`` or ``"incomplete"``.
        code: The error code (failed) or the reason (incomplete).
    """

    status: str
    code: str


@dataclass
class SessionUpdateRejection:
    """A ``session.update`` rejection armed by ``reject_session_updates``.

    Parameters:
        param: The parameter the ``error`` names.
        code: The error code.
        message: The message, or None for one naming ``param``.
    """

    param: str
    code: str = "invalid_value"
    message: str | None = None


@dataclass
class TranscriptionFailure:
    """An input transcription failure armed by ``fail_transcriptions``.

    Parameters:
        code: The error code (None: a server error without a code).
        message: The message, or None for one matching the code.
    """

    code: str | None
    message: str | None = None


class Countdown(Generic[T]):
    """A fault armed for the next ``n`` occasions: each ``take()`` uses one up."""

    def __init__(self) -> None:
        """Initialize an unarmed countdown."""
        self.remaining = 0
        self.spec: T | None = None

    def arm(self, n: int, spec: T) -> None:
        """Arm the fault for the next ``n`` occasions, replacing what was armed.

        Args:
            n: How many occasions (0 disarms).
            spec: What happens on each.

        Raises:
            ValueError: If ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        self.remaining = n
        self.spec = spec

    def take(self) -> T | None:
        """Use one occasion up.

        Returns:
            The armed spec, or None when nothing (more) is armed.
        """
        if self.remaining <= 0 or self.spec is None:
            return None
        self.remaining -= 1
        return self.spec


class FaultPlan:
    """Every fault armed on an emulator, shared by its sessions.

    Attributes:
        refusals: Handshakes to refuse (``refuse_handshakes``).
        hangs: Handshakes to leave unanswered, each for a number of seconds or, with
            None, until the client gives up (``hang_handshakes``).
        response_faults: Responses to fail or cut short (``fail_next_responses``).
        stalls: Responses to hold back, for a number of seconds (``stall_next_responses``).
        session_update_rejections: ``session.update`` events to reject
            (``reject_session_updates``).
        session_update_stalls: ``session.update`` events to leave unanswered
            (``stall_session_updates``).
        transcription_failures: Input transcriptions to fail (``fail_transcriptions``).
    """

    def __init__(self) -> None:
        """Initialize a plan with nothing armed."""
        self.refusals: Countdown[HandshakeRefusal] = Countdown()
        self.hangs: Countdown[HandshakeHang] = Countdown()
        self.response_faults: Countdown[ResponseFault] = Countdown()
        self.stalls: Countdown[float] = Countdown()
        self.session_update_rejections: Countdown[SessionUpdateRejection] = Countdown()
        self.session_update_stalls: Countdown[bool] = Countdown()
        self.transcription_failures: Countdown[TranscriptionFailure] = Countdown()


def check_response_fault(status: str, code: str) -> ResponseFault:
    """Check the arguments of ``fail_next_responses``.

    Args:
        status: ``"failed"`` or ``"incomplete"``.
        code: The error code, or for ``incomplete`` the reason.

    Returns:
        The fault to arm.

    Raises:
        ValueError: For another status, or an ``incomplete`` reason the API doesn't have.
    """
    if status not in ("failed", "incomplete"):
        raise ValueError(f"status must be 'failed' or 'incomplete', got {status!r}")
    if status == "incomplete" and code not in INCOMPLETE_REASONS:
        raise ValueError(f"an incomplete response's reason is one of {INCOMPLETE_REASONS}")
    return ResponseFault(status, code)


def check_secs(secs: float | None, what: str) -> None:
    """Check a duration argument: None, or a non-negative number (``inf`` allowed).

    Args:
        secs: The duration.
        what: The argument's name, for the error.

    Raises:
        ValueError: If it is negative or NaN.
    """
    if secs is not None and (math.isnan(secs) or secs < 0):
        raise ValueError(f"{what} must be a non-negative number of seconds, got {secs}")
