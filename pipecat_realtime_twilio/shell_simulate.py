#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""``simulate --url URL``: call a runner that is already running, as Twilio would.

``URL`` is the runner's address as this machine reaches it: its base
(``http://127.0.0.1:8080``, ``/incoming`` is added) or its whole voice webhook
(``http://127.0.0.1:8080/incoming?bot=survey``). The simulated Twilio signs the webhook
with the runner's ``TWILIO_AUTH_TOKEN`` (``--auth-token``, else the setting) over the
URL Twilio would call: the runner's ``PUBLIC_URL`` (``--public-url``, else the setting,
else ``URL`` itself) with the webhook's path; it follows the TwiML to the ``<Stream>``
it names (its ``<Parameter>``s and stream token), mapped onto ``URL``'s host.

Then the call goes: the greeting is heard; the caller speaks (``--say WAV``; the
built-in sample when no ``--press`` is given) and keys are pressed (``--press 1#``
after the greeting, each after the bot answered the one before; ``--press 1#@2.5`` at
2.5 s after the stream started), each answer heard out; then the caller hangs up
(``--hangup-after SECS``: at that time, whatever happens). A line is printed for each
thing as it happens, timed from the dial. When the runner ends the call, its
``<Connect action>`` is asked what comes next (``<Hangup/>``, a ``<Dial>`` for a
transfer, a line). With the runner's ``RUNNER_API_KEY`` (``--api-key``, else the
setting) what is said is printed as it is said (``bot: ...``, ``caller: ...``, from the
runner's ``/api/calls/{CallSid}/transcript``: :mod:`~pipecat_realtime_twilio.shell_words`),
and its read API gives the call's record: the transcript, keys and tools are printed
at the end.

Exit status: 0 when the call went through and did not fail; 1 with one line on
standard error when the runner refused it (signature, unknown bot, busy, draining,
no such address), never answered, failed the call (its record says ``failed``; without
the record: it ended the call before any bot audio was heard), or the call did not
end within ``--timeout``.
"""

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
from websockets.exceptions import InvalidStatus

from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.shell_args import (
    Press,
    RunnerTarget,
    ShellCall,
    shell_call_from_args,
)
from pipecat_realtime_twilio.shell_progress import CallProgress, record_lines
from pipecat_realtime_twilio.shell_words import SpokenWords
from pipecat_realtime_twilio.testing.caller import CallRejected, TwilioCaller
from pipecat_realtime_twilio.testing.twiml import DialResult, TwimlError

ANSWER_TIMEOUT_SECS = 15.0
"""How long the caller waits for the bot to answer something before going on."""

QUIET_MS = 1000.0
"""Silence after the bot's audio that means it has finished answering."""

RECORD_WAIT_SECS = 10.0
"""How long the read API is asked for the call's record once the call is over."""

WORDS_WAIT_SECS = 3.0
"""How long the runner may take, once the call is over, to tell its last words."""


class ShellError(Exception):
    """The call could not go on: one line saying why (exit status 1)."""


@dataclass
class ShellResult:
    """How the call went.

    Parameters:
        call_sid: The call's SID.
        bot: The bot that answered (the stream's ``bot`` parameter).
        ended_by: ``"caller"`` (the simulated caller hung up) or ``"runner"``.
        next_twiml: What the ``<Connect action>`` answered when the runner ended it.
        record: The call's record from the read API, if read.
        heard_ms: Bot audio heard.
    """

    call_sid: str
    bot: str | None
    ended_by: str
    next_twiml: DialResult | None = None
    record: dict | None = None
    heard_ms: float = 0.0

    @property
    def failed(self) -> bool:
        """Whether the runner's record says the call failed."""
        reason = str((self.record or {}).get("end_reason") or "")
        return reason.startswith("failed")


async def place_shell_call(
    call: ShellCall, write: Callable[[str], None], out: Path | None = None
) -> ShellResult:
    """Call the runner, print the call as it goes, and read its record.

    Args:
        call: What to do.
        write: Where progress lines go.
        out: Where to write what the caller heard (a WAV), if anywhere.

    Returns:
        How it went.

    Raises:
        ShellError: The call could not go through, or did not end in time.
    """
    target = call.target
    caller = TwilioCaller(
        server_url=target.server_url,
        public_url=target.public_url,
        auth_token=call.auth_token,
        account_sid=call.account_sid,
        webhook_path=target.webhook_path,
    )
    progress = CallProgress(caller, write, asyncio.get_running_loop().time())
    words = (
        SpokenWords(target.server_url, call.api_key, caller.call_sid, progress)
        if call.api_key
        else None
    )
    try:
        async with asyncio.timeout(call.timeout):
            result = await _converse(call, caller, progress, words)
            if words is not None:
                await words.finish(WORDS_WAIT_SECS)  # the last words, then the record
    except TimeoutError:
        raise ShellError(f"the call did not end within {call.timeout:g} s (--timeout)") from None
    finally:
        if words is not None:
            await words.finish(0)
        await progress.stop()
        await caller.close()
    if out is not None and caller.playback:
        from pipecat_realtime_twilio.simulate import real_time_recording
        from pipecat_realtime_twilio.testing.sounds import write_ulaw_wav

        write_ulaw_wav(out, real_time_recording(caller))
        progress.line(f"what the caller heard: {out}")
    if call.api_key:
        result.record = await _read_record(call, caller.call_sid, progress)
    return result


async def _converse(
    call: ShellCall, caller: TwilioCaller, progress: CallProgress, words: SpokenWords | None
) -> ShellResult:
    target = call.target
    signed = "" if target.signed_url == target.dial_url else f" (signed for {target.signed_url})"
    progress.line(f"dialling {target.dial_url}{signed}")
    dialled = await _dial(caller, target)
    bot = dialled.parameters.get("bot")
    if not dialled.stream_url:
        verbs = "; ".join(_verb_text(verb) for verb in dialled.verbs) or "nothing"
        raise ShellError(f"the runner answered without a media stream: {verbs}")
    progress.line(f"answered: stream {dialled.stream_url}, bot '{bot}'")
    try:
        await caller.connect()
    except InvalidStatus as e:
        status = e.response.status_code
        raise ShellError(f"the runner refused the media stream (HTTP {status})") from None
    except OSError as e:
        raise ShellError(f"could not open the media stream: {e}") from None
    progress.line(f"connected: stream {caller.stream_sid} started", caller.started_at)
    progress.start()
    if words is not None:
        words.start()  # bot: ..., caller: ... as each utterance completes
    if call.bot and bot != call.bot:
        await caller.hangup()
        raise ShellError(
            f"the runner has no bot '{call.bot}': it answered with '{bot}' "
            "(pipecat-realtime-twilio bots lists them)"
        )
    ended_by = await _script(call, caller, progress)
    result = ShellResult(caller.call_sid, bot, ended_by, heard_ms=caller.heard_ms)
    if ended_by == "runner" and caller.action_url:
        progress.poll()
        result.next_twiml = after = await caller.follow_action()
        told = "; ".join(_verb_text(verb) for verb in after.verbs) or "nothing"
        progress.line(f"the call goes on to: {told}")
    return result


async def _dial(caller: TwilioCaller, target: RunnerTarget) -> DialResult:
    """The webhook's answer, or one line saying why there is none."""
    try:
        return await caller.dial()
    except CallRejected as e:
        if e.status == 403:
            raise ShellError(
                f"the runner refused the webhook's signature (HTTP 403): sign with its "
                f"TWILIO_AUTH_TOKEN (--auth-token) over its PUBLIC_URL (--public-url; "
                f"signed over {target.signed_url})"
            ) from None
        if e.status == 404:
            raise ShellError(f"no voice webhook at {target.dial_url} (HTTP 404)") from None
        if e.status == 503:
            raise ShellError("the runner is draining and takes no calls (HTTP 503)") from None
        raise ShellError(f"the runner's webhook answered HTTP {e.status}: {e.body[:200]}") from None
    except TwimlError as e:
        raise ShellError(f"the runner's webhook did not answer TwiML: {e}") from None
    except (aiohttp.ClientError, OSError) as e:
        raise ShellError(
            f"nothing answers at {target.dial_url} ({type(e).__name__}): "
            "is pipecat-realtime-twilio serve running there?"
        ) from None


def _verb_text(verb) -> str:
    text = f"<{verb.name}>"
    inner = verb.text or " ".join(child.text for child in verb.children if child.text)
    return f"{text} {inner}" if inner else text


async def _script(call: ShellCall, caller: TwilioCaller, progress: CallProgress) -> str:
    """Play the caller's part until someone hangs up; who did (``caller`` or ``runner``)."""
    assert caller.started_at is not None
    start = caller.started_at
    timed = [press for press in call.presses if press.at is not None]
    steps: list[tuple[str, bytes | str]] = []
    if call.speech is not None:
        steps.append(("say", call.speech[0]))
    steps += [("press", press.digits) for press in call.presses if press.at is None]
    tasks = [asyncio.create_task(_press_at(caller, progress, press, start)) for press in timed]
    conversation = asyncio.create_task(_steps(call, caller, progress, steps, tasks))
    ended = asyncio.ensure_future(caller.wait_ended(timeout=call.timeout + 60))
    waits: set[asyncio.Future] = {conversation, ended}
    if call.hangup_after is not None:
        delay = start + call.hangup_after - asyncio.get_running_loop().time()
        waits.add(asyncio.ensure_future(asyncio.sleep(max(0.0, delay))))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*waits, *tasks]:
            task.cancel()
        await asyncio.gather(*waits, *tasks, return_exceptions=True)
    error = (
        conversation.exception() if conversation.done() and not conversation.cancelled() else None
    )
    if error is not None:
        raise error
    if caller.stream_ended_at is not None:
        return "runner"
    progress.line("you hang up")
    await caller.hangup()
    return "caller"


async def _steps(
    call: ShellCall,
    caller: TwilioCaller,
    progress: CallProgress,
    steps: list[tuple[str, bytes | str]],
    timed: list[asyncio.Task],
) -> None:
    """Hear the greeting; speak and press keys, hearing each answer; wait for timed keys."""
    await _hear_answer(caller, progress, 0, "the greeting")
    for kind, what in steps:
        mark = len(caller.heard)
        if kind == "say":
            assert isinstance(what, bytes) and call.speech is not None
            progress.line(f"you say {call.speech[1]} ({len(what) / 8000:.1f} s)")
            await caller.say(what)
            progress.line("you stopped speaking")
        else:
            assert isinstance(what, str)
            progress.line(f"you press {what}")
            await caller.press(what)
        await _hear_answer(caller, progress, mark, "an answer")
    marks = await asyncio.gather(*timed)
    if marks:
        await _hear_answer(caller, progress, max(marks), "an answer to the keys")


async def _press_at(caller: TwilioCaller, progress: CallProgress, press: Press, start: float):
    """Press keys at their time; the audio heard by then (to hear the answer after it)."""
    assert press.at is not None
    await asyncio.sleep(max(0.0, start + press.at - asyncio.get_running_loop().time()))
    progress.line(f"you press {press.digits} (at {press.at:g} s)")
    mark = len(caller.heard)
    await caller.press(press.digits)
    return mark


async def _hear_answer(caller: TwilioCaller, progress: CallProgress, after: int, what: str) -> None:
    """Wait until the bot said something past byte ``after`` of what was heard, and stopped."""
    try:
        await caller.wait_quiet(after=after, quiet_ms=QUIET_MS, timeout=ANSWER_TIMEOUT_SECS)
    except TimeoutError:
        if caller.ended:
            return
        progress.line(f"no {what} heard within {ANSWER_TIMEOUT_SECS:g} s; going on")


async def _read_record(call: ShellCall, call_sid: str, progress: CallProgress) -> dict | None:
    """The call's record from the runner's read API, printed; None if it cannot be had."""
    url = f"{call.target.server_url}/api/calls/{call_sid}"
    headers = {"Authorization": f"Bearer {call.api_key}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT_SECS
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                answer = await client.get(url, headers=headers)
            except httpx.HTTPError as e:
                progress.line(f"no record: the read API did not answer ({type(e).__name__})")
                return None
            if answer.status_code == 200:
                record = answer.json()
                for line in record_lines(record):
                    progress.write(line)
                return record
            if answer.status_code != 404 or "RUNNER_API_KEY" in answer.text:
                why = "wrong RUNNER_API_KEY" if answer.status_code == 401 else answer.text[:120]
                progress.line(f"no record: the read API answered {answer.status_code} ({why})")
                return None
            if loop.time() >= deadline:  # written once the call is over: wait a little
                progress.line(f"no record of {call_sid} within {RECORD_WAIT_SECS:g} s")
                return None
            await asyncio.sleep(0.2)


def run_shell_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """``simulate --url``: place the call, print it; the exit status.

    Args:
        args: ``simulate``'s parsed arguments.
        settings: The settings.

    Returns:
        0 when the call went through and did not fail, 1 otherwise.
    """
    call = shell_call_from_args(args, settings)

    def write(line: str) -> None:
        print(line, flush=True)  # a pipe sees each line as it happens

    try:
        result = asyncio.run(place_shell_call(call, write, args.out))
    except ShellError as e:
        print(f"pipecat-realtime-twilio: {e}", file=sys.stderr, flush=True)
        return 1
    if result.failed:
        reason = (result.record or {}).get("end_reason")
        print(f"pipecat-realtime-twilio: the call failed ({reason})", file=sys.stderr)
        return 1
    if result.ended_by == "runner" and result.heard_ms == 0:  # a fallback, most likely
        print(
            "pipecat-realtime-twilio: the runner ended the call before the bot said anything",
            file=sys.stderr,
        )
        return 1
    if result.record is None and call.api_key is None:
        write("(give the runner's RUNNER_API_KEY, --api-key, to print the call's record)")
    return 0
