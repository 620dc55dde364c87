#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Greeting warm-up: have the model say a bot's greeting once, before any call, for the cache.

:func:`record_greeting` opens a Realtime session of an agent's own (its URL, key,
voice, instructions and tools: the ``session.update`` a call would send), waits for
``session.updated`` to confirm ``audio/pcmu``, asks for the greeting exactly as a
call would, and returns the audio of a response that completed whole. It never
raises for the API's sake: a refusal, an error, a wrong format or the timeout is
logged and gives None.
"""

import asyncio
import base64
import json

from loguru import logger

from pipecat_realtime_twilio.agent.greeting import CachedGreeting
from pipecat_realtime_twilio.agent.handshake import ConnectFailed, open_realtime

RECORD_TIMEOUT_SECS = 20.0
"""Most seconds one warm-up session may take, from the connect to the greeting's end."""


async def record_greeting(
    agent: CachedGreeting, *, timeout: float = RECORD_TIMEOUT_SECS
) -> bytes | None:
    """Have the model say ``agent``'s greeting in a session of its own; return the audio.

    The agent must not be in a call: its session is used for this and closed.

    Args:
        agent: An agent with a greeting, not started.
        timeout: Most seconds for all of it.

    Returns:
        The greeting's 8 kHz μ-law, as the model sent it, or None if it did not come whole.
    """
    if not agent._greeting:
        return None
    try:
        async with asyncio.timeout(timeout):
            return await _record(agent)
    except TimeoutError:
        logger.warning(f"Greeting warm-up: {agent} did not get the greeting in {timeout:g} s")
    except ConnectFailed as e:
        logger.warning(f"Greeting warm-up: {agent} could not open a session: {e}")
    except Exception as e:  # the socket died, a malformed event: no greeting this time
        logger.warning(f"Greeting warm-up: {agent} failed: {type(e).__name__}: {e}")
    finally:
        await agent._close_socket()
    return None


async def _record(agent: CachedGreeting) -> bytes | None:
    websocket = await open_realtime(agent._open_socket, name=f"{agent} greeting warm-up")
    agent._websocket = websocket
    await agent._send_session_update()
    response_id: str | None = None
    asked = False
    audio = bytearray()
    async for message in websocket:
        data = json.loads(message)
        kind = data.get("type")
        if kind == "session.updated" and not asked:
            if not agent._formats_confirmed(message):
                logger.warning(f"Greeting warm-up: {agent}'s session is not audio/pcmu both ways")
                return None
            asked = True
            await agent.send_client_event(agent._response_event(agent._greeting_instructions()))
        elif kind == "response.created" and asked and response_id is None:
            response_id = data["response"]["id"]
        elif kind == "response.output_audio.delta" and data.get("response_id") == response_id:
            audio += base64.b64decode(data["delta"])
        elif kind == "response.done" and data["response"]["id"] == response_id:
            status = data["response"].get("status")
            if status == "completed" and audio:
                return bytes(audio)
            logger.warning(f"Greeting warm-up: {agent}'s greeting response ended {status}")
            return None
        elif kind == "error":
            error = data.get("error")
            error = error if isinstance(error, dict) else {}
            logger.warning(
                f"Greeting warm-up: {agent} got an error "
                f"({error.get('code') or error.get('type')}: {error.get('message')})"
            )
            if not asked:
                return None  # the configuration was refused
    return None
