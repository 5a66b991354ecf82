"""The schema through Alembic, on SQLite and PostgreSQL: the revisions build exactly the tables
the code declares, one process migrates at a time, and databases made by an older tuneloop
(before migrations) are brought up to date and stamped."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    func,
    inspect,
    select,
)

from adapters.jobs import JobStore
from adapters.registry import Registry
from adapters.store import Base as AdapterTables
from eval.tables import Base as EvalTables
from gateway.db import (
    BASE_REVISION,
    MIGRATION_LOCK,
    SchemaTooNew,
    SchemaTooOld,
    add_missing_columns,
    alembic_config,
    create_db_engine,
    upgrade,
)
from gateway.keys.tables import Base as KeyTables
from gateway.migrations import include_name, target_metadata
from gateway.presence import ProcessTable
from retrieval.store import Base as RetrievalTables

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


def timestamp(engine: Engine) -> str:
    """The column type ``DateTime(timezone=True)`` had in this database's tables."""
    return str(DateTime(timezone=True).compile(dialect=engine.dialect))


def differences(engine: Engine) -> list[object]:
    """What Alembic's autogenerate would change to reach the code's tables (nothing, we want)."""
    with engine.connect() as connection:
        ours = target_metadata()
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_name": include_name(ours)},
        )
        return compare_metadata(context, ours)


def revisions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [
            row[0] for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")
        ]


def test_the_migrations_build_exactly_the_declared_tables(engine: Engine) -> None:
    done = upgrade(engine)
    assert (done.before, done.after, done.stamped, done.changed) == (None, HEAD, False, True)
    assert differences(engine) == []
    assert set(target_metadata().tables) <= set(inspect(engine).get_table_names())
    again = upgrade(engine)
    assert (again.before, again.after, again.changed) == (HEAD, HEAD, False), "idempotent"
    assert revisions(engine) == [HEAD]


def test_a_database_from_before_migrations_is_stamped_and_upgraded(engine: Engine) -> None:
    # As an older tuneloop left it: its libraries' create_all, an aliases table from before
    # response_format and retrieval, no retrain_jobs table yet, and no alembic_version.
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE aliases (name VARCHAR(64) NOT NULL PRIMARY KEY, targets JSON NOT NULL, "
            f"previous_targets JSON, updated_at {timestamp(engine)} NOT NULL)"
        )
        connection.exec_driver_sql(
            "INSERT INTO aliases VALUES "
            """('extract', '{"extract@v1": 100}', NULL, '2026-01-01 00:00:00+00')"""
        )
    old = [t for t in AdapterTables.metadata.sorted_tables if t.name != "retrain_jobs"]
    AdapterTables.metadata.create_all(engine, tables=old)
    for base in (RetrievalTables, EvalTables, KeyTables):
        base.metadata.create_all(engine)
    assert "alembic_version" not in inspect(engine).get_table_names()

    done = upgrade(engine)
    assert (done.before, done.after, done.stamped) == (None, HEAD, True)
    assert done.added_columns == ["aliases.response_format", "aliases.retrieval"]
    assert differences(engine) == [], "the same schema as a database migrated from empty"
    assert revisions(engine) == [HEAD]
    assert Registry(engine).aliases()[0].targets == {"extract@v1": 100}, "rows are kept"
    again = upgrade(engine)
    assert (again.stamped, again.changed) == (False, False), "stamped once"


def test_a_database_at_the_first_revision_gains_processes_and_job_owners(engine: Engine) -> None:
    """0001 -> 0002: the table of live gateway processes and ``retrain_jobs.owner`` appear,
    the jobs already there are kept (with no owner); and 0002 goes back down cleanly."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), BASE_REVISION)
        connection.exec_driver_sql(
            "INSERT INTO retrain_jobs (alias, active_alias, state, trigger, detail, created_at, "
            "updated_at) VALUES ('extract', 'extract', 'running', 'drift', '{}', "
            "'2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00')"
        )
    assert "gateway_processes" not in inspect(engine).get_table_names()

    done = upgrade(engine)
    assert (done.before, done.after, done.stamped) == (BASE_REVISION, HEAD, False)
    assert differences(engine) == []
    assert "gateway_processes" in inspect(engine).get_table_names()
    [job] = JobStore(engine).jobs()
    assert (job.alias, job.state, job.owner) == ("extract", "running", None), "rows are kept"
    assert JobStore(engine).fail_interrupted(reason="r", live_owners={"p"}) == [job.id]

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), BASE_REVISION)
    assert "gateway_processes" not in inspect(engine).get_table_names()
    assert "owner" not in {c["name"] for c in inspect(engine).get_columns("retrain_jobs")}
    assert revisions(engine) == [BASE_REVISION]
    assert upgrade(engine).after == HEAD and differences(engine) == []


def test_a_database_made_by_the_stores_themselves_is_stamped_and_upgraded(
    engine: Engine,
) -> None:
    """The libraries' ``create_all`` (a job store opened before any gateway ran on the file)
    already made the tables and columns of later revisions: those revisions keep them."""
    JobStore(engine).create("extract", trigger="drift", owner="p")
    ProcessTable(engine).join("p", 1, "h")
    assert "alembic_version" not in inspect(engine).get_table_names()

    done = upgrade(engine)
    assert (done.before, done.after, done.stamped) == (None, HEAD, True)
    assert differences(engine) == [] and revisions(engine) == [HEAD]
    assert JobStore(engine).jobs()[0].owner == "p", "rows are kept"
    assert [p.id for p in ProcessTable(engine).live(max_age=60)] == ["p"]


def test_a_fresh_database_is_not_mistaken_for_an_old_one(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)")
    done = upgrade(engine)
    assert (done.stamped, done.after) == (False, HEAD) and differences(engine) == []


def test_one_process_migrates_at_a_time(database_url: str, engine: Engine) -> None:
    """While another holds the migration lock, ``upgrade`` waits; then it does the work once."""
    with engine.connect():
        pass  # the SQLite file exists, in WAL mode, before another connection locks it
    release = _hold_migration_lock(database_url, engine)
    results: list[object] = []
    waiting = threading.Thread(target=lambda: results.append(upgrade(engine)))
    waiting.start()
    time.sleep(1.0)
    assert waiting.is_alive() and not results, "upgrade did not wait for the lock"
    assert "alembic_version" not in inspect(engine).get_table_names()
    release()
    waiting.join(timeout=60)
    assert results and results[0].after == HEAD

    # Two gateways starting at once on one database: both succeed, the work is done once.
    engines = [create_db_engine(database_url) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=10)
    outcomes: list[object] = []

    def start(index: int) -> None:
        barrier.wait()
        try:
            outcomes.append(upgrade(engines[index]))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcomes.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for other in engines:
        other.dispose()
    assert all(getattr(o, "after", None) == HEAD for o in outcomes), outcomes
    assert revisions(engine) == [HEAD]


def _hold_migration_lock(database_url: str, engine: Engine) -> Callable[[], None]:
    """Take the lock ``upgrade`` takes, from another connection; returns its release."""
    if engine.dialect.name == "sqlite":
        other = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")

        def release() -> None:
            other.execute("COMMIT")
            other.close()

        return release
    connection = engine.connect()
    connection.execute(select(func.pg_advisory_lock(MIGRATION_LOCK)))

    def release_pg() -> None:
        connection.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK)))
        connection.close()

    return release_pg


def test_a_database_migrated_by_a_newer_tuneloop_is_refused(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'from_the_future'")
    with pytest.raises(SchemaTooNew, match="revision from_the_future"):
        upgrade(engine)
    assert revisions(engine) == ["from_the_future"], "nothing was changed"


def test_the_first_revision_is_the_base() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_base() == BASE_REVISION


# --- the additive check, kept for stamping older databases ------------------------------------
def test_an_older_aliases_table_gains_its_new_columns(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE aliases (name VARCHAR(64) PRIMARY KEY, targets JSON NOT NULL, "
            f"previous_targets JSON, updated_at {timestamp(engine)})"
        )
        connection.exec_driver_sql(
            "INSERT INTO aliases VALUES "
            """('extract', '{"extract@v1": 100}', NULL, '2026-01-01 00:00:00+00')"""
        )
    added = add_missing_columns(engine, AdapterTables.metadata)
    assert added == ["aliases.response_format", "aliases.retrieval"]
    assert {"response_format", "retrieval"} <= {
        c["name"] for c in inspect(engine).get_columns("aliases")
    }
    assert Registry(engine).aliases()[0].targets == {"extract@v1": 100}, "rows are kept"
    assert add_missing_columns(engine, AdapterTables.metadata) == [], "idempotent"


def test_a_missing_required_column_is_refused(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE things (id INTEGER PRIMARY KEY)")
    wanted = MetaData()
    Table("things", wanted, Column("id", Integer, primary_key=True),
          Column("name", String(10), nullable=False))  # fmt: skip
    with pytest.raises(SchemaTooOld, match="things lacks required column name"):
        add_missing_columns(engine, wanted)
