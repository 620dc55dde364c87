#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Frames this package adds to Pipecat's."""

from dataclasses import dataclass

from pipecat.frames.frames import SystemFrame


@dataclass
class TwilioMarkFrame(SystemFrame):
    """Twilio echoed a mark: the phone has played everything sent before it.

    Parameters:
        mark_name: The mark's name as it was sent.
    """

    mark_name: str
