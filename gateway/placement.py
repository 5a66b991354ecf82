"""Replica placement of adapter versions: load on every replica, reconcile, drain, unload, evict.

A ready version is either placed (loaded on every ready replica) or deliberately unloaded;
``AdapterPlacement`` keeps that state and changes it through the vLLM runtime LoRA API
(``adapters.loading``). Loads and unloads of one served name are serialized by a lock per name;
the request path never takes a lock unless the version it needs is not loaded. Which versions
exist and where aliases point is ``AdapterService``'s business; it tells placement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

import aiohttp

from adapters.loading import LoraLoadError, load_adapter, unload_adapter
from adapters.registry import Registry, RegistryError
from gateway.exceptions import NoReadyUpstream
from gateway.metrics import GatewayMetrics
from gateway.routing import ModelRouter
from gateway.upstream.pool import Replica, UpstreamPool

__all__ = ["AdapterPlacement"]

logger = logging.getLogger("tuneloop.adapters")


class AdapterPlacement:
    """Which ready adapter versions are loaded on the replicas, and the work that changes it."""

    def __init__(
        self,
        *,
        registry: Registry,
        pool: UpstreamPool,
        router: ModelRouter,
        session: aiohttp.ClientSession,
        metrics: GatewayMetrics,
        base_model_name: str,
        max_loaded_adapters: int,
    ) -> None:
        self._registry = registry
        self._pool = pool
        self._router = router
        self._session = session
        self._metrics = metrics
        self._base_model_name = base_model_name
        self._max_loaded = max_loaded_adapters
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._paths: dict[str, str] = {}  # served name -> folder, for every ready version
        self._unloaded: set[str] = set()  # ready versions deliberately not on the replicas
        self._last_used: dict[str, float] = {}  # served name -> monotonic time of last request
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconciling: set[str] = set()  # replica URLs being reconciled now

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, ready: Mapping[str, str], *, aliased: set[str]) -> None:
        """Take the ready versions (served name -> folder), keep only ``aliased`` ones loaded,
        watch health checks, and give every ready replica what it lacks."""
        self._paths.update(ready)
        self._unloaded = set(self._paths) - aliased
        self._pool.on_healthy = self._on_replica_healthy
        for replica in self._pool.replicas:
            if replica.ready:
                await self._reconcile(replica)

    async def close(self) -> None:
        """Cancel the background drains and reconciles, and wait for them to end."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- what is placed ----------------------------------------------------------------------
    def is_ready(self, served_name: str) -> bool:
        """Whether ``served_name`` is a ready version (loaded or not)."""
        return served_name in self._paths

    def is_unloaded(self, served_name: str) -> bool:
        """Whether the ready version ``served_name`` is deliberately off the replicas."""
        return served_name in self._unloaded

    def adopt(self, served_name: str, path: str) -> None:
        """A version another gateway process registered: ready here too, loaded on the replicas
        (idempotently) by the first request or alias that needs it."""
        self._paths[served_name] = path
        self._unloaded.add(served_name)

    def touch(self, served_name: str) -> None:
        """Note a request for ``served_name``: eviction unloads the least recently used."""
        self._last_used[served_name] = time.monotonic()

    # --- loading -----------------------------------------------------------------------------
    async def load_new(self, served_name: str, path: str) -> None:
        """Load a just-registered version on every ready replica, then count it as ready.

        Raises ``LoraLoadError`` (after unloading wherever it did load) when a replica refuses.
        """
        async with self._locks[served_name]:
            await self._load_everywhere(served_name, path)
        self._paths[served_name] = path

    async def ensure_loaded(self, served_name: str) -> None:
        """Make sure every ready replica holds ``served_name`` (a no-op when it does)."""
        async with self._locks[served_name]:
            if served_name not in self._unloaded and all(
                r.serves(served_name) for r in self._pool.replicas if r.ready
            ):
                return
            path = self._paths.get(served_name)
            if path is None:
                raise RegistryError("not_found", f"adapter {served_name} is not a ready version")
            await self._load_everywhere(served_name, path)
            self._unloaded.discard(served_name)
        await self.enforce_capacity(keep=served_name)

    async def _load_everywhere(self, served_name: str, path: str) -> None:
        """Load on every ready replica; on any failure, unload where it succeeded and raise."""
        replicas = [r for r in self._pool.replicas if r.ready and not r.serves(served_name)]
        if not any(r.ready for r in self._pool.replicas):
            raise NoReadyUpstream("no model server is ready to load the adapter")
        results = await asyncio.gather(
            *(load_adapter(self._session, r.url, served_name, path) for r in replicas),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        loaded = [
            rep
            for rep, res in zip(replicas, results, strict=True)
            if not isinstance(res, BaseException)
        ]
        if failures:
            for replica in loaded:
                await unload_adapter(self._session, replica.url, served_name)
            error = failures[0]
            if isinstance(error, LoraLoadError):
                raise error
            raise LoraLoadError("upstream", served_name, None, repr(error)) from error
        for replica, seconds in zip(replicas, results, strict=True):
            self._pool.note_loaded(replica, served_name, parent=self._base_model_name)
            self._metrics.adapter_load.observe(float(seconds))  # type: ignore[arg-type]
        if replicas:
            await asyncio.to_thread(
                self._registry.record,
                "adapter_loaded",
                served_name,
                upstreams=[r.url for r in replicas],
                seconds=[round(float(s), 4) for s in results],  # type: ignore[arg-type]
            )

    # --- replicas that come back -------------------------------------------------------------
    def _on_replica_healthy(self, replica: Replica) -> None:
        """A health check passed: if the replica lacks a loaded version, give it back."""
        if replica.url in self._reconciling:
            return
        if any(name not in self._unloaded and not replica.serves(name) for name in self._paths):
            self._reconciling.add(replica.url)
            self._spawn(self._reconcile(replica), f"reconcile {replica.url}")

    async def _reconcile(self, replica: Replica) -> None:
        """Give ``replica`` every loaded version it lacks (it joined, or vLLM restarted)."""
        try:
            await self._reconcile_once(replica)
        finally:
            self._reconciling.discard(replica.url)

    async def _reconcile_once(self, replica: Replica) -> None:
        for served_name, path in list(self._paths.items()):
            if served_name in self._unloaded or replica.serves(served_name):
                continue
            try:
                async with self._locks[served_name]:
                    await load_adapter(self._session, replica.url, served_name, path)
                self._pool.note_loaded(replica, served_name, parent=self._base_model_name)
                logger.info(
                    "event=adapter_reconciled served_name=%s upstream=%s", served_name, replica.url
                )
            except LoraLoadError as exc:
                logger.warning(
                    "event=adapter_reconcile_failed served_name=%s error=%r", served_name, str(exc)
                )

    # --- unloading ---------------------------------------------------------------------------
    def forget(self, served_name: str) -> None:
        """A deleted version: no longer ready; drain and unload it in the background."""
        self._paths.pop(served_name, None)
        self._spawn(self._drain_and_unload(served_name, forget=True), f"delete {served_name}")

    def retire(self, served_names: Iterable[str]) -> None:
        """Drain and unload, in the background, those of ``served_names`` no alias uses."""
        for served_name in set(served_names) - self._router.aliased():
            self._spawn(self._drain_and_unload(served_name), f"retire {served_name}")

    async def _drain_and_unload(self, served_name: str, *, forget: bool = False) -> None:
        """Wait for the version's in-flight requests, then unload it from every replica."""
        await self._router.wait_drained(served_name)
        async with self._locks[served_name]:
            if self._router.in_flight(served_name) or served_name in self._router.aliased():
                return  # it came back into use while we waited
            if served_name in self._unloaded and not forget:
                return
            self._unloaded.add(served_name)
            holders = [r for r in self._pool.replicas if r.serves(served_name)]
            for replica in holders:
                try:
                    await unload_adapter(self._session, replica.url, served_name)
                except LoraLoadError as exc:
                    logger.warning(
                        "event=adapter_unload_failed served_name=%s error=%r", served_name, str(exc)
                    )
                    continue
                self._pool.note_unloaded(replica, served_name)
            if forget:
                self._unloaded.discard(served_name)
        await asyncio.to_thread(
            self._registry.record,
            "adapter_unloaded",
            served_name,
            upstreams=[r.url for r in holders],
        )
        logger.info("event=adapter_unloaded served_name=%s upstreams=%d", served_name, len(holders))

    async def enforce_capacity(self, *, keep: str) -> None:
        """Keep at most ``max_loaded_adapters`` loaded by unloading idle, unaliased versions,
        least recently used first; ``keep`` (the version just loaded) is never chosen."""
        loaded = [name for name in self._paths if name not in self._unloaded]
        excess = len(loaded) - self._max_loaded
        if excess <= 0:
            return
        aliased = self._router.aliased()
        idle = [
            name
            for name in loaded
            if name != keep and name not in aliased and not self._router.in_flight(name)
        ]
        idle.sort(key=lambda name: self._last_used.get(name, 0.0))
        for served_name in idle[:excess]:
            await self._drain_and_unload(served_name)
