"""The database: its engine (SQLite with WAL by default, PostgreSQL when gateways share one)
and its schema, brought to the newest Alembic revision at start by ``upgrade``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateColumn

from gateway.migrations import SCRIPT_LOCATION, target_metadata

BASE_REVISION = "0001"
"""The first revision: the schema every database had before migrations existed."""

MIGRATION_LOCK = 0x74756E656C6F6F70  # "tuneloop": the PostgreSQL advisory lock's key
MIGRATION_LOCK_TIMEOUT_S = 120  # PostgreSQL; SQLite waits its busy timeout (30 s)


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and enforced foreign keys,
    PostgreSQL sessions the UTC time zone (``postgresql+psycopg://user:password@host/db``)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if make_url(url).get_backend_name() == "postgresql":
        # Aware datetimes come back in UTC, as they were written, whatever the server's TimeZone.
        return create_engine(url, pool_pre_ping=True, connect_args={"options": "-c TimeZone=UTC"})
    return create_engine(url, pool_pre_ping=True)


class SchemaTooOld(RuntimeError):
    """The database lacks a column that cannot be added in place."""


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer tuneloop, to a revision this one does not know."""


def add_missing_columns(bind: Engine | Connection, metadata: MetaData) -> list[str]:
    """Bring existing tables up to ``metadata`` by adding the nullable columns they lack.

    The stopgap from before migrations, kept for one job: bringing a database made by an
    earlier tuneloop up to ``BASE_REVISION`` before ``upgrade`` stamps it. New tables are left
    to ``create_all``. Only additive, nullable changes are made here; any other difference is
    refused with ``SchemaTooOld`` rather than guessed at. Returns the ``table.column`` names
    added. Given a connection, it works inside that connection's transaction.
    """
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            return add_missing_columns(connection, metadata)
    existing = inspect(bind)
    tables = set(existing.get_table_names())
    added = []
    for table in metadata.sorted_tables:
        if table.name not in tables:
            continue
        present = {column["name"] for column in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise SchemaTooOld(
                    f"table {table.name} lacks required column {column.name}: "
                    "this database needs a migration"
                )
            ddl = CreateColumn(column).compile(dialect=bind.dialect)
            bind.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            added.append(f"{table.name}.{column.name}")
    return added


@dataclass(frozen=True, slots=True)
class SchemaUpgrade:
    """What ``upgrade`` did: the revision before (``None``: none recorded) and after."""

    before: str | None
    after: str | None
    stamped: bool = False  # a database from before migrations, stamped with BASE_REVISION
    added_columns: list[str] = field(default_factory=list)  # by the legacy path, if stamped

    @property
    def changed(self) -> bool:
        return self.stamped or self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config, built in code (no alembic.ini): our ``env.py`` runs on ``connection``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> SchemaUpgrade:
    """Bring the database to the newest revision (``alembic upgrade head``), in one transaction.

    One process migrates at a time: on PostgreSQL the transaction first takes an advisory
    lock (``pg_advisory_xact_lock``), on SQLite the database's write lock (``BEGIN
    IMMEDIATE``); a second gateway starting at once waits, then finds nothing left to do. A
    wait longer than ``MIGRATION_LOCK_TIMEOUT_S`` (SQLite: its busy timeout) fails the start.

    A database made before migrations existed (our tables, no ``alembic_version``) is first
    brought up to ``BASE_REVISION`` (missing tables created, missing nullable columns added)
    and stamped with it; later revisions then run as on any other database.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":  # every wait for a lock has a deadline
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT_S}s'")
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config = alembic_config(connection)
        script = ScriptDirectory.from_config(config)
        before = MigrationContext.configure(connection).get_current_revision()
        if before is not None and before not in {rev.revision for rev in script.walk_revisions()}:
            raise SchemaTooNew(
                f"the database's schema is at revision {before}, which this tuneloop does not "
                f"know (its newest is {script.get_current_head()}): run a newer tuneloop"
            )
        stamped, added = False, []
        if before is None and _has_our_tables(connection):
            baseline = script.get_revision(BASE_REVISION).module
            schema = baseline.schema()
            added = add_missing_columns(connection, schema)
            schema.create_all(connection)  # tables added after that database was made
            command.stamp(config, BASE_REVISION)
            stamped = True
        command.upgrade(config, "head")
        after = MigrationContext.configure(connection).get_current_revision()
        connection.commit()
    return SchemaUpgrade(before, after, stamped, added)


def _has_our_tables(connection: Connection) -> bool:
    present = set(inspect(connection).get_table_names())
    return bool(present & set(target_metadata().tables))
