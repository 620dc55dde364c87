#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What the agent asked the (emulated) model for, so scripted replies can follow it.

The agent asks the model to say given words (a greeting, an apology, a closing
line) with a ``response.create`` whose instructions end in
:data:`~pipecat_realtime_twilio.agent.realtime.SAY_INSTRUCTION` and the words, and
passes keypad digits as a user message starting with
:data:`~pipecat_realtime_twilio.agent.realtime.KEYPAD_INPUT`. A reply factory for
:class:`~pipecat_realtime_twilio.testing.emulator.RealtimeEmulator` reads them
from the session with these helpers.

On a GPT-Live session (``LiveSession``) the same words travel as context appends:
a ``session.commentary.append`` whose content holds ``SAY_INSTRUCTION`` and the words
(the model turn it triggers has trigger ``"commentary"``), and keypad digits as an
append whose content starts with ``KEYPAD_INPUT``.
"""

import re

from pipecat_realtime_twilio.agent.conversation import SAY_INSTRUCTION
from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT
from pipecat_realtime_twilio.testing.emulator import EmulatedSession, LiveSession, Reply

_SAY_RE = re.compile(re.escape(SAY_INSTRUCTION) + "(.+)$", re.DOTALL)


def words_to_say(session: EmulatedSession | LiveSession, trigger: str) -> str | None:
    """The words the agent asked for, if this response is one that says given words.

    Args:
        session: The emulated session (Realtime or Live).
        trigger: ``"response.create"``, ``"vad"`` (or, Live, ``"commentary"``), as the
            reply factory gets it.

    Returns:
        The words, or None.
    """
    if isinstance(session, LiveSession):
        commentary = [c for c in session.contexts if c.kind == "commentary"]
        if trigger != "commentary" or not commentary:
            return None
        match = _SAY_RE.search(commentary[-1].content)
        return match.group(1).strip() if match else None
    if trigger != "response.create":
        return None
    for event in reversed(session.client_events):
        if event.get("type") == "response.create":
            instructions = (event.get("response") or {}).get("instructions") or ""
            match = _SAY_RE.search(instructions)
            return match.group(1).strip() if match else None
    return None


def last_keypad_input(session: EmulatedSession | LiveSession) -> str | None:
    """The digits of the latest keypad message in the conversation, if any.

    Args:
        session: The emulated session (Realtime or Live).

    Returns:
        The digits, or None.
    """
    if isinstance(session, LiveSession):
        for context in reversed(session.contexts):
            if context.content.startswith(KEYPAD_INPUT):
                return context.content[len(KEYPAD_INPUT) :]
        return None
    for item in reversed(session.items):
        if item.get("type") != "message" or item.get("role") != "user":
            continue
        for part in item.get("content") or []:
            text = part.get("text") or ""
            if part.get("type") == "input_text" and text.startswith(KEYPAD_INPUT):
                return text[len(KEYPAD_INPUT) :]
    return None


def say_as_asked(default: Reply | None = None):
    """A reply factory: say what the agent asked for, otherwise ``default``.

    Args:
        default: The reply for other responses; None lets the emulator use its own.

    Returns:
        The factory, for ``RealtimeEmulator(replies=...)``.
    """

    def reply(session: EmulatedSession | LiveSession, trigger: str) -> Reply | None:
        words = words_to_say(session, trigger)
        return Reply(text=words) if words else default

    return reply
