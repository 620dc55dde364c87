#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Frames of our own."""

from dataclasses import dataclass

from pipecat.frames.frames import TTSAudioRawFrame


@dataclass
class RealtimeAudioFrame(TTSAudioRawFrame):
    """Bot audio from the Realtime API, tagged with the conversation item it belongs to.

    The phone output tracks what the caller has heard of each item, which is
    what a barge-in truncates.

    Parameters:
        item_id: The assistant item (``item_...``) the audio belongs to.
        response_id: The response (``resp_...``) that produced it.
    """

    item_id: str | None = None
    response_id: str | None = None
