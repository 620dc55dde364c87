#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Scenario tests for bots: script a phone call, then assert on how it went.

A :class:`Scenario` runs the real runner with your bot on 127.0.0.1, a
Realtime emulator standing in for the model and a simulated Twilio caller.
You script both sides: what the caller says or presses, and what the
(emulated) model answers or which tool it calls with which arguments. Then you
assert on the outcome: tools called and their results, a transfer, the end of
the call, the transcript, the call record.

Example::

    async with Scenario("receptionist") as call:
        await call.start()                                   # dial; the greeting is heard
        call.model.says("Sure. May I have your name?")
        await call.caller_says("I'd like to leave a message.")
        call.model.calls("transfer_call")
        await call.caller_says("Actually, put me through to a person.")
        await call.ended()
        assert call.transferred_to == "+15551230000"

The greeting, apologies and other words the bot is made to say are spoken by
the emulated model as asked; every other response takes the next scripted turn.
A turn that calls a tool is followed by the model's answer to the tool's result,
which is the next scripted turn.
"""

import asyncio
import json
import secrets
import tempfile
from pathlib import Path

from pydantic import AnyHttpUrl, SecretStr

from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.runner.app import CallRunner, create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import (
    FunctionCall,
    McpCall,
    McpCallRecord,
    RealtimeEmulator,
    Reply,
)
from pipecat_realtime_twilio.testing.model import words_to_say
from pipecat_realtime_twilio.testing.server import LocalServer
from pipecat_realtime_twilio.testing.sounds import silence, tone

_QUIET_MS = 400


class ScriptedModel:
    """The emulated model's script: what it says or calls, turn by turn."""

    def __init__(self):
        """Start with an empty script."""
        self._turns: list[Reply] = []
        self.unscripted = 0

    def says(self, text: str) -> "ScriptedModel":
        """Queue a turn in which the model says ``text``."""
        self._turns.append(Reply(text=text))
        return self

    def calls(
        self, tool: str, arguments: dict | None = None, *, saying: str = ""
    ) -> "ScriptedModel":
        """Queue a turn in which the model calls ``tool`` (after ``saying``, if given)."""
        self._turns.append(Reply(text=saying, function_call=FunctionCall(tool, arguments or {})))
        return self

    def calls_mcp(
        self,
        server: str,
        tool: str,
        arguments: dict | None = None,
        *,
        answer: str = "{output}",
        on_error: str | None = None,
    ) -> "ScriptedModel":
        """Queue a turn in which the model calls ``tool`` of the MCP server labelled ``server``.

        The emulator calls the real server (asking the agent's consent first if the
        server's approval says so), then the model says ``answer`` (``{output}``: the
        tool's output; empty: nothing, the response ends after the call), or
        ``on_error`` if the call failed (None: ``McpCall``'s apology; empty: nothing).
        """
        call = McpCall(server, tool, arguments or {})
        if on_error is not None:
            call.on_error = on_error
        self._turns.append(Reply(text=answer, mcp_call=call))
        return self

    def confirms(self, approve: bool = True) -> "ScriptedModel":
        """Queue a turn in which the model passes on the caller's yes (or no) to a tool call."""
        return self.calls("confirm_tool_call", {"approve": approve})

    def reply(self, session, trigger: str) -> Reply:
        """The emulator's reply factory."""
        words = words_to_say(session, trigger)
        if words:
            return Reply(text=words)
        if self._turns:
            return self._turns.pop(0)
        self.unscripted += 1
        return Reply(text="(no scripted turn left)")


class Scenario:
    """A scripted phone call to one bot (use ``async with``).

    Attributes:
        model: The script of the emulated model.
        caller: The simulated Twilio caller (``heard``, ``clears``, ...).
        emulator: The Realtime emulator (sessions, client events, function outputs).
        runner: The runner (``finished`` records, ``store``).
    """

    def __init__(self, bot: str, *, bots_dir: str | Path = "bots", **settings):
        """Prepare the call.

        Args:
            bot: The bot's name (``bots/NAME.md`` or ``bots/NAME.py``).
            bots_dir: The folder of bots.
            **settings: Further runner settings (e.g. ``bot_routes``).
        """
        self.bot = bot
        self._bots_dir = str(bots_dir)
        self._settings = settings
        self.model = ScriptedModel()
        self._token = secrets.token_hex(16)
        self._tmp = tempfile.TemporaryDirectory(prefix="scenario-")
        self.emulator = RealtimeEmulator(replies=self.model.reply)
        self._server = LocalServer()
        self.caller: TwilioCaller | None = None
        self.runner: CallRunner | None = None
        self._after: object | None = None

    @property
    def _caller(self) -> TwilioCaller:
        """The caller, once the scenario has started."""
        assert self.caller is not None, "the scenario has not started (use async with)"
        return self.caller

    @property
    def _runner(self) -> CallRunner:
        """The runner, once the scenario has started."""
        assert self.runner is not None, "the scenario has not started (use async with)"
        return self.runner

    async def __aenter__(self) -> "Scenario":
        """Start the emulator and the runner."""
        await self.emulator.start()
        settings = Settings(
            _env_file=None,
            openai_api_key=SecretStr("sk-scenario"),
            openai_realtime_url=self.emulator.url,
            twilio_auth_token=SecretStr(self._token),
            public_url=AnyHttpUrl(self._server.url),
            bots_dir=self._bots_dir,
            bot=self.bot,
            database_url=f"sqlite:///{self._tmp.name}/calls.db",
            **self._settings,
        )
        self._server.app = create_app(settings, load_bots(self._bots_dir))
        self.runner = self._server.app.state.runner
        await self._server.start()
        self.caller = TwilioCaller(
            server_url=self._server.url, public_url=self._server.url, auth_token=self._token
        )
        return self

    async def __aexit__(self, *exc) -> None:
        """Hang up if needed and stop everything."""
        await self._caller.close()
        await self._server.stop()
        await self.emulator.stop()
        self._tmp.cleanup()

    # -- the caller -------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Dial, connect the stream and wait until the bot is quiet (the greeting heard)."""
        await self._caller.call()
        await self._quiet(0, timeout)

    async def caller_says(self, text: str, timeout: float = 15.0) -> None:
        """The caller says ``text`` (its transcript), then waits for the bot to answer.

        Args:
            text: What the caller says (the emulator reports it as the transcript).
            timeout: Most seconds to wait for the answer.
        """
        self.emulator.transcripts.append(text)
        ms = max(400, 60 * len(text))
        await self._input(self._caller.say(tone(ms) + silence(700)), timeout)

    async def caller_presses(self, keys: str, timeout: float = 15.0) -> None:
        """The caller presses keypad ``keys``, then waits for the bot to answer."""
        await self._input(self._caller.press(keys), timeout)

    async def hang_up(self) -> None:
        """The caller hangs up."""
        await self._caller.hangup()

    async def ended(self, timeout: float = 15.0) -> None:
        """Wait until the call is over (either side) and its record is kept."""
        await self._caller.wait_ended(timeout)
        await self._caller.wait_until(
            lambda: any(r.call_sid == self._caller.call_sid for r in self._runner.finished),
            timeout=timeout,
            message="the call record",
        )
        if self._caller.hung_up_at is None and self._caller.action_url:
            self._after = await self._caller.follow_action()

    async def _input(self, sent, timeout: float) -> None:
        heard = len(self._caller.heard)
        await sent
        await self._quiet(heard, timeout)

    async def _quiet(self, after: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # An answer is heard, or the call ends.
        while len(self._caller.heard) <= after and not self._caller.ended:
            if loop.time() > deadline:
                raise TimeoutError("the bot did not answer")
            await asyncio.sleep(0.02)
        if not self._caller.ended:
            await self._caller.wait_quiet(after=after, quiet_ms=_QUIET_MS, timeout=timeout)

    # -- the outcome ------------------------------------------------------------------

    @property
    def tool_calls(self) -> list[tuple[str, dict, object]]:
        """``(tool, arguments, result)`` of every tool the model called, in order."""
        calls = []
        for session in self.emulator.sessions:
            outputs = {o.call_id: o.output for o in session.function_outputs}
            for response in session.responses:
                reply = response.reply
                if response.call_id and reply is not None and reply.function_call is not None:
                    output = outputs.get(response.call_id)
                    result = json.loads(output) if output is not None else None
                    calls.append((reply.function_call.name, reply.function_call.arguments, result))
        return calls

    @property
    def mcp_calls(self) -> list[McpCallRecord]:
        """Every MCP tool call the model made (or asked consent for), in order."""
        sessions = self.emulator.sessions  # Realtime and GPT-Live sessions alike
        return [call for session in sessions for call in getattr(session, "mcp_calls", [])]

    @property
    def transferred_to(self) -> str | None:
        """The number the call was transferred to (through the action URL), if any."""
        for verb in getattr(self._after, "verbs", []):
            if verb.name == "Dial":
                return verb.text
        return None

    @property
    def hung_up_by_bot(self) -> bool:
        """Whether the bot ended the call (its stream closed, then ``<Hangup/>``)."""
        return [v.name for v in getattr(self._after, "verbs", [])] == ["Hangup"]

    @property
    def record(self) -> CallRecord | None:
        """The call record, once the call is over."""
        return next((r for r in self._runner.finished if r.call_sid == self._caller.call_sid), None)

    @property
    def transcript(self) -> list[tuple[str, str]]:
        """``(role, text)`` of the call so far, from the bot's side."""
        agent = next(iter(self._runner.active.values())).agent if self._runner.active else None
        if agent is not None:
            return [(e.role, e.text) for e in agent.transcript]
        record = self.record
        return [(t["role"], t["text"]) for t in record.transcript] if record else []

    @property
    def heard_ms(self) -> float:
        """Milliseconds of bot audio the caller heard."""
        return len(self._caller.heard) / BYTES_PER_MS
