#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Frames of our own."""

from dataclasses import dataclass, field

from pipecat.frames.frames import TTSAudioRawFrame


@dataclass
class RealtimeAudioFrame(TTSAudioRawFrame):
    """Bot audio from the Realtime API, tagged with the conversation item it belongs to.

    The phone output tracks what the caller has heard of each item, which is
    what a barge-in truncates.

    It also keeps the μ-law the audio was decoded from, so the phone output can
    send it as it came instead of encoding it again, unless a processor on the
    way replaced ``audio``.

    Parameters:
        item_id: The assistant item (``item_...``) the audio belongs to.
        response_id: The response (``resp_...``) that produced it.
        ulaw: The 8 kHz μ-law that ``audio`` was decoded from, if any.
    """

    item_id: str | None = None
    response_id: str | None = None
    ulaw: bytes | None = field(default=None, repr=False)

    def __post_init__(self):
        """Remember which ``audio`` the μ-law belongs to."""
        super().__post_init__()
        self._decoded = self.audio

    def original_ulaw(self) -> bytes | None:
        """The μ-law the audio came as, or None if ``audio`` was replaced since."""
        return self.ulaw if self.audio is self._decoded else None
