#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Twilio's own recording of each call (``TWILIO_RECORD=true``), and where it ends up.

When a call's stream starts, :class:`TwilioRecording` asks Twilio's REST API to record
the call (``Calls/{CallSid}/Recordings.json``, the caller and the bot on two channels,
``RecordingStatusCallback`` = ``PUBLIC_URL/recording-status``). A refusal or an
unreachable API is logged and the call goes on. Once the call is over and the
recording ready, Twilio POSTs ``/recording-status`` (signed, like every webhook):
``RecordingUrl`` goes on the call's record (``twilio_recording_url``), which is
stored and sent to the webhook again, one revision higher, on whichever instance
holds the record (:mod:`~pipecat_realtime_twilio.runner.amendments`). A callback
that comes before the call's record was made waits until it is.

The runner's own recording (``RECORD_CALLS``) is another thing: the audio the runner
saw, kept where the runner keeps it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from fastapi import Request, Response
from loguru import logger

from pipecat_realtime_twilio.logs import field
from pipecat_realtime_twilio.phone.call import CallSession
from pipecat_realtime_twilio.phone.rest import TwilioRest, TwilioRestException
from pipecat_realtime_twilio.phone.signatures import verified_form
from pipecat_realtime_twilio.runner.amendments import RecordingUrlAmendment
from pipecat_realtime_twilio.settings import Settings, SettingsError

if TYPE_CHECKING:
    from pipecat_realtime_twilio.runner.amendments import RecordAmender

STATUS_PATH = "/recording-status"
"""The route of Twilio's recording status callbacks."""

_MAX_URL_CHARS = 1000


class TwilioRecording:
    """Starts Twilio's recording of each call and puts its URL on the call's record.

    Example::

        recording = TwilioRecording(settings, rest, amender)
        router.add_api_route(STATUS_PATH, recording.status_callback, methods=["POST"])
        recording.start(call)  # when its stream starts
    """

    def __init__(self, settings: Settings, rest: TwilioRest | None, amender: RecordAmender):
        """Initialize it.

        Args:
            settings: The runner's settings (``TWILIO_RECORD``, ``PUBLIC_URL``).
            rest: Twilio's REST API; required with ``TWILIO_RECORD=true``.
            amender: What puts the recording's URL on the call's record.

        Raises:
            SettingsError: ``TWILIO_RECORD=true`` without REST credentials or
                ``PUBLIC_URL``.
        """
        self.settings = settings
        self.enabled = settings.twilio_record
        self._rest = rest
        self._amender = amender
        self._callback = ""
        if self.enabled:
            if rest is None:
                raise SettingsError(
                    "TWILIO_RECORD=true needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN "
                    "(Twilio's REST API starts the recording)"
                )
            if settings.public_url is None:
                raise SettingsError(
                    "TWILIO_RECORD=true needs PUBLIC_URL (where Twilio says the recording is ready)"
                )
            self._callback = settings.public_origin + STATUS_PATH
        self._tasks: set[asyncio.Task] = set()

    def start(self, call: CallSession) -> None:
        """Ask Twilio to record ``call``, in the background (nothing without ``TWILIO_RECORD``).

        Args:
            call: The call, its stream started.
        """
        if not self.enabled:
            return
        task = asyncio.create_task(self._start(call.call_sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, call_sid: str) -> None:
        assert self._rest is not None  # enabled
        try:
            sid = await self._rest.start_recording(call_sid, self._callback)
        except TwilioRestException as error:
            problem = f"HTTP {error.status}, code {error.code}: {field(error.msg, 200)}"
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            problem = type(error).__name__
        except Exception:
            logger.exception(f"Call {call_sid}: starting Twilio's recording failed")
            return
        else:
            logger.info(f"Call {call_sid}: Twilio records it ({sid})")
            return
        logger.warning(f"Call {call_sid}: Twilio could not record it ({problem}); call goes on")

    async def status_callback(self, request: Request) -> Response:
        """Take Twilio's recording status callback: a completed recording goes on the record."""
        form = await verified_form(request, self.settings)
        call_sid = form.get("CallSid", "")
        status = form.get("RecordingStatus", "")
        url = form.get("RecordingUrl", "")
        recording = field(form.get("RecordingSid"), 40)
        if status != "completed":
            error = form.get("ErrorCode")
            logger.warning(
                f"Call {field(call_sid, 40)}: Twilio's recording {recording} is {field(status, 20)}"
                + (f" (error {field(error, 10)})" if error else "")
            )
        elif (
            not call_sid
            or not url.startswith(("https://", "http://"))
            or (len(url) > _MAX_URL_CHARS)
        ):
            logger.warning(
                f"Recording status of call {field(call_sid, 40)}: no CallSid or no usable "
                "RecordingUrl; dropped"
            )
        else:
            where = await self._amender.amend(call_sid, RecordingUrlAmendment(url=url))
            if where in ("amended", "stored"):
                logger.info(
                    f"Call {field(call_sid, 40)}: Twilio's recording {recording} is on its record"
                )
        return Response(status_code=204)

    async def close(self) -> None:
        """Cancel recordings still being started."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
