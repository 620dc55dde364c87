#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The typed seams between the agent and the phone: what each may use of the other.

The agent (:mod:`pipecat_realtime_twilio.agent`) and the phone
(:mod:`pipecat_realtime_twilio.phone`) never import each other. They meet in a
call's pipeline: the :class:`~pipecat_realtime_twilio.phone.call.CallSession`
puts itself into the pipeline's ``StartFrame.metadata`` under
:data:`CALL_METADATA_KEY`, and the agent finds it there. From then on each side
uses only what the protocols below name:

- :class:`PhoneCall`: what the agent (and a tool) may do with the call: its
  input and output, routing caller audio, ending or transferring it.
- :class:`PhoneOutput`: what the agent may ask of the phone output: play audio,
  interrupt it, and what the caller has heard of each assistant item.
- :class:`CallAgent`: what the call and the runner may use of the agent that
  talks on it: stop it, make it speak, and what it reports afterwards.

The protocols carry no behaviour; mypy checks that ``CallSession``,
``TwilioOutputTransport`` and ``RealtimeAgent`` satisfy them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pipecat.frames.frames import OutputAudioRawFrame
    from pipecat.processors.frame_processor import FrameProcessor

    from pipecat_realtime_twilio.agent.events import CallEvents
    from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
    from pipecat_realtime_twilio.agent.usage import Usage
    from pipecat_realtime_twilio.failures import Failure

CALL_METADATA_KEY = "pipecat_realtime_twilio.call"
"""Where the pipeline's ``StartFrame.metadata`` carries the :class:`PhoneCall`."""

CallerAudio = Callable[[str, int], Awaitable[None]]
"""Takes caller audio as Twilio sent it: base64 μ-law and its length in bytes."""


class PhoneOutput(Protocol):
    """What the agent uses of the phone output (``call.output()``)."""

    @property
    def idle(self) -> bool:
        """Whether nothing waits to be played and the phone has played everything sent."""

    async def play(self, frame: OutputAudioRawFrame) -> None:
        """Take bot audio straight from the processor right before the output."""

    async def interrupt(self, items: Iterable[str] = ()) -> dict[str, int]:
        """Clear the phone now; return the bytes of each item the caller heard."""

    async def wait_played(self, item_bytes: dict[str, int], timeout: float) -> bool:
        """Wait until the phone has played the given bytes of each item."""

    def confirmed_bytes(self, item: str) -> int:
        """Bytes of ``item`` the phone has confirmed playing (mark echoes)."""

    def forget(self, item: str) -> None:
        """Drop what is kept about ``item``: nobody will ask about it again."""

    def add_event_handler(self, event_name: str, handler: Any) -> None:
        """Add a handler for ``on_bot_started_speaking`` or ``on_bot_stopped_speaking``."""


class CallAgent(Protocol):
    """What the call and the runner use of the agent talking on a call."""

    @property
    def model(self) -> str:
        """The Realtime model."""

    @property
    def usage(self) -> Usage:
        """Tokens used so far."""

    @property
    def transcript(self) -> list[TranscriptEntry]:
        """Both sides' utterances so far."""

    @property
    def barge_ins(self) -> int:
        """Times the caller cut the bot off."""

    @property
    def reconnects(self) -> int:
        """Realtime sessions reopened after a drop."""

    @property
    def call_events(self) -> CallEvents:
        """What happened, with times: tool calls, keypad groups, barge-ins, turn latency."""

    @property
    def keypad_groups(self) -> int:
        """Keypad groups sent to the model."""

    @property
    def keypad_deferred(self) -> int:
        """Keypad groups whose response the rate limit held back."""

    @property
    def response_latencies_ms(self) -> list[float]:
        """Per answer: ms from the caller's last word to the first audio heard."""

    @property
    def fallback_line(self) -> str:
        """What the caller hears in Twilio's voice when the bot cannot go on."""

    @property
    def fallback_number(self) -> str | None:
        """Where such a call is transferred instead, if set."""

    async def interrupt(self) -> None:
        """Stop the bot now (clear the phone, truncate, cancel the response)."""

    async def say(self, text: str, *, context: str | None = None) -> None:
        """Make the bot say ``text`` as soon as no other response is in progress."""

    async def wait_heard(self, timeout: float = ...) -> bool:
        """Wait until no response is in progress and the caller heard everything."""


class PhoneCall(Protocol):
    """What the agent, and a tool that takes the call, may do with a phone call."""

    @property
    def call_sid(self) -> str:
        """The Twilio Call SID."""

    @property
    def parameters(self) -> dict[str, str]:
        """The TwiML ``<Parameter>`` values of the stream."""

    def input(self) -> FrameProcessor:
        """The processor that brings the caller's audio and keypresses in."""

    def output(self) -> PhoneOutput:
        """The processor that plays audio to the caller."""

    def attach_agent(self, agent: CallAgent) -> None:
        """Tell the call which agent talks on it."""

    def route_caller_audio(self, handler: CallerAudio | None) -> None:
        """Send caller audio to ``handler`` instead of down the pipeline (None: undo)."""

    async def end(self, reason: str = ..., *, timeout: float = ...) -> None:
        """End the call once the caller has heard everything."""

    async def transfer(self, number: str, *, timeout: float = ...) -> None:
        """Transfer the call once the caller has heard everything."""

    async def warm_transfer(self, number: str, summary: str, **options: Any) -> str:
        """Hold the caller, dial ``number`` with ``summary``, bridge them; the outcome."""

    async def fail(self, failure: Failure, *, say: str, transfer_to: str | None = None) -> None:
        """The bot cannot go on: a spoken line in Twilio's voice, or a transfer."""
