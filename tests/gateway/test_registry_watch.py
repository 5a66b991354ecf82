"""The registry watcher on a real SQLite file and a real PostgreSQL database: a change
committed elsewhere is yielded within a second (NOTIFY on PostgreSQL, with polling set far too
slow to explain it; ``PRAGMA data_version`` on SQLite), nothing without a change or for a
rolled-back transaction, and it outlives its LISTEN connection being killed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from adapters.registry import REGISTRY_CHANNEL, Registry
from gateway import registry_watch
from gateway.adapter_service import AdapterService
from gateway.db import create_db_engine
from gateway.registry_watch import APPLICATION_NAME, RegistryWatcher
from tests.postgres import PostgresServer

FAST = 1.0  # seconds: what "within a second" allows
NEVER = 60.0  # an interval or periodic check far longer than any test


class CountingRegistry(Registry):
    """The watcher's registry, counting its completed reads of ``last_event_id``."""

    reads = 0

    def last_event_id(self) -> int:
        latest = super().last_event_id()
        self.reads += 1  # after the read: a commit made once this is seen is not in it
        return latest


@dataclass
class Watching:
    registry: CountingRegistry
    seen: asyncio.Queue[tuple[int, float]] = field(default_factory=asyncio.Queue)

    async def started(self) -> None:
        """Wait for the watcher's first read (the id it starts from, never yielded)."""
        deadline = time.monotonic() + 10
        while self.registry.reads < 1:
            assert time.monotonic() < deadline, "the watcher never read the first id"
            await asyncio.sleep(0.01)

    async def next(self, timeout: float) -> tuple[int, float]:
        return await asyncio.wait_for(self.seen.get(), timeout)


@asynccontextmanager
async def watching(engine: Engine, *, interval: float) -> AsyncIterator[Watching]:
    registry = CountingRegistry(engine)
    watcher = RegistryWatcher(engine, registry, interval=interval, check_every=NEVER)
    state = Watching(registry)

    async def consume() -> None:
        async for latest in watcher.changes():
            state.seen.put_nowait((latest, time.monotonic()))

    task = asyncio.create_task(consume())
    try:
        await state.started()
        yield state
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await watcher.close()


def interval_for(url: str) -> float:
    """PostgreSQL: polling far too slow to explain a prompt yield; SQLite: data_version's."""
    return NEVER if url.startswith("postgresql") else 0.1


async def commit(registry: Registry, subject: str) -> float:
    """Record an event through ``registry`` (in a thread); when its commit returned."""
    await asyncio.to_thread(registry.record, "test_change", subject)
    return time.monotonic()


@pytest.fixture
def engines(database_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database: the watcher's and another process's."""
    pair = create_db_engine(database_url), create_db_engine(database_url)
    yield pair
    for engine in pair:
        engine.dispose()


def test_a_change_from_another_engine_is_yielded_within_a_second(
    database_url: str, engines: tuple[Engine, Engine]
) -> None:
    mine, theirs = engines
    writer = Registry(theirs)

    async def scenario() -> list[float]:
        async with watching(mine, interval=interval_for(database_url)) as state:
            await asyncio.sleep(0.5)
            assert state.seen.empty(), "nothing changed, nothing yielded"
            latencies = []
            for subject in ("first", "second"):
                committed = await commit(writer, subject)
                latest, at = await state.next(timeout=FAST)
                assert latest == writer.last_event_id()
                latencies.append(at - committed)
            if database_url.startswith("postgresql"):
                assert state.registry.reads == 3, "one read to start, then one per NOTIFY"
            return latencies

    latencies = asyncio.run(scenario())
    print(f"registry_watch_latency_s {database_url.split(':')[0]}: {max(latencies):.4f}")
    assert max(latencies) < FAST


def test_writes_through_the_same_engine_are_seen(
    database_url: str, engines: tuple[Engine, Engine]
) -> None:
    """SQLite's data_version ignores its own connection's commits: the watcher's is separate."""
    mine, _ = engines

    async def scenario() -> None:
        async with watching(mine, interval=interval_for(database_url)) as state:
            await commit(Registry(mine), "same-engine")
            latest, _at = await state.next(timeout=FAST)
            assert latest == state.registry.last_event_id()

    asyncio.run(scenario())


def test_a_rolled_back_transaction_yields_nothing(
    database_url: str, engines: tuple[Engine, Engine]
) -> None:
    mine, theirs = engines
    writer = Registry(theirs)

    async def scenario() -> None:
        async with watching(mine, interval=interval_for(database_url)) as state:

            def write_then_roll_back() -> None:
                with Session(theirs) as session:
                    Registry._event(session, "test_change", "rolled-back")  # notifies on PG
                    session.flush()
                    session.rollback()

            await asyncio.to_thread(write_then_roll_back)
            await asyncio.sleep(FAST)
            assert state.seen.empty()
            if database_url.startswith("postgresql"):
                assert state.registry.reads == 1, "no notification arrived"
            await commit(writer, "committed")  # still watching
            latest, _at = await state.next(timeout=FAST)
            assert latest == writer.last_event_id()

    asyncio.run(scenario())


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


def listeners(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            ).scalars()
        )


def test_postgres_notifies_the_event_id_on_commit_only(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    registry = Registry(engine)
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {REGISTRY_CHANNEL}")
        with Session(engine) as session:
            Registry._event(session, "test_change", "rolled-back")
            session.rollback()
        assert list(listener.notifies(timeout=0.3)) == []
        registry.record("test_change", "committed")
        got = list(listener.notifies(timeout=2, stop_after=1))
        assert [(n.channel, n.payload) for n in got] == [
            (REGISTRY_CHANNEL, str(registry.last_event_id()))
        ]
    engine.dispose()


def test_the_watcher_outlives_its_listen_connection(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    mine, theirs = create_db_engine(postgres_url), create_db_engine(postgres_url)
    writer = Registry(theirs)

    async def scenario() -> None:
        async with watching(mine, interval=NEVER) as state:
            [first] = await asyncio.to_thread(listeners, theirs)
            with theirs.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            await commit(writer, "while-reconnecting")  # not notified to anyone: found by a check
            latest, _at = await state.next(timeout=3 * FAST)
            assert latest == writer.last_event_id()

            deadline = time.monotonic() + 5
            while (found := await asyncio.to_thread(listeners, theirs)) in ([], [first]):
                assert time.monotonic() < deadline, "the watcher did not listen again"
                await asyncio.sleep(0.05)
            assert len(found) == 1
            committed = await commit(writer, "after-reconnect")
            latest, at = await state.next(timeout=FAST)
            assert latest == writer.last_event_id() and at - committed < FAST

    with caplog.at_level(logging.INFO, logger="tuneloop.registry"):
        asyncio.run(scenario())
    lost = [r for r in caplog.records if "event=registry_listen_lost" in r.getMessage()]
    restored = [r for r in caplog.records if "event=registry_listen_restored" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert len(restored) == 1
    for engine in (mine, theirs):
        engine.dispose()


def test_while_listen_cannot_reconnect_it_polls(
    postgres_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LISTEN connection is lost and every reconnect fails: one warning, then polling."""
    mine, theirs = create_db_engine(postgres_url), create_db_engine(postgres_url)
    writer = Registry(theirs)

    async def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise psycopg.OperationalError("connection refused (test)")

    async def scenario() -> None:
        async with watching(mine, interval=0.2) as state:
            monkeypatch.setattr(registry_watch.psycopg.AsyncConnection, "connect", refuse)
            [pid] = await asyncio.to_thread(listeners, theirs)
            with theirs.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await asyncio.sleep(1.5)  # a first reconnect has failed
            committed = await commit(writer, "while-polling")
            latest, at = await state.next(timeout=FAST)
            assert latest == writer.last_event_id() and at - committed < FAST

    with caplog.at_level(logging.WARNING, logger="tuneloop.registry"):
        asyncio.run(scenario())
    lost = [r for r in caplog.records if "event=registry_listen_lost" in r.getMessage()]
    assert len(lost) == 1, "one warning, however many reconnects fail"
    for engine in (mine, theirs):
        engine.dispose()


def test_the_adapter_service_syncs_per_change_and_survives_a_failed_sync(
    database_url: str, engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AdapterService.watch`` wired to the watcher: one ``sync`` per change, and a failed
    one is logged and the watch goes on (only the registry is needed for this part)."""
    mine, theirs = engines
    writer = Registry(theirs)
    service = AdapterService.__new__(AdapterService)
    service.registry = registry = CountingRegistry(mine)
    synced: list[int] = []

    async def sync() -> None:
        synced.append(registry.last_event_id())
        if len(synced) == 1:
            raise SQLAlchemyError("the first sync fails")

    monkeypatch.setattr(service, "sync", sync)

    async def scenario() -> None:
        service.watch(interval_for(database_url))
        await Watching(registry).started()
        for expected in (1, 2):
            await commit(writer, f"change-{expected}")
            deadline = time.monotonic() + FAST
            while len(synced) < expected:
                assert time.monotonic() < deadline, f"sync {expected} did not happen"
                await asyncio.sleep(0.01)
        assert synced == [1, 2]
        assert service._watcher is not None
        service._watcher.cancel()
        with suppress(asyncio.CancelledError):
            await service._watcher

    asyncio.run(scenario())
