#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Alembic's environment for the call records' schema: the connection it is given.

:func:`~pipecat_realtime_twilio.runner.migrations.upgrade` runs Alembic's commands with
the store's connection in ``config.attributes["connection"]``, inside a transaction
(and a lock) of its own; the migrations run in that transaction. There is no offline
(``--sql``) mode and no URL of its own.
"""

from alembic import context

from pipecat_realtime_twilio.runner import campaign_tables  # noqa: F401 (its tables on metadata)
from pipecat_realtime_twilio.runner.migrations import VERSION_TABLE
from pipecat_realtime_twilio.runner.queries import metadata


def run_migrations() -> None:
    """Run the migrations on the connection the caller gave."""
    connection = context.config.attributes.get("connection")
    if connection is None or context.is_offline_mode():
        raise RuntimeError(
            "the call records' migrations run on a connection: "
            "use pipecat_realtime_twilio.runner.migrations.upgrade(engine)"
        )
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
