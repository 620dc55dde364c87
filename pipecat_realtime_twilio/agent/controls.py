#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What tools and call limits may use of the agent that runs them.

Tools (:mod:`~pipecat_realtime_twilio.agent.tools`) and call limits
(:mod:`~pipecat_realtime_twilio.agent.limits`) act on a call through its agent:
they make it speak, stop it, end or transfer the call. They see the agent only
as :class:`AgentControls`, so they do not import the agent, and the agent can
import them.
"""

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, runtime_checkable

from pipecat_realtime_twilio.agent.events import CallEvents
from pipecat_realtime_twilio.seams import CallAgent, PhoneCall

HEARD_EXTRA_SECS = 5.0
"""Beyond the time to say something, how long the phone may take to play it all."""


@runtime_checkable
class AgentControls(Protocol):
    """The agent, as its tools and limits see it."""

    tool_error_message: str
    caller_speaking: bool
    call_events: CallEvents

    @property
    def call(self) -> PhoneCall | None:
        """The call the agent talks on (None outside a call's pipeline)."""

    @property
    def responding(self) -> bool:
        """Whether a response is in progress or waiting to start."""

    @property
    def phone_idle(self) -> bool:
        """Whether the phone has played everything (True without a phone)."""

    async def say(self, text: str, *, context: str | None = None) -> None:
        """Make the bot say ``text`` as soon as no other response is in progress."""

    async def interrupt(self) -> None:
        """Stop the bot now."""

    async def end_call(self, goodbye: str | None = None, *, reason: str = ...) -> None:
        """End the call once the caller has heard everything (and ``goodbye``)."""

    async def transfer_call(self, number: str, *, announcement: str | None = None) -> None:
        """Transfer the call once the caller has heard everything."""

    def create_task(
        self, coroutine: Coroutine[Any, Any, Any], name: str | None = None
    ) -> asyncio.Task:
        """Start a task the agent's pipeline manages (and cancels with the call)."""

    async def cancel_task(self, task: asyncio.Task, timeout: float | None = ...) -> None:
        """Cancel a task started with :meth:`create_task`."""


def speech_timeout(text: str | None) -> float:
    """Seconds to allow for a response (and ``text``, if any) to be said and heard.

    Args:
        text: Words the agent was asked to say, if any.

    Returns:
        The timeout for :meth:`CallAgent.wait_heard`.
    """
    return 30.0 + (len(text) * 0.1 if text else 0.0) + HEARD_EXTRA_SECS


async def say_and_wait_heard(agent: CallAgent, words: str | None) -> None:
    """Say ``words`` (if any), then wait until the caller heard everything: before a hang-up.

    Args:
        agent: The agent on the call (either engine).
        words: A goodbye or an announcement; None: only wait.
    """
    if words:
        await agent.say(words)
    await agent.wait_heard(timeout=speech_timeout(words))
