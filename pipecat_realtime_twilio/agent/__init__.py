#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The model side of a call: the OpenAI Realtime agent and what keeps it talking.

Here live :class:`~pipecat_realtime_twilio.agent.realtime.RealtimeAgent` (Pipecat's
OpenAI Realtime service set up for a phone line), the session keeping (receive
loop, reconnects, rotation, fallback, pre-warm), the guard that keeps the caller
from silence and from audio in the wrong format, tools, call limits and the
ledger of what the caller heard.

Imports: Pipecat, ``openai`` types and the package's root modules (``audio``,
``frames``, ``errors``, ``failures``, ``settings``, ``seams``). Never ``phone`` (the agent
finds its call through the pipeline's start metadata and talks to it through
the protocols in :mod:`pipecat_realtime_twilio.seams`) and never ``runner``.
"""
