#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The call records' schema, migrated in place by Alembic when a store opens.

:func:`upgrade` is all a user needs (``CallStore`` calls it; no ``alembic.ini``):

- a new database gets every revision, up to the newest (the head);
- a database made before there were migrations (a ``calls`` table, no version
  table) is stamped ``0001`` (that table exactly) and upgraded from there;
- a database at the head is left alone (one read of the version table);
- a database of a newer version of the package (a revision this one does not
  know) raises :class:`SchemaTooNew`, and nothing is changed.

Alembic keeps the revision in its own table, :data:`VERSION_TABLE` (not
``alembic_version``, which an application sharing the database may use). The
upgrade runs in one transaction, so several processes may open a new database at
once: on PostgreSQL the first takes a transaction-level advisory lock and the others
wait for it, then find the head; on SQLite the transaction is ``BEGIN IMMEDIATE``
(the write lock, waited for within the store's busy timeout). Other engines get no
lock.

A new revision (say ``0004``)::

    from alembic import command
    from pipecat_realtime_twilio.runner.migrations import alembic_config

    command.revision(alembic_config(), "what it changes", rev_id="0004")

then write its ``upgrade()`` and ``downgrade()`` with ``alembic.op`` (portable SQL,
batches for data), and change ``queries.calls_table`` to match.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from loguru import logger
from sqlalchemy import Connection, Engine, inspect, text

SCRIPT_LOCATION = Path(__file__).resolve().parent
"""This folder: ``env.py``, ``script.py.mako`` and ``versions/``."""

VERSION_TABLE = "calls_alembic_version"
"""The table Alembic keeps the schema's revision in."""

BASE_REVISION = "0001"
"""The revision of the ``calls`` table as it was before there were migrations."""

_LOCK_KEY = 0x70727463616C6C73  # "prtcalls": PostgreSQL's advisory lock of the upgrade


class SchemaTooNew(Exception):
    """The database's schema is at a revision this version of the package does not know.

    Attributes:
        revisions: The database's revisions.
        head: The newest revision this version knows.
    """

    def __init__(self, revisions: tuple[str, ...], head: str):
        self.revisions = revisions
        self.head = head
        super().__init__(
            f"the schema is at revision {', '.join(revisions)}, which this version of "
            f"pipecat-realtime-twilio does not know (it knows up to {head}): a newer version "
            "upgraded it; run that version, or another database"
        )


def alembic_config(connection: Connection | None = None) -> Config:
    """Return Alembic's configuration of these migrations, without an ``alembic.ini``.

    Args:
        connection: The connection ``env.py`` runs the migrations on.

    Returns:
        The configuration.
    """
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """Return the newest revision of the schema."""
    newest = _scripts().get_current_head()
    if newest is None:  # only if the versions folder were missing
        raise RuntimeError(f"no schema revisions in {SCRIPT_LOCATION / 'versions'}")
    return newest


def revisions(connection: Connection) -> tuple[str, ...]:
    """Return the revisions the database is at; empty for none (no version table).

    Args:
        connection: A connection to the database.
    """
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return tuple(context.get_current_heads())


def upgrade(engine: Engine) -> tuple[str | None, str] | None:
    """Bring the database's schema to the newest revision (see the module docstring).

    Args:
        engine: The store's engine.

    Returns:
        ``(from, to)`` revisions if the schema changed (``from`` None for a new
        database), else None.

    Raises:
        SchemaTooNew: The database is at a revision this version does not know.
        sqlalchemy.exc.SQLAlchemyError: The database failed.
    """
    newest = head()
    with engine.connect() as connection:
        if revisions(connection) == (newest,):
            return None
    with engine.connect() as connection:
        _lock(connection)
        current = revisions(connection)  # again: another process may have upgraded it
        if current == (newest,):
            return None
        known = {script.revision for script in _scripts().walk_revisions()}
        if any(revision not in known for revision in current):
            raise SchemaTooNew(current, newest)
        config = alembic_config(connection)
        start = current[0] if current else None
        if start is None and inspect(connection).has_table("calls"):
            command.stamp(config, BASE_REVISION)
            start = BASE_REVISION
        command.upgrade(config, "head")
        connection.commit()
    if start is not None:
        logger.info(f"Call records: upgraded the database's schema from {start} to {newest}")
    return start, newest


def _lock(connection: Connection) -> None:
    """Begin the upgrade's transaction, holding off other processes until it ends."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    elif dialect == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
