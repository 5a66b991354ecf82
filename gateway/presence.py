"""Which gateway processes are alive: a row per process in the database, kept by a heartbeat.

Several gateway processes share one database (``tuneloop serve --workers N``, or several
gateways on one PostgreSQL). Each joins the ``gateway_processes`` table when it starts, beats
every ``interval`` seconds (writing the newest registry event it has applied and its requests
in flight, when given a ``snapshot``) and leaves when it stops. A process is *live* while its
heartbeat is younger than ``max(3 * interval, 3 s)``; one that died without leaving simply
stops being live, and its row is pruned once it has been dead for ``PRUNE_AFTER_S``.

``ProcessTable`` is the synchronous table (called from worker threads); ``Presence`` is the
async side the app's lifespan owns. The *leader* is the live process that started first (ties
by id): work that exactly one process should do can ask ``presence.is_leader()``.

Times are the processes' own clocks, in UTC: hosts sharing a database must keep their clocks
in step (NTP) to well within the liveness window.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gateway.presence_tables import Base, ProcessRow, utcnow

logger = logging.getLogger("tuneloop.presence")

MIN_MAX_AGE_S = 3.0
"""A heartbeat older than ``max(3 * interval, MIN_MAX_AGE_S)`` seconds is a dead process's."""
GONE_AFTER_WINDOWS = 10
"""A process silent for this many liveness windows (30 s by default) is gone. Until then, work
that would hurt a process that is only slow to beat (a starved CPU, a database busy for a few
seconds) waits on it: unloading a version it may still be streaming on, failing the retrain job
it runs. Leadership uses the short window: a slow leader is better replaced at once."""
PRUNE_AFTER_S = 3600.0
"""Rows of processes dead this long are deleted (by the leader, every ``PRUNE_EVERY_S``)."""
PRUNE_EVERY_S = 60.0

Snapshot = Callable[[], tuple[int | None, dict[str, int]]]
"""What a beat reports: (the newest registry event applied, served_name -> requests in flight)."""


class ProcessRecord(BaseModel):
    """One gateway process as its row says. Times are UTC."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: str
    pid: int
    host: str
    started_at: datetime
    heartbeat_at: datetime
    applied_event_id: int | None
    in_flight: dict[str, int]

    @field_validator("started_at", "heartbeat_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # SQLite hands back naive datetimes; everything written here is UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ProcessTable:
    """The ``gateway_processes`` table over a SQLAlchemy engine; every method is synchronous.

    The table remembers whom it saw join (pid, host, start), so that a beat can put back a row
    another process pruned (its heartbeat had stalled, say, while the database was away).
    """

    def __init__(self, engine: Engine) -> None:
        Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._joined: dict[str, tuple[int, str, datetime]] = {}

    def join(self, process_id: str, pid: int, host: str) -> ProcessRecord:
        """Write the process's row (replacing one with the same id), started and beating now."""
        now = utcnow()
        with self._sessions.begin() as session:
            fresh = ProcessRow(id=process_id, pid=pid, host=host, started_at=now,
                               heartbeat_at=now, applied_event_id=None, in_flight={})  # fmt: skip
            row = session.merge(fresh)
            session.flush()
            record = ProcessRecord.model_validate(row)
        self._joined[process_id] = (pid, host, now)
        return record

    def beat(
        self, process_id: str, *, applied_event_id: int | None, in_flight: dict[str, int]
    ) -> bool:
        """Refresh the heartbeat and what the process reports. A row that is gone (pruned by
        another process) is written again, with its original start: returns True then.
        ``LookupError`` when the row is gone and this table never saw the process join."""
        now = utcnow()
        values = {"heartbeat_at": now, "applied_event_id": applied_event_id,
                  "in_flight": dict(in_flight)}  # fmt: skip
        with self._sessions.begin() as session:
            done = session.execute(
                update(ProcessRow).where(ProcessRow.id == process_id).values(**values)
            )
            if done.rowcount == 1:
                return False
            if process_id not in self._joined:
                raise LookupError(f"gateway process {process_id} has not joined")
            pid, host, started_at = self._joined[process_id]
            session.add(
                ProcessRow(id=process_id, pid=pid, host=host, started_at=started_at, **values)
            )
        return True

    def leave(self, process_id: str) -> None:
        """Delete the process's row (it is stopping); a beat still under way cannot put it back."""
        self._joined.pop(process_id, None)  # first: a beat that finds no row then writes none
        with self._sessions.begin() as session:
            session.execute(delete(ProcessRow).where(ProcessRow.id == process_id))

    def live(self, *, max_age: float) -> list[ProcessRecord]:
        """Processes whose heartbeat is younger than ``max_age`` seconds, oldest start first
        (ties by id): the first is the leader."""
        cutoff = utcnow() - timedelta(seconds=max_age)
        query = (
            select(ProcessRow)
            .where(ProcessRow.heartbeat_at > cutoff)
            .order_by(ProcessRow.started_at, ProcessRow.id)
        )
        with self._sessions() as session:
            return [ProcessRecord.model_validate(row) for row in session.scalars(query)]

    def prune(self, *, older_than: float) -> int:
        """Delete rows whose heartbeat is older than ``older_than`` seconds; how many went."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        with self._sessions.begin() as session:
            done = session.execute(delete(ProcessRow).where(ProcessRow.heartbeat_at < cutoff))
            return int(done.rowcount or 0)


class Presence:
    """This process in the table of live processes, and what it last read of the others.

    ``start`` joins and beats once (a database error there fails the start), then a background
    task beats every ``interval`` seconds and refreshes the cached list of live processes;
    a failed beat is one warning line and is tried again at the next. ``snapshot`` (settable
    after construction) supplies what each beat reports; without it a beat reports nothing.
    """

    def __init__(
        self, table: ProcessTable, *, interval: float, snapshot: Snapshot | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("the heartbeat interval must be positive")
        self.table = table
        self.interval = interval
        self.snapshot = snapshot
        self._id = uuid.uuid4().hex
        self._pid = os.getpid()
        self._host = socket.gethostname()
        self._started_at: datetime | None = None
        self._live: list[ProcessRecord] = []
        self._reported: tuple[int | None, dict[str, int]] = (None, {})  # the last good snapshot
        self._refreshed = float("-inf")  # monotonic time of the last successful beat
        self._pruned = float("-inf")
        self._task: asyncio.Task[None] | None = None

    @property
    def process_id(self) -> str:
        """This process's id in the table (a uuid4 hex, new for every ``Presence``)."""
        return self._id

    @property
    def max_age(self) -> float:
        """Seconds after its last heartbeat that a process stops being live."""
        return max(3 * self.interval, MIN_MAX_AGE_S)

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        joined = await asyncio.to_thread(self.table.join, self._id, self._pid, self._host)
        self._started_at = joined.started_at
        await self._beat()
        logger.info("event=presence_joined process=%s pid=%d host=%s interval=%s live=%d",
                    self._id, self._pid, self._host, self.interval, len(self._live))  # fmt: skip
        self._task = asyncio.create_task(self._beat_forever(), name="tuneloop-presence")

    async def close(self) -> None:
        """Stop beating and delete this process's row (else it expires on its own)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._started_at is None:
            return
        try:
            await asyncio.to_thread(self.table.leave, self._id)
        except SQLAlchemyError as exc:
            logger.warning("event=presence_leave_failed process=%s error=%s",
                           self._id, type(exc).__name__)  # fmt: skip
        else:
            logger.info("event=presence_left process=%s", self._id)
        self._started_at = None

    # --- what this process knows ---------------------------------------------------------------
    def live_ids(self) -> set[str]:
        """Ids of the live processes at the last beat, this one always among them."""
        return {record.id for record in self._live} | {self._id}

    def is_leader(self) -> bool:
        """True when this process is the live process that started first (ties by id), as of
        the last beat. False while this process's own heartbeat is stale (the database is
        unreachable): the others may then have counted it out and chosen another leader."""
        if self._started_at is None or time.monotonic() - self._refreshed > self.max_age:
            return False
        me = (self._started_at, self._id)
        return all(me <= (r.started_at, r.id) for r in self._live if r.id != self._id)

    async def live(self) -> list[ProcessRecord]:
        """The live processes, read now from the database (oldest start first)."""
        return await asyncio.to_thread(self.table.live, max_age=self.max_age)

    async def not_gone(self) -> list[ProcessRecord]:
        """The processes heard from within ``GONE_AFTER_WINDOWS`` liveness windows, read now:
        the live ones and those only slow to beat (oldest start first)."""
        max_age = GONE_AFTER_WINDOWS * self.max_age
        return await asyncio.to_thread(self.table.live, max_age=max_age)

    async def holding_up(self, served_name: str, *, since: int) -> list[str]:
        """Ids of the other processes a drain of ``served_name`` must still wait for, read now:
        those not gone that have not applied registry event ``since`` (they may still route
        new requests to it) or report requests in flight on it."""
        return [
            record.id
            for record in await self.not_gone()
            if record.id != self._id
            and (
                record.applied_event_id is None
                or record.applied_event_id < since
                or record.in_flight.get(served_name, 0) > 0
            )
        ]

    # --- the heartbeat -------------------------------------------------------------------------
    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._beat()
            except (SQLAlchemyError, LookupError) as exc:  # the database may be back next time
                logger.warning("event=presence_beat_failed process=%s error=%s",
                               self._id, type(exc).__name__)  # fmt: skip
            except Exception:  # a bug must not stop the heartbeat: the others would count
                # this process out and fail the retrain jobs it is running
                logger.exception("event=presence_beat_failed process=%s", self._id)

    async def _beat(self) -> None:
        applied, in_flight = self._report()
        prune = self.is_leader() and time.monotonic() - self._pruned >= PRUNE_EVERY_S
        rejoined, live, pruned = await asyncio.to_thread(
            self._beat_sync, applied, dict(in_flight), prune
        )
        self._live, self._refreshed = live, time.monotonic()
        if rejoined:
            logger.warning("event=presence_rejoined process=%s", self._id)
        if prune:
            self._pruned = time.monotonic()
            if pruned:
                logger.info("event=presence_pruned rows=%d", pruned)

    def _report(self) -> tuple[int | None, dict[str, int]]:
        """What this beat reports: the snapshot, or the last good one when it fails (older
        figures mislead a reader less than none: a drain keeps waiting rather than proceed)."""
        if self.snapshot is None:
            return None, {}
        try:
            applied, in_flight = self.snapshot()
        except Exception as exc:  # a bug in the snapshot must not stop the heartbeat
            logger.warning("event=presence_snapshot_failed process=%s error=%r",
                           self._id, exc)  # fmt: skip
            return self._reported
        self._reported = (applied, dict(in_flight))
        return self._reported

    def _beat_sync(
        self, applied: int | None, in_flight: dict[str, int], prune: bool
    ) -> tuple[bool, list[ProcessRecord], int]:
        """One beat in one worker thread: write, prune when asked, read who is live."""
        rejoined = self.table.beat(self._id, applied_event_id=applied, in_flight=in_flight)
        pruned = self.table.prune(older_than=PRUNE_AFTER_S) if prune else 0
        return rejoined, self.table.live(max_age=self.max_age), pruned


__all__ = [
    "GONE_AFTER_WINDOWS",
    "PRUNE_AFTER_S",
    "Presence",
    "ProcessRecord",
    "ProcessTable",
    "Snapshot",
]
