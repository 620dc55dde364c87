#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The model side of a call: the OpenAI Realtime agent and what keeps it talking.

Here live :class:`~pipecat_realtime_twilio.agent.realtime.RealtimeAgent` (Pipecat's
OpenAI Realtime service set up for a phone line) and, beside it,
:class:`~pipecat_realtime_twilio.agent.live.LiveAgent` (Pipecat's GPT-Live service set
up the same way: ``agent/live*.py``), the session keeping (receive
loop, reconnects, rotation, fallback, pre-warm), the guard that keeps the caller
from silence and from audio in the wrong format, tools (call control, warm
transfer included), call limits and the ledger of what the caller heard.

Imports: Pipecat, ``openai`` types and the package's root modules (``audio``,
``frames``, ``errors``, ``failures``, ``settings``, ``seams``). Never ``phone`` (the agent
finds its call through the pipeline's start metadata and talks to it through
the protocols in :mod:`pipecat_realtime_twilio.seams`) and never ``runner``.
"""

__all__ = ["LiveAgent", "RealtimeAgent"]


def __getattr__(name: str):
    """Import an agent class from its module on first use."""
    if name == "LiveAgent":
        from pipecat_realtime_twilio.agent.live import LiveAgent

        return LiveAgent
    if name == "RealtimeAgent":
        from pipecat_realtime_twilio.agent.realtime import RealtimeAgent

        return RealtimeAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
