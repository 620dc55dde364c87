#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The ``pipecat-realtime-twilio`` command."""

import argparse
import asyncio
import sys
from pathlib import Path

from loguru import logger

from pipecat_realtime_twilio.errors import BotError, SettingsError
from pipecat_realtime_twilio.settings import Settings, load_settings

_LOG_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "{extra[call_sid]} | <level>{message}</level>"
)


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``, each line tagged with its call's SID."""
    logger.remove()
    logger.configure(extra={"call_sid": "-"})
    logger.add(sys.stderr, level=level, format=_LOG_FORMAT)


def _settings(args: argparse.Namespace, **extra) -> Settings:
    overrides = {key: value for key, value in extra.items() if value is not None}
    for name in ("host", "port", "bot", "bots_dir"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(settings.log_level)
    settings.require_for_serving()
    import uvicorn

    from pipecat_realtime_twilio.app import create_app

    if not settings.twilio_validate_signatures:
        logger.warning(
            "TWILIO_VALIDATE_SIGNATURES is off: anyone can call the webhook. "
            "Use this only for local development."
        )
    app = create_app(settings)
    logger.info(
        f"Serving bot '{settings.bot}' on {settings.host}:{settings.port}; "
        f"Twilio voice URL: {settings.public_origin}/incoming"
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(args.log_level or "WARNING")
    from pipecat_realtime_twilio.simulate import print_result, simulate_call

    result = asyncio.run(
        simulate_call(settings, wav=args.wav, out=args.out, bot=args.bot, timeout=args.timeout)
    )
    print_result(result)
    return 0


def _bots(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging("WARNING")
    from pipecat_realtime_twilio.bot import load_bots

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
    serve.set_defaults(run=_serve)

    simulate = commands.add_parser(
        "simulate",
        help="place a simulated phone call to a bot, offline on the bundled emulator without a key",
    )
    simulate.add_argument("--wav", type=Path, help="WAV file the caller speaks (default: a sample)")
    simulate.add_argument(
        "--out", type=Path, default=Path("heard.wav"), help="WAV of what the caller heard"
    )
    simulate.add_argument("--bot", help="bot to call (BOT)")
    simulate.add_argument("--bots-dir", help="folder of bots (BOTS_DIR)")
    simulate.add_argument(
        "--timeout", type=float, default=60.0, help="give up after this many seconds"
    )
    simulate.add_argument("--log-level", help="log level of the runner (default WARNING)")
    simulate.set_defaults(run=_simulate)

    bots = commands.add_parser("bots", help="list the bots")
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
