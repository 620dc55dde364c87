#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Answer Twilio phone calls with OpenAI's Realtime API in Pipecat, at phone quality.

The public names are imported on first use, so the command line can set up
logging before Pipecat is loaded.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    "CallRunner": "pipecat_realtime_twilio.app",
    "create_app": "pipecat_realtime_twilio.app",
    "CallSession": "pipecat_realtime_twilio.call",
    "RealtimeAgent": "pipecat_realtime_twilio.realtime",
    "TranscriptEntry": "pipecat_realtime_twilio.realtime",
    "Settings": "pipecat_realtime_twilio.settings",
    "SettingsError": "pipecat_realtime_twilio.errors",
    "load_settings": "pipecat_realtime_twilio.settings",
    "TwilioSerializer": "pipecat_realtime_twilio.twilio.serializer",
}

__all__ = [
    "CallRunner",
    "CallSession",
    "RealtimeAgent",
    "Settings",
    "SettingsError",
    "TranscriptEntry",
    "TwilioSerializer",
    "create_app",
    "load_settings",
]

if TYPE_CHECKING:
    from pipecat_realtime_twilio.app import CallRunner, create_app
    from pipecat_realtime_twilio.call import CallSession
    from pipecat_realtime_twilio.errors import SettingsError
    from pipecat_realtime_twilio.realtime import RealtimeAgent, TranscriptEntry
    from pipecat_realtime_twilio.settings import Settings, load_settings
    from pipecat_realtime_twilio.twilio.serializer import TwilioSerializer


def __getattr__(name: str):
    """Import a public name from its module on first use."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
