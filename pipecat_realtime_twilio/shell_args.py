#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""``simulate --url``'s command line: its options, ``--press``, and where the runner is.

:func:`add_shell_arguments` adds ``--url``, ``--public-url``, ``--auth-token``,
``--api-key``, ``--press`` and ``--hangup-after`` to ``simulate``;
:func:`shell_call_from_args` turns them, and the settings (``TWILIO_AUTH_TOKEN``,
``PUBLIC_URL``, ``RUNNER_API_KEY``, ``TWILIO_ACCOUNT_SID``), into a :class:`ShellCall`
that :mod:`~pipecat_realtime_twilio.shell_simulate` places.
"""

import argparse
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import DTMF_DIGITS

_PRESS = re.compile(r"([0-9*#]+)(?:@(\d+(?:\.\d*)?|\.\d+))?")


@dataclass(frozen=True)
class Press:
    """Keys the caller presses.

    Parameters:
        digits: The keys, from ``0123456789*#``.
        at: Seconds after the stream started; None: after the greeting (and the answer
            to the keys pressed before).
    """

    digits: str
    at: float | None = None


def parse_press(text: str) -> Press:
    """Parse ``--press``: ``DIGITS`` or ``DIGITS@SECONDS``.

    Args:
        text: E.g. ``"1#"`` or ``"1#@2.5"``.

    Returns:
        The keys and when.

    Raises:
        argparse.ArgumentTypeError: Saying what is wrong.
    """
    match = _PRESS.fullmatch(text.strip())
    if match is None:
        bad = "".join(sorted({c for c in text.split("@")[0] if c not in DTMF_DIGITS}))
        why = f"not keypad keys: {bad!r}; " if bad else ""
        raise argparse.ArgumentTypeError(
            f"--press {text!r}: {why}give keys from 0-9 * #, optionally @SECONDS: 1# or 1#@2.5"
        )
    at = float(match[2]) if match[2] is not None else None
    return Press(match[1], at)


@dataclass(frozen=True)
class RunnerTarget:
    """Where the runner is, and where it believes Twilio reaches it.

    Parameters:
        server_url: Where requests go: the dialled origin and the runner's path prefix.
        public_url: What the runner signs over: its ``PUBLIC_URL`` and the same prefix.
        webhook_path: The voice webhook below both, with its query (``/incoming?bot=x``).
    """

    server_url: str
    public_url: str
    webhook_path: str

    @property
    def dial_url(self) -> str:
        """The webhook URL requested."""
        return self.server_url + self.webhook_path

    @property
    def signed_url(self) -> str:
        """The webhook URL the signature is computed over."""
        return self.public_url + self.webhook_path


def runner_target(url: str, public_url: str | None = None, bot: str | None = None) -> RunnerTarget:
    """Work out where to dial a runner from ``--url``, ``--public-url`` and ``--bot``.

    Args:
        url: The runner's base URL or its voice webhook URL (a path ending in
            ``/incoming``, perhaps with ``?bot=NAME``).
        public_url: The runner's ``PUBLIC_URL`` (an origin); None: ``url``'s origin.
        bot: Asks for this bot (``?bot=NAME``, over the URL's).

    Returns:
        The target.

    Raises:
        SettingsError: If a URL is not an http(s) URL.
    """
    parts = _http_url(url, "--url", "the runner's address, e.g. http://127.0.0.1:8080")
    path = parts.path.rstrip("/")
    prefix = path[: -len("/incoming")] if path.endswith("/incoming") else path
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if bot:
        query["bot"] = bot
    webhook = "/incoming" + (f"?{urlencode(query)}" if query else "")
    server = urlunsplit((parts.scheme, parts.netloc, prefix, "", ""))
    public = server
    if public_url:
        origin = _http_url(public_url, "--public-url / PUBLIC_URL", "the runner's https origin")
        public = urlunsplit((origin.scheme, origin.netloc, origin.path.rstrip("/"), "", ""))
        public += prefix
    return RunnerTarget(server_url=server, public_url=public, webhook_path=webhook)


def _http_url(url: str, name: str, what: str) -> SplitResult:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} {url!r} is not an http(s) URL: give {what}")
    return parts


@dataclass(frozen=True)
class ShellCall:
    """What ``simulate --url`` was asked to do.

    Parameters:
        target: Where the runner is.
        auth_token: The runner's ``TWILIO_AUTH_TOKEN``, to sign with.
        account_sid: The account the call comes from (the runner's, when it has one).
        api_key: The runner's ``RUNNER_API_KEY``, to read the call's record; None: no record.
        speech: What the caller says after the greeting, as μ-law, and its name; None: nothing.
        presses: Keys to press.
        hangup_after: Hang up this many seconds after the stream started, if still on.
        bot: The bot asked for; a runner that answers with another has no such bot.
        timeout: Give up after this many seconds.
    """

    target: RunnerTarget
    auth_token: str
    account_sid: str | None = None
    api_key: str | None = None
    speech: tuple[bytes, str] | None = None
    presses: tuple[Press, ...] = ()
    hangup_after: float | None = None
    bot: str | None = None
    timeout: float = 60.0


def shell_call_from_args(args: argparse.Namespace, settings: Settings) -> ShellCall:
    """Build the call from the command line and the settings (environment and ``.env``).

    Args:
        args: ``simulate``'s parsed arguments.
        settings: The settings, for ``TWILIO_AUTH_TOKEN``, ``PUBLIC_URL``,
            ``RUNNER_API_KEY`` and ``TWILIO_ACCOUNT_SID``.

    Returns:
        The call to place.

    Raises:
        SettingsError: A missing auth token, a bad URL or WAV file, in one line.
    """
    from pipecat_realtime_twilio.simulate import caller_audio, sample_audio

    token = args.auth_token
    if token is None and settings.twilio_auth_token is not None:
        token = settings.twilio_auth_token.get_secret_value()
    if token is None:
        if settings.twilio_validate_signatures:
            raise SettingsError(
                "simulate --url signs as Twilio does: give the runner's TWILIO_AUTH_TOKEN "
                "(--auth-token, or the setting)"
            )
        token = "unsigned"  # a runner that checks no signatures
    public = args.public_url or (str(settings.public_url) if settings.public_url else None)
    target = runner_target(args.url, public, args.bot)
    speech = None
    if args.wav is not None:
        speech = (caller_audio(args.wav), str(args.wav))
    elif not args.press:
        speech = (sample_audio(), "the built-in sample")
    api_key = args.api_key
    if api_key is None and settings.runner_api_key is not None:
        api_key = settings.runner_api_key.get_secret_value()
    return ShellCall(
        target=target,
        auth_token=token,
        account_sid=settings.twilio_account_sid,
        api_key=api_key,
        speech=speech,
        presses=tuple(args.press or ()),
        hangup_after=args.hangup_after,
        bot=args.bot,
        timeout=args.timeout,
    )


def add_shell_arguments(simulate: argparse.ArgumentParser) -> None:
    """Add ``simulate``'s options for calling a running runner (``--url`` and the rest).

    Args:
        simulate: The ``simulate`` subcommand's parser.
    """
    simulate.add_argument(
        "--url",
        help="call a runner that is running: its base URL (http://127.0.0.1:8080) or its "
        "webhook URL (.../incoming?bot=NAME)",
    )
    simulate.add_argument(
        "--public-url", help="with --url: the runner's PUBLIC_URL, signed over (PUBLIC_URL)"
    )
    simulate.add_argument(
        "--auth-token", help="with --url: the runner's TWILIO_AUTH_TOKEN (TWILIO_AUTH_TOKEN)"
    )
    simulate.add_argument(
        "--api-key", help="with --url: the runner's RUNNER_API_KEY, to print the call's record"
    )
    simulate.add_argument(
        "--press",
        action="append",
        type=parse_press,
        metavar="KEYS[@SECS]",
        help="with --url: press keys after the greeting (1#), or SECS after the stream "
        "started (1#@2.5); repeat for more",
    )
    simulate.add_argument(
        "--hangup-after",
        type=_seconds,
        metavar="SECS",
        help="with --url: hang up this many seconds after the stream started",
    )


def check_shell_arguments(args: argparse.Namespace) -> None:
    """Refuse ``simulate`` options that need ``--url`` when there is none.

    Args:
        args: ``simulate``'s parsed arguments.

    Raises:
        SettingsError: Naming the option.
    """
    if args.url:
        return
    for name in ("public_url", "auth_token", "api_key", "press", "hangup_after"):
        if getattr(args, name, None):
            option = "--" + name.replace("_", "-")
            raise SettingsError(f"{option} needs --url (the address of a running runner)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 24 * 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value
