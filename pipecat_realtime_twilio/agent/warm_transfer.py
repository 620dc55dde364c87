#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The ``warm_transfer`` tool: the caller on hold while a human hears a summary, then bridged.

Example::

    tools = [end_call(), warm_transfer("+15551230000", ring_secs=20)]
    RealtimeAgent(instructions=..., tools=tools)

The model calls ``warm_transfer(summary)`` after telling the caller to hold. Once
the caller has heard that, the bot stops listening, hold audio plays, and the call
(:meth:`~pipecat_realtime_twilio.seams.PhoneCall.warm_transfer`, see
:mod:`pipecat_realtime_twilio.phone.warm_transfer`) dials the human through Twilio's
REST API: Twilio says the summary to them, then the two are bridged in a conference
and the bot leaves the call. If the line is busy, nobody answers within
``ring_secs``, the call fails or the human hangs up first, the hold audio stops, the
bot listens again, and the model gets a result saying so, which it tells the caller.

On GPT-Live the tool runs inside a delegated Responses function call (its result goes
back as the ``function_call_output``): the agent waits only for the model's words to be
heard, not for that delegation, and holds the caller itself
(:mod:`~pipecat_realtime_twilio.agent.live_hold`: ``session.input_audio.mute``, and
none of the model's audio played until the caller is back).
"""

import asyncio
from typing import Protocol, runtime_checkable

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import FunctionCallResultProperties
from pipecat.services.llm_service import FunctionCallParams

from pipecat_realtime_twilio.agent.controls import AgentControls
from pipecat_realtime_twilio.agent.tools import RealtimeTool, _agent_of
from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.seams import PhoneCall
from pipecat_realtime_twilio.targets import check_transfer_target

DEFAULT_RING_SECS = 25.0
"""How long the human's phone rings before the caller is back with the bot."""

DEFAULT_SUMMARY = "A caller would like to speak with you."
"""What the human hears when the model gave no summary."""

_HEARD_TIMEOUT_SECS = 30.0  # for the "please hold" to be heard before hold audio starts

RESULTS = {
    "bridged": "The caller is now talking with the person; you have left the call.",
    "no_answer": "Nobody answered. Tell the caller, and offer to help another way.",
    "busy": "The line was busy. Tell the caller, and offer to help another way.",
    "declined": "The person could not take the call. Tell the caller, and offer to help "
    "another way.",
    "failed": "The transfer could not be made. Apologize to the caller, and offer to help "
    "another way.",
    "caller_hung_up": "The caller hung up while on hold.",
}
"""What the model is told after each outcome (it answers all but ``bridged``)."""

_BACK_WITH_THE_BOT = FunctionCallResultProperties(run_llm=True)
_GONE = FunctionCallResultProperties(run_llm=False)


def warm_transfer(
    number: str,
    *,
    ring_secs: float = DEFAULT_RING_SECS,
    caller_id: str | None = None,
    hold_audio: bytes | None = None,
    description: str = (
        "Transfer the caller to a person, warmly: the caller waits on hold while the "
        "person hears your short summary of the call, then the two are connected and you "
        "leave the call. Use it when the caller asks for a human or you cannot help. "
        "First tell the caller you are putting them on hold for a moment."
    ),
) -> RealtimeTool:
    """The ``warm_transfer`` tool: hold, a summary to the human, then a bridge.

    Args:
        number: Where the human is (E.164 phone number or SIP URI), set per bot.
        ring_secs: How long the human's phone may ring before the caller is back
            with the bot.
        caller_id: The number the human sees; by default the call's number of the
            account (``To`` of an inbound call, ``From`` of an outbound one).
        hold_audio: 8 kHz μ-law the caller hears on hold, looped; a soft chime by default.
        description: What the model is told about the tool.

    Returns:
        The tool (the model gives one argument, ``summary``).

    Raises:
        ValueError: If ``number`` is missing or neither a phone number nor a SIP URI,
            or ``ring_secs`` is not positive.
    """
    if not number:
        raise ValueError("warm_transfer needs a number to transfer to")
    number = check_transfer_target(number)  # a wrong one fails when the bot is built
    if ring_secs <= 0:
        raise ValueError(f"ring_secs must be positive, not {ring_secs}")
    schema = FunctionSchema(
        name="warm_transfer",
        description=description,
        properties={
            "summary": {
                "type": "string",
                "description": "One or two sentences for the person taking the call: who "
                "is calling and what they need.",
            }
        },
        required=["summary"],
    )

    transferring: set[str] = set()  # calls with an attempt under way (a tool may serve many)

    async def handler(params: FunctionCallParams) -> None:
        agent = _agent_of(params)
        summary = str((params.arguments or {}).get("summary") or "").strip() or DEFAULT_SUMMARY
        call = agent.call
        if call is None:
            await _failed(params, "warm_transfer needs the agent inside a CallSession pipeline")
            return
        if call.call_sid in transferring:
            await _failed(params, "a warm transfer of this call is already under way")
            return
        transferring.add(call.call_sid)
        try:
            await _transfer(params, agent, call, summary)
        finally:
            transferring.discard(call.call_sid)

    async def _transfer(
        params: FunctionCallParams, agent: AgentControls, call: PhoneCall, summary: str
    ) -> None:
        if isinstance(agent, HoldsCaller):  # GPT-Live: this tool runs inside a delegation
            await agent.wait_said(_HEARD_TIMEOUT_SECS)  # "please hold", before the hold audio
        else:
            await _heard(agent, _HEARD_TIMEOUT_SECS)
        await _on_hold(params.llm, True)  # on hold: the caller's words are not for the bot
        reported = False

        async def bridging() -> None:  # the result goes back before the call's pipeline ends
            nonlocal reported
            reported = True
            result = {"status": "bridged", "message": RESULTS["bridged"]}
            await params.result_callback(result, properties=_GONE)

        options = {"ring_secs": ring_secs, "caller_id": caller_id, "hold_audio": hold_audio}
        outcome = "failed"
        try:
            outcome = str(
                await call.warm_transfer(number, summary, before_bridge=bridging, **options)
            )
        except (CallControlError, ValueError) as e:
            logger.error(f"warm_transfer: {e}")
        finally:
            if outcome != "bridged":  # bridged: the bot has left, nothing of it plays again
                await _on_hold(params.llm, False)
        if reported:  # the bridge failed after all: never silence
            if outcome != "bridged":
                agent.call_events.tool_failed(params.tool_call_id, "warm_transfer failed")
                await agent.say(agent.tool_error_message)
            return
        result = {"status": outcome, "message": RESULTS.get(outcome, RESULTS["failed"])}
        if outcome == "caller_hung_up":
            await params.result_callback(result, properties=_GONE)
            return
        if outcome == "failed":
            agent.call_events.tool_failed(params.tool_call_id, "warm_transfer failed")
        await params.result_callback(result, properties=_BACK_WITH_THE_BOT)

    return RealtimeTool(name="warm_transfer", schema=schema, handler=handler)


@runtime_checkable
class HoldsCaller(Protocol):
    """An agent that puts its side of the call on hold itself (GPT-Live's ``LiveAgent``)."""

    async def wait_said(self, timeout: float) -> bool:
        """Wait until what the model says now was heard, delegated work in flight aside."""

    async def hold(self, on: bool) -> None:
        """Mute the caller to the model and play none of it (True), or undo that (False)."""


async def _on_hold(llm: object, on: bool) -> None:
    """Keep the caller's audio from the model (``on``), or let it through again."""
    if isinstance(llm, HoldsCaller):
        await llm.hold(on)  # session.input_audio.mute / unmute
        return
    pause = getattr(llm, "set_audio_input_paused", None)
    if pause is not None:
        pause(on)  # Pipecat's Realtime service stops appending the caller's audio


async def _heard(agent: AgentControls, timeout: float) -> bool:
    """Wait until no response is in progress and the phone played everything."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while agent.responding or not agent.phone_idle:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _failed(params: FunctionCallParams, error: str) -> None:
    logger.error(f"warm_transfer: {error}")
    agent = _agent_of(params)
    agent.call_events.tool_failed(params.tool_call_id, error)
    await params.result_callback(
        {"status": "failed", "message": RESULTS["failed"]}, properties=_BACK_WITH_THE_BOT
    )
