#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Audio that leaves the moment a call's stream starts, before its pipeline has started.

Starting a call's pipeline takes a few milliseconds idle, and tens of them on a busy
machine: every processor is set up, then the ``StartFrame`` travels down the
pipeline to the agent. A cached greeting need not wait for any of it.
:meth:`~pipecat_realtime_twilio.phone.call.CallSession.run` tells every processor
that has a ``play_at_stream_start(call)`` method (:class:`StreamStartAudio`) that
the stream has started, once the pipeline is linked and before it runs; an agent
puts its cached greeting on the phone output there, through the output's normal
path (:meth:`~pipecat_realtime_twilio.phone.output.TwilioOutputTransport.play`:
marks, playback clock, recording and barge-in as for any audio).
"""

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from loguru import logger

from pipecat_realtime_twilio.seams import PhoneCall


@runtime_checkable
class StreamStartAudio(Protocol):
    """A processor with audio to play the moment the stream starts."""

    async def play_at_stream_start(self, call: PhoneCall) -> None:
        """The call's stream has started and its pipeline is linked, not yet started.

        Args:
            call: The call; ``call.output()`` plays audio at once.
        """
        ...


async def play_at_stream_start(call: PhoneCall, processors: Iterable[object]) -> None:
    """Let each processor that has audio for the stream's start play it now.

    A processor that fails here is logged; the call goes on (the processor plays,
    or not, once its pipeline has started).

    Args:
        call: The call whose stream started.
        processors: The call's pipeline, linked.
    """
    for processor in processors:
        if not isinstance(processor, StreamStartAudio):
            continue
        try:
            await processor.play_at_stream_start(call)
        except Exception:
            logger.exception(f"Call {call.call_sid}: {processor} failed at the stream's start")
