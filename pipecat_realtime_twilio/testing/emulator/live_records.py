#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a Live session records: model turns, caller turns, delegations, appended context.

Also the Live fault plan (``LiveFaultPlan``): what the Live knobs of
``RealtimeEmulator`` have armed, one countdown per kind of fault, shared by every
Live session.
"""

from dataclasses import dataclass, field

from .faults import Countdown
from .records import AudioDelta, Reply


@dataclass
class LiveResponse:
    """One model turn of a Live session: what the model said (or delegated) and when.

    Parameters:
        id: The emulator's ``turn_...`` id (the Live protocol has no turn ids).
        trigger: What made the model speak: ``"vad"`` (the caller's turn ended),
            ``"commentary"`` (a ``session.commentary.append``), ``"response.create"``
            (the Responses backend's answer after the client's ``response.create``) or
            ``"delegation"`` (the backend's answer after an MCP call).
        reply: The scripted reply it plays (None until chosen).
        status: ``"queued"``, ``"speaking"``, ``"completed"``, ``"interrupted"`` (the
            caller barged in), ``"cancelled"`` (dropped: a caller turn started while it
            waited stalled, or the session closed first), ``"failed"`` (its delegated
            response failed) or ``"closed"`` (an armed ``close_on_next_turns`` ended the
            session instead).
        output_format: The session's audio format (``audio/pcmu``, ``audio/pcma``,
            ``audio/pcm``).
        rate: Its sample rate.
        audio: Every speech byte sent for the turn, in the session format.
        deltas: Every speech audio delta, with its send time.
        transcript: The output transcript actually sent (only what was spoken).
        call_id: For a Responses delegation's function call, its call id.
        arguments: For a function call, the arguments sent (JSON).
        delegation_id: The delegation the turn created or continued, if any.
        response_id: The id of the delegated Responses response of the turn, if any.
        stall_secs: An injected stall (``stall_next_responses``) before speaking.
        commentary: For a ``commentary`` turn, the appended content.
        triggered_at: ``loop.time()`` when the turn was triggered.
        started_at: When it started (its first speech byte, or its delegation).
        first_audio_at: When its first speech delta was produced.
        done_at: When it ended (any way).
        start_ms: Where its speech starts on the output timeline.
        end_ms: Where its speech ends on the output timeline.
    """

    id: str
    trigger: str
    reply: Reply | None = None
    status: str = "queued"
    output_format: str = "audio/pcm"
    rate: int = 24000
    audio: bytearray = field(default_factory=bytearray, repr=False)
    deltas: list[AudioDelta] = field(default_factory=list, repr=False)
    transcript: str = ""
    call_id: str | None = None
    arguments: str = ""
    delegation_id: str | None = None
    response_id: str | None = None
    stall_secs: float | None = None
    commentary: str | None = None
    triggered_at: float = 0.0
    started_at: float | None = None
    first_audio_at: float | None = None
    done_at: float | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    @property
    def active(self) -> bool:
        """Whether the turn is still queued or speaking."""
        return self.status in ("queued", "speaking")

    @property
    def audio_ms(self) -> float:
        """Milliseconds of speech sent."""
        per_ms = 8 if self.output_format != "audio/pcm" else self.rate * 2 // 1000
        return len(self.audio) / per_ms


@dataclass
class CallerTurn:
    """One turn of the caller, as the Live emulator's voice activity detection saw it.

    Parameters:
        start_ms: Speech onset on the input timeline (ms of input audio appended).
        detected_ms: Where the VAD detected it (``vad_start_ms`` of speech after the
            onset): where a model turn being spoken stops.
        detected_at: ``loop.time()`` of the detection.
        end_ms: End of the last speech window, None while the caller speaks.
        transcript: The scripted transcript reported for it (None while it lasts).
        barged_in: Whether it interrupted a model turn.
    """

    start_ms: float
    detected_ms: float
    detected_at: float
    end_ms: float | None = None
    transcript: str | None = None
    barged_in: bool = False


@dataclass
class LiveDelegation:
    """A delegation the emulated model created (``session.delegation.created``).

    Parameters:
        id: The ``deleg_...`` id.
        target: ``"responses"`` or ``"client"``.
        response_ids: The delegated Responses responses, in order (Responses only).
        call_ids: The function calls made in it (Responses only).
        function: The scripted function's name (the model's reason to delegate).
        answered: For a client delegation, whether commentary answered it.
        failed: Whether one of its delegated responses failed.
        offset_ms: Where it was created on the session timeline.
    """

    id: str
    target: str
    response_ids: list[str] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    function: str | None = None
    answered: bool = False
    failed: bool = False
    offset_ms: int = 0


@dataclass
class LiveContext:
    """A context append the client sent: instructions, thinking or commentary.

    Parameters:
        kind: ``"instructions"``, ``"thinking"`` or ``"commentary"``.
        content: The text.
        delegation_id: The client delegation it belongs to, or None.
        at_ms: Where it landed on the session timeline.
    """

    kind: str
    content: str
    delegation_id: str | None
    at_ms: int


@dataclass
class SessionStartRejection:
    """A ``session.start`` rejection armed by ``reject_session_starts``.

    Parameters:
        param: The parameter the ``error`` names.
        code: The error code.
        message: The message, or None for one naming ``param``.
    """

    param: str
    code: str = "invalid_value"
    message: str | None = None


@dataclass
class DelegationFailure:
    """A delegated response failure armed by ``fail_next_delegations``.

    Parameters:
        code: The ``response.error.code`` (``server_error``, ``insufficient_quota``,
            ``rate_limit_exceeded`` ...).
        message: The message, or None for the code's usual one.
    """

    code: str
    message: str | None = None


class LiveFaultPlan:
    """Every Live fault armed on an emulator, shared by its Live sessions.

    Attributes:
        session_start_rejections: ``session.start`` events to reject
            (``reject_session_starts``).
        turn_closes: Model turns that end the session instead of speaking, with the
            ``session.closed`` reason (``close_on_next_turns``).
        delegation_failures: Delegated responses to fail (``fail_next_delegations``).
    """

    def __init__(self) -> None:
        """Initialize a plan with nothing armed."""
        self.session_start_rejections: Countdown[SessionStartRejection] = Countdown()
        self.turn_closes: Countdown[str] = Countdown()
        self.delegation_failures: Countdown[DelegationFailure] = Countdown()
