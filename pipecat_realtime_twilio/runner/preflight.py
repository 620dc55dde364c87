#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What a runner checks before it takes a call, whatever starts it (``serve``, an app, a router).

Each problem stops it with one line naming the setting (a `SettingsError` or `BotError`).
"""

from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.runner.bots import Bot, select_bot
from pipecat_realtime_twilio.runner.model_check import log_model_warnings
from pipecat_realtime_twilio.settings import Settings


def check_runner(settings: Settings, bots: dict[str, Bot]) -> None:
    """Check the settings against the bots; warn of models with an announced shutdown.

    Args:
        settings: The runner's settings.
        bots: The bots by name.

    Raises:
        SettingsError: No way to check Twilio's signatures, or ``BOT_ROUTES`` names a
            bot that does not exist.
        BotError: ``BOT`` is not among the bots.
    """
    require_signing_secret(settings)
    require_rest_credentials(settings, bots)
    select_bot(bots, settings.bot)
    for number, name in settings.bot_routes.items():
        if name not in bots:
            known = ", ".join(sorted(bots))
            raise SettingsError(
                f"BOT_ROUTES: {number} goes to bot '{name}', which does not exist "
                f"(bots found: {known})"
            )
    log_model_warnings(settings, bots)  # models with an announced shutdown, and its date


def require_signing_secret(settings: Settings) -> None:
    """Refuse to run with signature checking on and nothing to check signatures with.

    Args:
        settings: The runner's settings.

    Raises:
        SettingsError: ``TWILIO_VALIDATE_SIGNATURES`` is on and ``TWILIO_AUTH_TOKEN``
            is missing or empty.
    """
    token = settings.twilio_auth_token
    if settings.twilio_validate_signatures and (token is None or not token.get_secret_value()):
        raise SettingsError(
            "TWILIO_AUTH_TOKEN is not set: Twilio's request signatures cannot be checked "
            "(set it, or TWILIO_VALIDATE_SIGNATURES=false for local development only)"
        )


def require_rest_credentials(settings: Settings, bots: dict[str, Bot]) -> None:
    """Refuse to run a bot whose tools dial through Twilio's REST API without its credentials.

    Args:
        settings: The runner's settings.
        bots: The bots by name.

    Raises:
        SettingsError: A bot lists such a tool (``warm_transfer``) and
            ``TWILIO_ACCOUNT_SID`` or ``TWILIO_AUTH_TOKEN`` is missing.
    """
    token = settings.twilio_auth_token
    missing = [
        name
        for name, value in (
            ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
            ("TWILIO_AUTH_TOKEN", token.get_secret_value() if token is not None else None),
        )
        if not value
    ]
    if not missing:
        return
    for bot in sorted(bots.values(), key=lambda b: b.name):
        if bot.rest_tools:
            raise SettingsError(
                f"{missing[0]} is not set: bot '{bot.name}' uses {bot.rest_tools[0]}, which "
                "dials through Twilio's REST API"
            )
