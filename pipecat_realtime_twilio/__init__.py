#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Answer Twilio phone calls with OpenAI's Realtime API in Pipecat, at phone quality."""

from pipecat_realtime_twilio.app import CallRunner, create_app
from pipecat_realtime_twilio.call import CallSession
from pipecat_realtime_twilio.realtime import RealtimeAgent, TranscriptEntry
from pipecat_realtime_twilio.settings import Settings, SettingsError, load_settings
from pipecat_realtime_twilio.twilio.serializer import TwilioSerializer

__version__ = "0.1.0"

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
