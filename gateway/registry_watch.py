"""Noticing registry changes made by other processes on the same database, within a second.

``RegistryWatcher.changes()`` yields the newest ``adapter_events`` id each time it changed.
What wakes it depends on the database:

- PostgreSQL: a dedicated autocommit connection ``LISTEN``s on ``REGISTRY_CHANNEL`` (the
  registry notifies it in every transaction that records an event, delivered on commit). If
  that connection breaks, the watcher logs one warning, polls every ``interval`` meanwhile and
  reconnects with backoff (capped at ``BACKOFF_CAP_S``).
- SQLite: a dedicated connection reads ``PRAGMA data_version`` every ``interval`` (one page
  read); it changes when any other connection, in this process or another, commits.
- Anything else: ``last_event_id()`` every ``interval``.

Whatever the wake-up, every ``check_every`` seconds it also reads ``last_event_id()``, since a
notification can be missed (while reconnecting, say). A database error is logged and the
watcher keeps going; its generator ends only when closed or cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncGenerator
from typing import Any, Protocol

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from adapters.registry import REGISTRY_CHANNEL, Registry

logger = logging.getLogger("tuneloop.registry")

BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 30.0
CONNECT_TIMEOUT_S = 10.0
APPLICATION_NAME = "tuneloop-registry-watch"  # how the LISTEN connection shows in pg_stat_activity
# The kernel gives up on a silently dead LISTEN connection after about 10 + 3 * 5 seconds.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}  # fmt: skip
DB_ERRORS = (SQLAlchemyError, psycopg.Error, sqlite3.Error, OSError)


class _Wakeup(Protocol):
    """What tells the watcher to look: ``wait`` returns ``True`` when a change may have been
    committed, ``False`` when ``timeout`` passed without a sign of one."""

    mode: str  # for the log: listen, data_version, poll

    async def open(self) -> None: ...

    async def wait(self, timeout: float) -> bool: ...

    async def close(self) -> None: ...


class RegistryWatcher:
    """Yields the registry's newest event id whenever another connection changed it."""

    def __init__(
        self, engine: Engine, registry: Registry, *, interval: float, check_every: float = 10.0
    ) -> None:
        if interval <= 0 or check_every <= 0:
            raise ValueError("interval and check_every must be positive")
        self._engine = engine
        self._registry = registry
        self._interval = interval
        self._check_every = check_every
        self._wakeup: _Wakeup | None = None
        self._closed = False

    async def changes(self) -> AsyncGenerator[int, None]:
        """Read the current newest id (not yielded), then yield each new one as it appears."""
        if self._wakeup is not None:
            raise RuntimeError("this watcher is already watching")
        wakeup = self._wakeup = self._make_wakeup()
        try:
            await wakeup.open()  # listen before reading, so nothing falls in between
            seen = await self._latest()
            while seen is None and not self._closed:
                await asyncio.sleep(self._interval)
                seen = await self._latest()
            due = time.monotonic() + self._check_every
            while not self._closed:
                woken = await wakeup.wait(max(0.0, due - time.monotonic()))
                if self._closed or (not woken and time.monotonic() < due):
                    continue
                due = time.monotonic() + self._check_every
                latest = await self._latest()
                if latest is not None and latest != seen:
                    seen = latest
                    yield latest
        finally:
            await wakeup.close()

    async def close(self) -> None:
        """Close the dedicated connection and end ``changes()`` (which also closes it)."""
        self._closed = True
        if self._wakeup is not None:
            await self._wakeup.close()

    async def _latest(self) -> int | None:
        try:
            return await asyncio.to_thread(self._registry.last_event_id)
        except DB_ERRORS as exc:
            logger.warning("event=registry_check_failed error=%r", str(exc))
            return None

    def _make_wakeup(self) -> _Wakeup:
        url = self._engine.url
        if url.get_backend_name() == "postgresql":
            conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
            wakeup: _Wakeup = _Listen(conninfo, self._interval)
        elif url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            wakeup = _DataVersion(str(url.database), self._interval)
        else:
            wakeup = _Poll(self._interval)
        logger.info(
            "event=registry_watch_started mode=%s interval=%s check_every=%s",
            wakeup.mode, self._interval, self._check_every,
        )  # fmt: skip
        return wakeup


class _Poll:
    """Look every ``interval`` seconds."""

    mode = "poll"

    def __init__(self, interval: float) -> None:
        self._interval = interval

    async def open(self) -> None:
        return None

    async def wait(self, timeout: float) -> bool:
        await asyncio.sleep(min(timeout, self._interval))
        return True

    async def close(self) -> None:
        return None


class _DataVersion:
    """SQLite: ``PRAGMA data_version`` on a connection of its own, every ``interval`` seconds.

    The value changes when any *other* connection commits, and this connection never writes.
    """

    mode = "data_version"

    def __init__(self, path: str, interval: float) -> None:
        self._path = path
        self._interval = interval
        self._connection: sqlite3.Connection | None = None
        self._version: int | None = None

    async def open(self) -> None:
        await self._changed()

    async def wait(self, timeout: float) -> bool:
        await asyncio.sleep(min(timeout, self._interval))
        return await self._changed()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def _changed(self) -> bool:
        try:
            version = await asyncio.to_thread(self._read)
        except sqlite3.Error as exc:
            logger.warning("event=registry_data_version_failed error=%r", str(exc))
            await self.close()
            self._version = None
            return True  # cannot tell: look
        changed, self._version = version != self._version, version
        return changed

    def _read(self) -> int:
        if self._connection is None:
            self._connection = sqlite3.connect(
                self._path, timeout=5, isolation_level=None, check_same_thread=False
            )
        row = self._connection.execute("PRAGMA data_version").fetchone()
        return int(row[0])


class _Listen:
    """PostgreSQL: ``LISTEN`` on a connection of its own; polls while it is down."""

    mode = "listen"

    def __init__(self, conninfo: str, interval: float) -> None:
        self._conninfo = conninfo
        self._interval = interval
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST_S
        self._lost = False  # a warning was logged and no connection has been made since
        self._closed = False

    async def open(self) -> None:
        await self._connect()

    async def wait(self, timeout: float) -> bool:
        if self._closed:
            return False
        if self._connection is None:
            if time.monotonic() >= self._retry_at and await self._connect():
                return True  # what was committed while disconnected was not notified: look
            pause = min(timeout, self._interval, max(0.0, self._retry_at - time.monotonic()))
            await asyncio.sleep(pause)
            return True
        notified = False
        try:
            async for _notify in self._connection.notifies(timeout=timeout, stop_after=1):
                notified = True  # the generator stops by itself after one (stop_after)
        except (psycopg.Error, OSError) as exc:
            await self._lose(exc)
            return True
        return notified

    async def close(self) -> None:
        self._closed = True
        await self._drop()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await connection.close()

    async def _connect(self) -> bool:
        try:
            connection = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=APPLICATION_NAME,
                    connect_timeout=int(CONNECT_TIMEOUT_S), **KEEPALIVES,
                ),
                CONNECT_TIMEOUT_S,
            )  # fmt: skip
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._lose(exc)
            return False
        try:
            await connection.execute(f"LISTEN {REGISTRY_CHANNEL}")
        except (psycopg.Error, OSError) as exc:
            with contextlib.suppress(psycopg.Error, OSError):
                await connection.close()
            await self._lose(exc)
            return False
        if self._closed:  # closed while connecting
            with contextlib.suppress(psycopg.Error, OSError):
                await connection.close()
            return False
        self._connection = connection
        self._backoff = BACKOFF_FIRST_S
        if self._lost:
            logger.info("event=registry_listen_restored channel=%s", REGISTRY_CHANNEL)
        self._lost = False
        return True

    async def _lose(self, exc: BaseException) -> None:
        """Drop the connection, poll meanwhile, and retry after the next backoff step."""
        await self._drop()
        if self._closed:
            return
        if not self._lost:
            logger.warning(
                "event=registry_listen_lost channel=%s error=%r fallback=poll interval=%s",
                REGISTRY_CHANNEL, str(exc) or type(exc).__name__, self._interval,
            )  # fmt: skip
        else:
            logger.debug("event=registry_listen_retry_failed error=%r", str(exc))
        self._lost = True
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_CAP_S)
