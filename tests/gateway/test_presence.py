"""The table of live gateway processes on a real SQLite file and a real PostgreSQL database:
joining, beating, leaving, expiry, pruning, a row put back after it was removed, and the
heartbeat of two ``Presence`` objects (two processes, as far as the database can tell) that see
each other and agree on the leader."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update

from gateway import presence as presence_module
from gateway.db import create_db_engine, upgrade
from gateway.presence import Presence, ProcessTable
from gateway.presence_tables import ProcessRow, utcnow


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    upgrade(engine)  # the table as the migrations make it
    yield engine
    engine.dispose()


@pytest.fixture
def table(engine: Engine) -> ProcessTable:
    return ProcessTable(engine)


def age(engine: Engine, process_id: str, seconds: float) -> None:
    """Make a process's last heartbeat ``seconds`` old (as if it had stopped beating then)."""
    with engine.begin() as connection:
        connection.execute(
            update(ProcessRow)
            .where(ProcessRow.id == process_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- the table -------------------------------------------------------------------------------
def test_join_beat_live_and_leave(table: ProcessTable, database_url: str) -> None:
    first = table.join("a" * 32, 101, "host-1")
    table.join("b" * 32, 102, "host-2")
    assert (first.pid, first.host, first.applied_event_id, first.in_flight) == (
        101, "host-1", None, {},
    )  # fmt: skip
    assert first.started_at.tzinfo is not None and first.heartbeat_at == first.started_at

    assert table.beat("a" * 32, applied_event_id=7, in_flight={"extract@v1": 2}) is False
    live = table.live(max_age=60)
    assert [p.id for p in live] == ["a" * 32, "b" * 32], "oldest start first"
    assert (live[0].applied_event_id, live[0].in_flight) == (7, {"extract@v1": 2})
    assert live[0].heartbeat_at > live[0].started_at == first.started_at
    assert live[0].started_at.tzinfo is not None, "UTC, also from SQLite"

    again = ProcessTable(create_db_engine(database_url)).live(max_age=60)  # another process
    assert again == live

    table.leave("a" * 32)
    assert [p.id for p in table.live(max_age=60)] == ["b" * 32]


def test_a_process_that_stops_beating_is_no_longer_live_and_is_pruned(
    table: ProcessTable, engine: Engine
) -> None:
    table.join("quiet", 1, "h")
    time.sleep(0.3)
    table.join("busy", 2, "h")
    assert [p.id for p in table.live(max_age=0.2)] == ["busy"], "quiet's heartbeat is 0.3 s old"
    table.beat("quiet", applied_event_id=None, in_flight={})
    assert [p.id for p in table.live(max_age=0.2)] == ["quiet", "busy"], "live again"

    age(engine, "quiet", 600)
    assert table.prune(older_than=3600) == 0, "dead, but not for long enough"
    assert table.prune(older_than=300) == 1
    assert [p.id for p in table.live(max_age=3600)] == ["busy"], "the row is gone"
    assert table.prune(older_than=300) == 0


def test_ties_on_the_start_are_broken_by_id(table: ProcessTable, engine: Engine) -> None:
    for process_id in ("c", "a", "b"):
        table.join(process_id, 1, "h")
    with engine.begin() as connection:
        connection.execute(update(ProcessRow).values(started_at=utcnow()))
    assert [p.id for p in table.live(max_age=60)] == ["a", "b", "c"]


def test_a_beat_after_the_row_was_removed_puts_it_back(
    table: ProcessTable, database_url: str
) -> None:
    joined = table.join("me", 42, "host-1")
    other = ProcessTable(create_db_engine(database_url))
    other.leave("me")  # another process's cleanup, say
    assert other.live(max_age=60) == []

    assert table.beat("me", applied_event_id=3, in_flight={"x@v1": 1}) is True
    [back] = other.live(max_age=60)
    assert (back.id, back.pid, back.host, back.applied_event_id, back.in_flight) == (
        "me", 42, "host-1", 3, {"x@v1": 1},
    )  # fmt: skip
    assert back.started_at == joined.started_at, "it keeps its start (and so its seniority)"
    assert table.beat("me", applied_event_id=3, in_flight={}) is False

    with pytest.raises(LookupError, match="has not joined"):
        other.beat("me-too", applied_event_id=None, in_flight={})
    table.leave("me")
    with pytest.raises(LookupError):  # after leaving, a late beat writes nothing
        table.beat("me", applied_event_id=None, in_flight={})
    assert table.live(max_age=60) == []


# --- the heartbeat ---------------------------------------------------------------------------
def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_a_drain_waits_on_processes_that_are_slow_to_beat_not_only_on_live_ones(
    engine: Engine, table: ProcessTable
) -> None:
    """What the gateway's drains ask before unloading a retired version: every other process
    that has not applied the retiring event, or still streams on the version, holds it up;
    one whose heartbeat is past the liveness window but not long silent still counts (a
    starved process may still be streaming), one silent for longer does not."""

    async def scenario() -> None:
        me = Presence(table, interval=1.0)
        await me.start()
        try:
            table.join("behind", 1, "h")  # has not applied event 5 yet
            table.beat("behind", applied_event_id=4, in_flight={})
            table.join("streaming", 2, "h")  # applied it, still has a request on the version
            table.beat("streaming", applied_event_id=5, in_flight={"x@v1": 1, "x@v2": 3})
            table.join("done", 3, "h")  # applied it, nothing on the version
            table.beat("done", applied_event_id=6, in_flight={"x@v2": 1})
            assert sorted(await me.holding_up("x@v1", since=5)) == ["behind", "streaming"]

            age(engine, "streaming", 2 * me.max_age)  # slow: no longer live, not yet gone
            assert "streaming" not in {p.id for p in await me.live()}
            assert sorted(await me.holding_up("x@v1", since=5)) == ["behind", "streaming"]
            age(engine, "streaming", (presence_module.GONE_AFTER_WINDOWS + 1) * me.max_age)
            age(engine, "behind", (presence_module.GONE_AFTER_WINDOWS + 1) * me.max_age)
            assert await me.holding_up("x@v1", since=5) == [], "silent that long: gone"

            table.beat("behind", applied_event_id=5, in_flight={})  # back, and caught up
            assert await me.holding_up("x@v1", since=5) == []
            assert await me.holding_up("x@v1", since=6) == ["behind"]
        finally:
            await me.close()

    run(scenario)


def test_two_processes_see_each_other_and_agree_on_the_leader(database_url: str) -> None:
    engines = [create_db_engine(database_url) for _ in range(2)]
    upgrade(engines[0])

    async def scenario() -> None:
        first = Presence(ProcessTable(engines[0]), interval=0.05)
        second = Presence(ProcessTable(engines[1]), interval=0.05)
        assert first.process_id != second.process_id and len(first.process_id) == 32
        assert first.max_age == 3.0, "never less than 3 s"
        assert first.live_ids() == {first.process_id} and not first.is_leader(), "not started"
        await first.start()
        assert first.is_leader(), "alone, it leads"
        await second.start()
        both = {first.process_id, second.process_id}
        assert second.live_ids() == both, "it read the table when it joined"
        await eventually(lambda: first.live_ids() == both, "the first to see the second")
        assert first.is_leader() and not second.is_leader(), "the oldest leads"
        assert [p.id for p in await second.live()] == [first.process_id, second.process_id]

        await first.close()  # the leader leaves
        await eventually(second.is_leader, "the second to lead")
        assert second.live_ids() == {second.process_id}
        assert [p.id for p in await second.live()] == [second.process_id]
        await second.close()
        assert await second.live() == []

    try:
        run(scenario)
    finally:
        for engine in engines:
            engine.dispose()


def test_a_dead_process_drops_out_and_the_leadership_passes(
    engine: Engine, table: ProcessTable
) -> None:
    async def scenario() -> None:
        table.join("crashed", 1, "elsewhere")  # started first, then died without leaving
        me = Presence(table, interval=0.05)
        await me.start()
        assert me.live_ids() == {"crashed", me.process_id} and not me.is_leader()
        age(engine, "crashed", 60)
        await eventually(me.is_leader, "the crashed process to drop out")
        assert me.live_ids() == {me.process_id}
        await me.close()

    run(scenario)


def test_beats_report_the_snapshot_and_survive_failures(
    engine: Engine, table: ProcessTable, caplog: pytest.LogCaptureFixture
) -> None:
    reading = ProcessTable(engine)

    def mine(presence: Presence) -> dict:
        [row] = [p for p in reading.live(max_age=60) if p.id == presence.process_id]
        return {"applied": row.applied_event_id, "in_flight": row.in_flight, "at": row.heartbeat_at}

    async def scenario() -> None:
        presence = Presence(table, interval=0.05, snapshot=lambda: (5, {"extract@v1": 1}))
        await presence.start()
        assert mine(presence)["applied"] == 5, "the first beat, at start, reports it"
        presence.snapshot = lambda: (6, {"extract@v1": 0, "extract@v2": 3})  # set later
        await eventually(lambda: mine(presence)["applied"] == 6, "the new snapshot")
        assert mine(presence)["in_flight"] == {"extract@v1": 0, "extract@v2": 3}

        def broken() -> tuple[int | None, dict[str, int]]:
            raise RuntimeError("routing table gone")

        presence.snapshot = broken  # a bug there must not stop the heartbeat
        before = mine(presence)["at"]
        await eventually(lambda: mine(presence)["at"] > before, "a beat despite the snapshot")
        assert mine(presence)["applied"] == 6, "the last good snapshot is reported"
        assert "event=presence_snapshot_failed" in caplog.text

        presence.snapshot = None
        ProcessRow.__table__.drop(engine)  # the database "loses" the table: beats fail ...
        await eventually(lambda: "event=presence_beat_failed" in caplog.text, "a failed beat")
        ProcessRow.__table__.create(engine)  # ... and when it is back, the row is put back
        await eventually(lambda: "event=presence_rejoined" in caplog.text, "the row put back")
        assert presence.process_id in {p.id for p in reading.live(max_age=60)}
        await presence.close()
        assert reading.live(max_age=60) == []

    with caplog.at_level(logging.INFO, logger="tuneloop.presence"):
        run(scenario)


def test_the_leader_prunes_long_dead_rows(
    engine: Engine, table: ProcessTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "PRUNE_EVERY_S", 0.0)
    table.join("long-gone", 1, "h")
    age(engine, "long-gone", presence_module.PRUNE_AFTER_S + 60)
    table.join("recently-gone", 2, "h")
    age(engine, "recently-gone", 60)

    async def scenario() -> None:
        leader = Presence(table, interval=0.05)
        await leader.start()
        left = ["recently-gone", leader.process_id]
        await eventually(
            lambda: [p.id for p in table.live(max_age=10**6)] == left, "the long-dead row pruned"
        )
        await leader.close()

    run(scenario)
