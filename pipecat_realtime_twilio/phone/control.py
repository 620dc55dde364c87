#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Telling Twilio what follows a call's stream: the REST API first, else ``<Connect action>``.

Twilio logs a bidirectional stream closed by the server as error 31921 in the
operator's debugger, even when ``<Connect action>`` then runs as meant. Updating
the live call through the REST API with the next TwiML ends the stream from
Twilio's side instead (Twilio sends ``stop`` and closes the socket), with no
error. So, with REST credentials, a call that ends, transfers or falls back is
updated through the REST API and its stream is left for Twilio to end (within
:data:`STOP_GRACE_SECS`); without them, or when the update fails, the runner's
``<Connect action>`` URL is told the next TwiML and the stream is closed.
"""

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from enum import StrEnum
from typing import Any

from fastapi import WebSocket
from loguru import logger

from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.logs import mask_numbers
from pipecat_realtime_twilio.phone.ending import CallEnd, EndKind
from pipecat_realtime_twilio.phone.rest import TwilioRest
from pipecat_realtime_twilio.phone.twiml import hangup_twiml

STOP_GRACE_SECS = 5.0
"""How long after a REST update Twilio may take to end the stream before it is closed."""


class Handover(StrEnum):
    """How the call was handed to what follows its stream."""

    REST = "rest"
    """The call was updated through the REST API: Twilio ends the stream itself."""
    ACTION = "action"
    """The runner's ``<Connect action>`` answers the next TwiML; the stream is closed."""
    CLOSE = "close"
    """The stream is closed; Twilio runs the verb after ``<Connect>`` (none: the call ends)."""


async def hand_over(
    end: CallEnd,
    *,
    call_sid: str,
    rest: TwilioRest | None,
    stream_action: Callable[[str], None] | None,
) -> Handover:
    """Tell Twilio what follows the stream: the REST API first, else the action URL.

    Args:
        end: How the call ends; its ``next_twiml`` (None: ``<Hangup/>``) is what follows.
        call_sid: The call.
        rest: Twilio's REST API, when credentials are configured.
        stream_action: Tells the runner's ``<Connect action>`` what to answer, when
            that URL follows the stream.

    Returns:
        The way taken (:attr:`Handover.REST`: leave the stream for Twilio to end).

    Raises:
        CallControlError: If a transfer has neither way (the REST update failed and
            no action URL follows the stream).
    """
    problem = ""
    if rest is not None:
        try:
            await rest.redirect(call_sid, end.next_twiml or hangup_twiml())
        except Exception as e:  # TwilioRestException, timeouts, connection errors
            problem = f"the REST update failed ({type(e).__name__}: {e}); "
            if stream_action is None and end.kind is EndKind.TRANSFERRED:
                raise CallControlError(f"the REST transfer failed: {e}") from e
        else:
            logger.info(
                f"Call {call_sid} ({mask_numbers(end.reason)}): updated through Twilio's REST API; "
                "Twilio ends the stream"
            )
            return Handover.REST
    if stream_action is not None:
        if end.next_twiml is not None:
            stream_action(end.next_twiml)  # before the stream closes and Twilio asks
        log = logger.warning if problem else logger.info
        log(
            f"Call {call_sid} ({mask_numbers(end.reason)}): {problem}closing the stream; the "
            "<Connect action> URL answers what follows (Twilio logs 31921 for a stream we close)"
        )
        return Handover.ACTION
    log = logger.error if problem else logger.info
    log(
        f"Call {call_sid} ({mask_numbers(end.reason)}): {problem}closing the stream; Twilio runs "
        "what follows <Connect> (31921 in Twilio's debugger)"
    )
    return Handover.CLOSE


async def wait_for_stop(stopped: asyncio.Event, call_sid: str, grace: float) -> bool:
    """Wait up to ``grace`` seconds for Twilio to end a stream after a REST update.

    Args:
        stopped: Set when Twilio's ``stop`` came (or the socket closed).
        call_sid: The call, for the log.
        grace: Most seconds to wait.

    Returns:
        Whether it came; if not, a warning is logged (close the stream then).
    """
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopped.wait(), grace)
    if not stopped.is_set():
        logger.warning(
            f"Call {call_sid}: Twilio did not end the stream within {grace:g} s of the REST "
            "update; closing it"
        )
    return stopped.is_set()


async def read_until_stop(websocket: WebSocket, call_sid: str, grace: float) -> bool:
    """Read a stream no pipeline reads any more until Twilio's ``stop`` or its close.

    Args:
        websocket: The media-stream websocket.
        call_sid: The call, for the log.
        grace: Most seconds to wait.

    Returns:
        Whether Twilio ended the stream; if not, a warning is logged.
    """
    stopped = asyncio.Event()

    async def read() -> None:
        with contextlib.suppress(Exception):  # closed, or a disconnect mid-read
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    if json.loads(message.get("text") or "{}").get("event") == "stop":
                        break
        stopped.set()

    reader = asyncio.create_task(read())
    try:
        return await wait_for_stop(stopped, call_sid, grace)
    finally:
        reader.cancel()


async def end_stream(
    twilio_ends_it: bool,
    websocket: WebSocket | None,
    stopped: asyncio.Event | None,
    close: Callable[[], Awaitable[None]],
    call_sid: str = "",
    *,
    grace: float | None = None,
) -> None:
    """End the stream from our side: leave it to Twilio after a REST update, else close it.

    After a REST update Twilio sends ``stop`` and closes the socket; it gets
    ``grace`` seconds (:data:`STOP_GRACE_SECS`), then the stream is closed anyway.

    Args:
        twilio_ends_it: Whether the call was updated through the REST API.
        websocket: The stream, when no pipeline reads it any more (it is read here).
        stopped: Set when the pipeline saw ``stop`` or the socket close (else ``websocket``).
        close: Closes the stream.
        call_sid: The call, for the log.
        grace: Most seconds to wait for Twilio; :data:`STOP_GRACE_SECS` by default.
    """
    grace = STOP_GRACE_SECS if grace is None else grace
    if twilio_ends_it:
        if stopped is not None and await wait_for_stop(stopped, call_sid, grace):
            return
        if websocket is not None and await read_until_stop(websocket, call_sid, grace):
            return
    await close()


async def within(work: Coroutine[Any, Any, None], timeout: float, *gone: asyncio.Event) -> bool:
    """Run ``work`` for at most ``timeout`` seconds, or until one of ``gone`` is set.

    Args:
        work: The coroutine (cancelled if it does not finish).
        timeout: Most seconds.
        *gone: Events that make the work pointless (the caller hung up...).

    Returns:
        Whether ``work`` finished; its exception, if it raised, is raised here.
    """
    task = asyncio.create_task(work)
    waits = [asyncio.create_task(event.wait()) for event in gone]
    try:
        await asyncio.wait({task, *waits}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, *waits):
            pending.cancel()
    if task.done() and not task.cancelled():
        task.result()  # its errors are the caller's to see
        return True
    return False
