#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The package's errors; configuration errors name the setting or file."""


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it."""


class BotError(Exception):
    """A bot file cannot be loaded or built; the message names the file."""


class CallControlError(Exception):
    """A call could not be ended or transferred as asked."""
