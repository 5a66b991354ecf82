"""The registry database engine: SQLite with WAL by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, inspect
from sqlalchemy.schema import CreateColumn


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and enforced foreign keys."""
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
    return create_engine(url, pool_pre_ping=True)


class SchemaTooOld(RuntimeError):
    """The database lacks a column that cannot be added in place."""


def add_missing_columns(engine: Engine, metadata: MetaData) -> list[str]:
    """Bring existing tables up to ``metadata`` by adding the nullable columns they lack.

    New tables are left to ``create_all``. Only additive, nullable changes are made here; any
    other difference is refused with ``SchemaTooOld`` rather than guessed at. Returns the
    ``table.column`` names added.
    """
    existing = inspect(engine)
    tables = set(existing.get_table_names())
    added = []
    with engine.begin() as connection:
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
                ddl = CreateColumn(column).compile(dialect=engine.dialect)
                connection.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
                added.append(f"{table.name}.{column.name}")
    return added
