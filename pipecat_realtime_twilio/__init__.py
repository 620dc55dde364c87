#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Answer Twilio phone calls with OpenAI's Realtime API (or GPT-Live) in Pipecat, at phone quality.

The public names are imported on first use, so the command line can set up
logging before Pipecat is loaded.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    "CallRunner": "pipecat_realtime_twilio.runner.app",
    "create_app": "pipecat_realtime_twilio.runner.app",
    "CallSession": "pipecat_realtime_twilio.phone.call",
    "RealtimeAgent": "pipecat_realtime_twilio.agent.realtime",
    "LiveAgent": "pipecat_realtime_twilio.agent.live",
    "TranscriptEntry": "pipecat_realtime_twilio.agent.ledger",
    "Settings": "pipecat_realtime_twilio.settings",
    "SettingsError": "pipecat_realtime_twilio.errors",
    "load_settings": "pipecat_realtime_twilio.settings",
    "TwilioSerializer": "pipecat_realtime_twilio.phone.serializer",
    "TwilioOutputTransport": "pipecat_realtime_twilio.phone.output",
    "CallLimits": "pipecat_realtime_twilio.agent.limits",
    "CallControlError": "pipecat_realtime_twilio.errors",
    "Failure": "pipecat_realtime_twilio.failures",
    "Stage": "pipecat_realtime_twilio.failures",
    "RealtimeTool": "pipecat_realtime_twilio.agent.tools",
    "realtime_tool": "pipecat_realtime_twilio.agent.tools",
    "end_call": "pipecat_realtime_twilio.agent.tools",
    "transfer_call": "pipecat_realtime_twilio.agent.tools",
    "warm_transfer": "pipecat_realtime_twilio.agent.warm_transfer",
    # The openai package's turn detection models, for RealtimeAgent(turn_detection=...).
    "ServerVad": "openai.types.realtime.realtime_audio_input_turn_detection",
    "SemanticVad": "openai.types.realtime.realtime_audio_input_turn_detection",
}

__all__ = [
    "CallControlError",
    "CallLimits",
    "CallRunner",
    "CallSession",
    "Failure",
    "LiveAgent",
    "RealtimeAgent",
    "RealtimeTool",
    "SemanticVad",
    "ServerVad",
    "Settings",
    "SettingsError",
    "Stage",
    "TranscriptEntry",
    "TwilioOutputTransport",
    "TwilioSerializer",
    "create_app",
    "end_call",
    "load_settings",
    "realtime_tool",
    "transfer_call",
    "warm_transfer",
]

if TYPE_CHECKING:
    from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad

    from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
    from pipecat_realtime_twilio.agent.limits import CallLimits
    from pipecat_realtime_twilio.agent.live import LiveAgent
    from pipecat_realtime_twilio.agent.realtime import RealtimeAgent
    from pipecat_realtime_twilio.agent.tools import (
        RealtimeTool,
        end_call,
        realtime_tool,
        transfer_call,
    )
    from pipecat_realtime_twilio.agent.warm_transfer import warm_transfer
    from pipecat_realtime_twilio.errors import CallControlError, SettingsError
    from pipecat_realtime_twilio.phone.call import CallSession
    from pipecat_realtime_twilio.phone.output import TwilioOutputTransport
    from pipecat_realtime_twilio.phone.serializer import TwilioSerializer
    from pipecat_realtime_twilio.runner.app import CallRunner, create_app
    from pipecat_realtime_twilio.settings import Settings, load_settings


def __getattr__(name: str):
    """Import a public name from its module on first use."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
