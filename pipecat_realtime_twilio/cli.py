#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The ``pipecat-realtime-twilio`` command."""

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from loguru import logger

from pipecat_realtime_twilio.errors import BotError, SettingsError
from pipecat_realtime_twilio.logs import json_line, patch_record
from pipecat_realtime_twilio.settings import Settings, load_settings

if TYPE_CHECKING:
    from pipecat_realtime_twilio.runner.app import CallRunner
    from pipecat_realtime_twilio.runner.queries import CallQuery
    from pipecat_realtime_twilio.runner.records import CallRecord
    from pipecat_realtime_twilio.runner.store import CallStore

_LOG_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "{extra[call_sid]} | <level>{message}</level>"
)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``, each line tagged with its call's SID.

    Every message stays on one line (control characters escaped) and phone
    numbers in it are masked unless ``LOG_PHONE_NUMBERS=true``
    (:func:`~pipecat_realtime_twilio.logs.patch_record`). With ``log_format``
    ``"json"`` (``LOG_FORMAT=json``) each line is one JSON object
    (:func:`~pipecat_realtime_twilio.logs.json_line`).
    """
    logger.remove()
    logger.configure(extra={"call_sid": "-"}, patcher=patch_record)
    if log_format == "json":
        logger.add(_json_sink, level=level, format="{message}")
    else:
        logger.add(sys.stderr, level=level, format=_LOG_FORMAT)


def _json_sink(message) -> None:
    sys.stderr.write(json_line(message.record) + "\n")


def _settings(args: argparse.Namespace, **extra) -> Settings:
    overrides = {key: value for key, value in extra.items() if value is not None}
    for name in ("host", "port", "bot", "bots_dir"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format)
    settings.require_for_serving()
    from pipecat_realtime_twilio.runner.app import create_app
    from pipecat_realtime_twilio.runner.server import server_options

    if not settings.twilio_validate_signatures:
        logger.warning(
            "TWILIO_VALIDATE_SIGNATURES is off: anyone can call the webhook and open media "
            "streams. Use this only for local development."
        )
    app = create_app(settings, reload_bots=args.reload)
    if args.reload:
        logger.info(f"Reloading bots when files in {settings.bots_dir} change")
    logger.info(
        f"Serving bot '{settings.bot}' on {settings.host}:{settings.port}; "
        f"Twilio voice URL: {settings.public_origin}/incoming; at most {settings.max_calls} calls"
    )
    config = uvicorn.Config(app, host=settings.host, port=settings.port, **server_options(settings))
    server = _DrainingServer(config, app.state.runner)
    server.run()
    return 0


class _DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM draining the runner first (exit 0) instead of stopping at once.

    The drain ends within ``DRAIN_TIMEOUT_SECS`` (``CallRunner.drain``); then
    uvicorn stops, giving open connections ``timeout_graceful_shutdown``
    (:data:`~pipecat_realtime_twilio.runner.server.GRACEFUL_SHUTDOWN_SECS`) to
    finish: a client that trickles a request cannot hold the exit.
    """

    def __init__(self, config: uvicorn.Config, runner: "CallRunner"):
        super().__init__(config)
        self.runner = runner
        self._drain: asyncio.Task | None = None
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            self.should_exit = True  # Ctrl-C: stop now
            return
        if not self._draining:
            self._draining = True  # a second SIGTERM changes nothing
            # A signal handler: hand the drain to the event loop.
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        logger.info("SIGTERM: draining before exit")
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.runner.drain()
        finally:
            self.should_exit = True


def _simulate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(args.log_level or "WARNING", settings.log_format)
    from pipecat_realtime_twilio.shell_args import check_shell_arguments
    from pipecat_realtime_twilio.shell_simulate import run_shell_simulate
    from pipecat_realtime_twilio.simulate import print_result, simulate_call

    check_shell_arguments(args)
    if args.url:  # a runner that is running: call it as Twilio would
        return run_shell_simulate(args, settings)

    result = asyncio.run(
        simulate_call(
            settings,
            wav=args.wav,
            out=args.out,
            bot=args.bot,
            timeout=args.timeout,
            database_url=args.database_url,
        )
    )
    print_result(result)
    return 1 if result.fallback is not None else 0  # the bot failed: say so to scripts too


def _emulator(args: argparse.Namespace) -> int:
    configure_logging("WARNING")  # the emulator's own lines are its output, not its logs
    from pipecat_realtime_twilio.emulator_cli import run_emulator

    return run_emulator(args)


def _call(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging("WARNING")
    from pipecat_realtime_twilio.phone.outbound import OutboundError, place_call

    try:
        call_sid = asyncio.run(
            place_call(settings, args.to, bot=args.bot, from_number=getattr(args, "from"))
        )
    except OutboundError as e:
        print(f"pipecat-realtime-twilio: {e}", file=sys.stderr)
        return 1
    print(f"Calling {args.to}: call {call_sid}, bot '{args.bot or settings.bot}'")
    return 0


def _campaign(args: argparse.Namespace) -> int:
    from pipecat_realtime_twilio.runner.campaign_cli import run_campaign

    return run_campaign(args, _settings(args))


def _calls(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging("WARNING")
    from pipecat_realtime_twilio.runner.call_listing import record_lines, row
    from pipecat_realtime_twilio.runner.queries import CallQuery
    from pipecat_realtime_twilio.runner.store import CallStore
    from pipecat_realtime_twilio.runner.timespec import parse_time

    try:  # a bad time or --limit is named in one line, before the store opens
        query = CallQuery(
            bot=args.bot,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            end_reason=args.reason,
            direction=args.direction,
            number=args.number,
            search=args.search,
            limit=args.limit,
        )
    except ValueError as e:
        print(f"pipecat-realtime-twilio: {e}", file=sys.stderr)
        return 2
    with CallStore(settings.database_url) as store:
        if args.call_sid:
            record = store.get(args.call_sid)
            if record is None:
                print(
                    f"pipecat-realtime-twilio: no record of call {args.call_sid}", file=sys.stderr
                )
                return 1
            if args.json:
                print(record.to_json())
            else:
                configured = settings.call_webhook_url is not None
                print("\n".join(record_lines(record, webhook_configured=configured)))
            return 0
        records, total = _search_all(store, query, args.limit)
    if args.json:
        print(json.dumps([r.to_dict() for r in records]))
        return 0
    if not records:
        print("no calls recorded" if query == CallQuery(limit=args.limit) else "no calls match")
    for record in records:
        print(row(record))
    if total > len(records):
        print(f"({len(records)} of {total} calls; --limit shows more)")
    return 0


def _search_all(
    store: "CallStore", query: "CallQuery", limit: int
) -> tuple[list["CallRecord"], int]:
    """Up to ``limit`` matching records, a page (at most ``MAX_LIMIT``) at a time; the total."""
    from pipecat_realtime_twilio.runner.queries import MAX_LIMIT

    records: list[CallRecord] = []
    total = 0
    while len(records) < limit:
        size = min(limit - len(records), MAX_LIMIT)
        page = store.search(dataclasses.replace(query, limit=size, offset=len(records)))
        records.extend(page.records)
        total = page.total
        if len(page.records) < size:
            break
    return records, total


def _bots(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging("WARNING")
    from pipecat_realtime_twilio.runner.bots import bot_files, check_bot, load_bot, load_bots

    if args.action == "check":
        problems = 0
        for path in bot_files(settings.bots_dir):
            try:
                bot = load_bot(path)
                processors = asyncio.run(check_bot(bot, settings))  # builds it, offline
            except BotError as e:
                problems += 1
                for line in str(e).splitlines():  # one mistake per line, each marked
                    print(f"error: {line}")
            else:
                print(f"ok: {bot.name} ({path})")
                for server in (s for p in processors for s in getattr(p, "mcp_servers", [])):
                    print(f"  mcp: {server.describe()}")  # header names only, never values
        return 1 if problems else 0

    bots = load_bots(settings.bots_dir)
    width = max((len(name) for name in bots), default=0)
    for name, bot in bots.items():
        marker = "*" if name == settings.bot else " "
        print(f"{marker} {name:<{width}}  {bot.description}  ({bot.path})")
    if not bots:
        print(f"no bots in {settings.bots_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="pipecat-realtime-twilio",
        description="Answer Twilio phone calls with the OpenAI Realtime API, in Pipecat.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the call runner (Twilio webhook + media stream)")
    serve.add_argument("--host", help="interface to listen on (HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (PORT)")
    serve.add_argument("--bot", help="bot that answers calls (BOT)")
    serve.add_argument("--bots-dir", help="folder of bots (BOTS_DIR)")
    serve.add_argument(
        "--reload",
        action="store_true",
        help="reload bots when their files change (calls in progress keep theirs)",
    )
    serve.set_defaults(run=_serve)

    simulate = commands.add_parser(
        "simulate",
        help="place a simulated phone call to a bot, offline on the bundled emulator without a "
        "key, or to a running runner (--url)",
    )
    simulate.add_argument(
        "--wav", "--say", type=Path, help="WAV file the caller speaks (default: a sample)"
    )
    simulate.add_argument(
        "--out", type=Path, default=Path("heard.wav"), help="WAV of what the caller heard"
    )
    simulate.add_argument("--bot", help="bot to call (BOT)")
    simulate.add_argument("--bots-dir", help="folder of bots (BOTS_DIR)")
    simulate.add_argument(
        "--timeout", type=float, default=60.0, help="give up after this many seconds"
    )
    simulate.add_argument("--log-level", help="log level of the runner (default WARNING)")
    simulate.add_argument(
        "--database-url",
        help="store the call's record in this database (SQLAlchemy URL; default: a temporary one)",
    )
    from pipecat_realtime_twilio.shell_args import add_shell_arguments

    add_shell_arguments(simulate)
    simulate.set_defaults(run=_simulate)

    call = commands.add_parser(
        "call", help="place an outbound call to a bot (Twilio REST; the runner must be serving)"
    )
    call.add_argument("to", help="the number to call, E.164 (+15551234567)")
    call.add_argument("--bot", help="bot that talks (BOT)")
    call.add_argument("--from", help="caller ID, a Twilio number (TWILIO_PHONE_NUMBER)")
    call.set_defaults(run=_call)

    from pipecat_realtime_twilio.runner.campaign_cli import add_parser as add_campaign_parser

    add_campaign_parser(commands, _campaign)

    from pipecat_realtime_twilio.emulator_cli import add_parser as add_emulator_parser

    add_emulator_parser(commands, _emulator)

    calls = commands.add_parser("calls", help="list call records, or show one")
    calls.add_argument("call_sid", nargs="?", help="show this call's record")
    calls.add_argument("--limit", type=int, default=50, help="how many calls to list")
    calls.add_argument("--bot", help="only calls to this bot")
    calls.add_argument(
        "--since", help="only calls that started since: 2026-11-30, 2026-11-30T14:00, 7d, 12h"
    )
    calls.add_argument("--until", help="only calls that started before this time")
    calls.add_argument(
        "--reason", help="only calls that ended so: caller_hung_up, transferred, failed..."
    )
    calls.add_argument("--direction", choices=["inbound", "outbound"], help="only these calls")
    calls.add_argument("--number", help="only calls from or to this number")
    calls.add_argument("--search", help="only calls whose transcript has this text")
    calls.add_argument("--json", action="store_true", help="print JSON")
    calls.set_defaults(run=_calls)

    bots = commands.add_parser("bots", help="list the bots, or check them (bots check)")
    bots.add_argument(
        "action", nargs="?", choices=["list", "check"], default="list", help="list or check"
    )
    bots.add_argument("--bots-dir", help="folder of bots (BOTS_DIR)")
    bots.set_defaults(run=_bots)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; a settings or bot error exits 2 with a message naming the problem."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (SettingsError, BotError) as e:
        print(f"pipecat-realtime-twilio: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
