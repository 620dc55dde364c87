#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""``pipecat-realtime-twilio emulator``: the bundled Realtime emulator on its own port.

It serves the Realtime API at ``/v1/realtime`` (and the Responses API at ``/v1``, and
GPT-Live at ``/v1/live/sessions`` when the emulator has it) on ``--host``/``--port``,
prints the settings that point a runner at it, then writes one line per thing that
happens in its sessions (:class:`~pipecat_realtime_twilio.testing.emulator_watch.EmulatorWatch`)
until Ctrl-C or SIGTERM (exit 0). Its words come from ``--replies FILE``
(:mod:`~pipecat_realtime_twilio.testing.replies_file`); without one it says what it is
asked to say (the greeting...) and answers everything else with one line.
"""

import argparse
import asyncio
import errno
import signal
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pipecat_realtime_twilio.errors import SettingsError

DEFAULT_PORT = 8765
"""The port the emulator listens on unless ``--port`` says otherwise."""


def add_parser(commands: Any, run: Callable[[argparse.Namespace], int]) -> None:
    """Add the ``emulator`` command to the CLI's subcommands.

    Args:
        commands: The ``add_subparsers()`` object.
        run: What runs the command (``args.run``).
    """
    emulator = commands.add_parser(
        "emulator",
        help="run the bundled Realtime emulator on its own port, with replies from a file",
    )
    emulator.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    emulator.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on ({DEFAULT_PORT})"
    )
    emulator.add_argument(
        "--replies", help="YAML file of what the model says (see the README); default: one line"
    )
    emulator.add_argument(
        "--ttfb-ms",
        type=_milliseconds,
        default=0.0,
        help="the model's time to first byte, in milliseconds (0)",
    )
    emulator.set_defaults(run=run)


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not 0 <= value < 600_000:
        raise argparse.ArgumentTypeError(f"must be 0 to 600000 ms, not {text}")
    return value


def run_emulator(args: argparse.Namespace) -> int:
    """Run ``pipecat-realtime-twilio emulator`` until Ctrl-C or SIGTERM.

    Args:
        args: The parsed command line.

    Returns:
        0 once stopped.

    Raises:
        SettingsError: A bad replies file or a port it cannot listen on, in one line.
    """
    asyncio.run(serve_emulator(args.host, args.port, args.replies, args.ttfb_ms))
    return 0


async def serve_emulator(
    host: str,
    port: int,
    replies: str | None,
    ttfb_ms: float,
    write: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the emulator until ``stop`` is set (by default: SIGINT or SIGTERM).

    Args:
        host: The interface.
        port: The port (0: any free one).
        replies: The replies file, or None for the built-in line.
        ttfb_ms: The model's time to first byte.
        write: Where lines go (stdout, flushed, by default).
        stop: Set to stop; None stops on SIGINT or SIGTERM.

    Raises:
        SettingsError: A bad replies file or a port it cannot listen on.
    """
    from pipecat_realtime_twilio.simulate import EMULATOR_ANSWER
    from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
    from pipecat_realtime_twilio.testing.emulator_watch import EmulatorWatch
    from pipecat_realtime_twilio.testing.model import say_as_asked
    from pipecat_realtime_twilio.testing.replies_file import ScriptedReplies, load_replies

    out = write or _print
    script = load_replies(replies) if replies else None

    watch: EmulatorWatch | None = None

    def told(session: Any, what: str) -> None:
        if watch is not None:
            watch.poll()  # what the caller did first, then the answer chosen
        out(f"{_now()} {getattr(session, 'id', '?')} response: {what}")

    source = ScriptedReplies(script, on_turn=told) if script else say_as_asked()
    emulator = RealtimeEmulator(
        replies=source, host=host, port=port, ttfb_ms=ttfb_ms, default_reply=Reply(EMULATOR_ANSWER)
    )

    def new_session(session: Any) -> None:
        if script is not None:  # each call hears the caller's script from the start
            emulator.transcripts[:] = list(script.transcripts)

    try:
        await emulator.start()
    except OSError as e:
        why = "the address is in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise SettingsError(f"the emulator cannot listen on {host}:{port}: {why}") from None
    watch = EmulatorWatch(emulator, lambda line: out(f"{_now()} {line}"), on_session=new_session)
    try:
        for line in _banner(emulator, script):
            out(line)
        watch.start()
        await _wait(stop)
        out(f"{_now()} stopping")
    finally:
        await watch.stop()
        await emulator.stop()


def _banner(emulator: Any, script: Any) -> list[str]:
    """What the emulator prints when it starts: where it is, and how to point a runner at it."""
    where = f"{emulator.host}:{emulator.port}"
    if script is not None:
        turns = len(script.turns)
        said = f"replies from {script.path} ({turns} turn{'s' if turns != 1 else ''})"
    else:
        said = "no --replies: it says what the bot asks for, and one line to everything else"
    lines = [
        f"Realtime emulator on {where}; {said}. Ctrl-C stops it.",
        "Point a runner at it (any OPENAI_API_KEY is accepted):",
        f"  OPENAI_REALTIME_URL={emulator.url}",
        f"  OPENAI_BASE_URL={emulator.http_url}",
    ]
    live_url = _live_url(emulator)
    if live_url:
        lines.append(f"  OPENAI_LIVE_URL={live_url}")
    return lines


def _live_url(emulator: Any) -> str | None:
    """The emulator's GPT-Live URL, when it speaks GPT-Live."""
    try:
        url = getattr(emulator, "live_url", None)
    except RuntimeError:  # not started
        return None
    return url if isinstance(url, str) else None


async def _wait(stop: asyncio.Event | None) -> None:
    if stop is not None:
        await stop.wait()
        return
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def _print(line: str) -> None:
    print(line, flush=True)  # a pipe sees each line as it happens
