"""Alembic's entry point, run by ``gateway.db.upgrade`` (or the ``alembic`` command).

``gateway.db.upgrade`` passes an open connection in ``config.attributes["connection"]``,
already inside the transaction that holds the migration lock, and every revision runs in
that one transaction. Run by hand, ``sqlalchemy.url`` in the config names the database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from gateway.db import create_db_engine
from gateway.migrations import include_name, target_metadata

config = context.config


def _run(connection: Connection) -> None:
    metadata = target_metadata()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_name=include_name(metadata),  # never another program's tables
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE is limited
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_db_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("tuneloop's migrations run online only (they take a lock in the database)")
run_migrations_online()
