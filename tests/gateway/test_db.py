"""Databases made by an older tuneloop keep working: missing nullable columns are added."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect

from adapters.registry import Registry
from adapters.store import Base as AdapterTables
from gateway.db import SchemaTooOld, add_missing_columns, create_db_engine


def test_an_older_aliases_table_gains_its_new_columns(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE aliases (name VARCHAR(64) PRIMARY KEY, targets JSON NOT NULL, "
            "previous_targets JSON, updated_at DATETIME)"
        )
        connection.exec_driver_sql(
            "INSERT INTO aliases VALUES "
            """('extract', '{"extract@v1": 100}', NULL, '2026-01-01 00:00:00')"""
        )
    added = add_missing_columns(engine, AdapterTables.metadata)
    assert added == ["aliases.response_format", "aliases.retrieval"]
    assert {"response_format", "retrieval"} <= {
        c["name"] for c in inspect(engine).get_columns("aliases")
    }
    assert Registry(engine).aliases()[0].targets == {"extract@v1": 100}, "rows are kept"
    assert add_missing_columns(engine, AdapterTables.metadata) == [], "idempotent"


def test_a_missing_required_column_is_refused(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE things (id INTEGER PRIMARY KEY)")
    wanted = MetaData()
    Table("things", wanted, Column("id", Integer, primary_key=True),
          Column("name", String(10), nullable=False))  # fmt: skip
    with pytest.raises(SchemaTooOld, match="things lacks required column name"):
        add_missing_columns(engine, wanted)
