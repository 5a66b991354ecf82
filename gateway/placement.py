"""Where adapter versions are loaded: placement on replicas, on-demand loads, reconcile, evict.

Each ready version is placed on up to ``adapter_replicas`` ready replicas (0: all of them),
choosing those holding the fewest adapters, then the least loaded; each replica holds at most
``max_loaded_adapters`` (vLLM's ``--max-cpu-loras``), evicting idle versions no alias uses,
least recently used first. A request for a version no ready replica holds loads it on the
least loaded replica (``place``, the pool's placer): one load, concurrent requests wait for it.

What each replica should hold is remembered per replica (``_placed``): while the replica is
healthy it is what its model listing shows (so loads and unloads by other gateway processes
are adopted); when the replica comes back (it was down, or its server restarted) the leader
process loads there what it held before. Loads and unloads of one served name are serialized
by a lock per name. Which versions exist and where aliases point is ``AdapterService``'s
business; it tells placement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import aiohttp

from adapters.loading import LoraLoadError, load_adapter, unload_adapter
from adapters.registry import Registry, RegistryError
from gateway.exceptions import NoReadyUpstream
from gateway.metrics import GatewayMetrics
from gateway.presence import Presence
from gateway.routing import ModelRouter
from gateway.upstream.pool import Replica, UpstreamPool

__all__ = ["AdapterPlacement"]

logger = logging.getLogger("tuneloop.adapters")

OTHERS_DRAIN_TIMEOUT_S = 600.0  # then a retired version is unloaded anyway, with a warning


class AdapterPlacement:
    """Which ready adapter versions are loaded on which replicas, and the work that changes it."""

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
        adapter_replicas: int = 0,
        presence: Presence | None = None,
    ) -> None:
        self._registry = registry
        self._pool = pool
        self._router = router
        self._session = session
        self._metrics = metrics
        self._base_model_name = base_model_name
        self._max_loaded = max_loaded_adapters
        self._copies = adapter_replicas  # 0: every ready replica
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._paths: dict[str, str] = {}  # served name -> folder, for every ready version
        self._placed: defaultdict[str, set[str]] = defaultdict(set)  # replica URL -> names
        self._last_used: dict[str, float] = {}  # served name -> monotonic time of last request
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconciling: set[str] = set()  # replica URLs being reconciled now
        # The other gateway processes on this database: a drain waits for them too, and
        # only the leader among them reconciles replicas that come back.
        self._presence = presence
        self.is_leader: Callable[[], bool] = presence.is_leader if presence else lambda: True

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, ready: Mapping[str, str], *, aliased: set[str]) -> None:
        """Take the ready versions (served name -> folder), adopt what the replicas hold,
        route on-demand loads and health checks here, and place every ``aliased`` version."""
        self._paths.update(ready)
        for replica in self._pool.replicas:
            if replica.ready:
                self._adopt_listing(replica)
        self._pool.on_healthy = self._on_replica_healthy
        self._pool.placer = self.place
        for served_name in sorted(aliased & set(self._paths)):
            try:
                await self.ensure_placed(served_name, reason="alias")
            except (LoraLoadError, NoReadyUpstream) as exc:
                logger.warning(
                    "event=adapter_place_failed served_name=%s error=%r", served_name, str(exc)
                )

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

    def adopt(self, served_name: str, path: str) -> None:
        """A version another gateway process registered: ready here too; where it is loaded
        the health checks tell, and a request finding it nowhere loads it."""
        self._paths[served_name] = path

    def touch(self, served_name: str) -> None:
        """Note a request for ``served_name``: eviction unloads the least recently used."""
        self._last_used[served_name] = time.monotonic()

    def holders(self, served_name: str) -> list[Replica]:
        """Ready replicas that hold ``served_name`` now."""
        return [r for r in self._pool.replicas if r.ready and r.serves(served_name)]

    def _copies_wanted(self) -> int:
        ready = sum(1 for r in self._pool.replicas if r.ready)
        return ready if self._copies <= 0 else min(self._copies, ready)

    def _managed(self, replica: Replica) -> list[str]:
        """The ready versions ``replica`` holds."""
        return [name for name in replica.models if name in self._paths]

    def _placement_order(self, replicas: Iterable[Replica]) -> list[Replica]:
        """Where to put one more version: fewest adapters held, then least loaded."""
        return sorted(replicas, key=lambda r: (len(self._managed(r)), r.rank()))

    # --- loading -----------------------------------------------------------------------------
    async def load_new(self, served_name: str, path: str) -> None:
        """Load a just-registered version where placement puts it, then count it as ready.

        Raises ``LoraLoadError`` (after unloading wherever it did load) when a replica refuses.
        """
        async with self._locks[served_name]:
            chosen = self._choose(served_name)
            await self._load_on(chosen, served_name, path, reason="register", atomic=True)
        self._paths[served_name] = path
        await self._enforce_capacity(chosen, keep=served_name)

    async def ensure_placed(self, served_name: str, *, reason: str = "alias") -> None:
        """Make sure ``served_name`` is on as many ready replicas as placement wants (a no-op
        when it is); raises ``LoraLoadError`` when none of the replicas it chose would load it."""
        async with self._locks[served_name]:
            path = self._paths.get(served_name)
            if path is None:
                raise RegistryError("not_found", f"adapter {served_name} is not a ready version")
            chosen = self._choose(served_name)
            if not chosen:
                return
            await self._load_on(chosen, served_name, path, reason=reason, atomic=True)
        await self._enforce_capacity(chosen, keep=served_name)

    async def place(self, served_name: str, replica: Replica | None) -> bool:
        """The pool's placer: load ``served_name`` on ``replica``, or (``None``) on the least
        loaded ready replica when none holds it. Requests arriving meanwhile wait for this
        one load. ``False`` for anything but a ready version, or when the load failed."""
        path = self._paths.get(served_name)
        if path is None:
            return False
        async with self._locks[served_name]:
            if replica is None:
                if self.holders(served_name):
                    return True  # a concurrent request loaded it while this one waited
                ready = [r for r in self._pool.replicas if r.ready]
                if not ready:
                    return False
                replica = min(ready, key=Replica.rank)
            elif replica.serves(served_name):
                return True
            try:
                await self._load_on([replica], served_name, path, reason="demand", atomic=True)
            except LoraLoadError as exc:
                logger.warning(
                    "event=adapter_load_failed served_name=%s upstream=%s error=%r",
                    served_name, replica.url, str(exc),
                )  # fmt: skip
                return False
        await self._enforce_capacity([replica], keep=served_name)
        return True

    def _choose(self, served_name: str) -> list[Replica]:
        """Ready replicas to load ``served_name`` on so that it has the copies it should."""
        if not any(r.ready for r in self._pool.replicas):
            raise NoReadyUpstream("no model server is ready to load the adapter")
        missing = self._copies_wanted() - len(self.holders(served_name))
        if missing <= 0:
            return []
        lacking = [r for r in self._pool.replicas if r.ready and not r.serves(served_name)]
        return self._placement_order(lacking)[:missing]

    async def _load_on(
        self, replicas: list[Replica], served_name: str, path: str, *, reason: str, atomic: bool
    ) -> None:
        """Load on ``replicas`` at once. With ``atomic``, any failure unloads it where it did
        load and raises the first error; otherwise failures are logged and skipped."""
        if not replicas:
            return
        results = await asyncio.gather(
            *(load_adapter(self._session, r.url, served_name, path) for r in replicas),
            return_exceptions=True,
        )
        loaded = [
            (rep, float(res))  # type: ignore[arg-type]
            for rep, res in zip(replicas, results, strict=True)
            if not isinstance(res, BaseException)
        ]
        failures = [res for res in results if isinstance(res, BaseException)]
        if failures and atomic:
            for replica, _ in loaded:
                await unload_adapter(self._session, replica.url, served_name)
            error = failures[0]
            if isinstance(error, LoraLoadError):
                raise error
            raise LoraLoadError("upstream", served_name, None, repr(error)) from error
        for error in failures:
            logger.warning(
                "event=adapter_load_failed served_name=%s error=%r", served_name, str(error)
            )
        for replica, seconds in loaded:
            self._pool.note_loaded(replica, served_name, parent=self._base_model_name)
            self._placed[replica.url].add(served_name)
            self._metrics.adapter_load.observe(seconds)
            self._metrics.child(self._metrics.adapter_loads, reason).inc()
        if loaded:
            logger.info(
                "event=adapter_loaded served_name=%s reason=%s upstreams=%s",
                served_name, reason, ",".join(r.url for r, _ in loaded),
            )  # fmt: skip
            await asyncio.to_thread(
                self._registry.record,
                "adapter_loaded",
                served_name,
                upstreams=[r.url for r, _ in loaded],
                seconds=[round(s, 4) for _, s in loaded],
                reason=reason,
            )

    # --- replicas that come back -------------------------------------------------------------
    def _adopt_listing(self, replica: Replica) -> None:
        self._placed[replica.url] = set(self._managed(replica))

    def _on_replica_healthy(self, replica: Replica, came_back: bool) -> None:
        """A health check passed. A replica that came back gets what it held before; one
        that lacks an aliased version held by fewer replicas than wanted gets it too (only the
        leader process loads). Otherwise what the replica lists is what it should hold."""
        if replica.url in self._reconciling:
            return
        missing = self._aliased_short_of(replica)
        if came_back:
            missing |= {n for n in self._placed[replica.url] if n in self._paths}
            missing -= set(replica.models)
        else:
            self._adopt_listing(replica)
        if missing and self.is_leader():
            self._reconciling.add(replica.url)
            self._spawn(self._reconcile(replica, missing), f"reconcile {replica.url}")

    def _aliased_short_of(self, replica: Replica) -> set[str]:
        """Aliased versions ``replica`` lacks that fewer ready replicas hold than wanted."""
        wanted = self._copies_wanted()
        return {
            name
            for name in self._router.aliased()
            if name in self._paths and not replica.serves(name) and len(self.holders(name)) < wanted
        }

    async def _reconcile(self, replica: Replica, missing: set[str]) -> None:
        """Load ``missing`` on ``replica`` (it came back, or an aliased version is short)."""
        try:
            for served_name in sorted(missing):
                path = self._paths.get(served_name)
                if path is None:
                    continue
                async with self._locks[served_name]:
                    if replica.serves(served_name) or not replica.ready:
                        continue
                    await self._load_on([replica], served_name, path, reason="reconcile",
                                        atomic=False)  # fmt: skip
        finally:
            self._reconciling.discard(replica.url)

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
        """Wait for the version's in-flight requests here and in every other live gateway
        process, then unload it from every replica."""
        since = await asyncio.to_thread(self._registry.last_event_id)  # the flip or delete
        await self._router.wait_drained(served_name)
        await self._wait_others_drained(served_name, since)
        async with self._locks[served_name]:
            if self._router.in_flight(served_name) or served_name in self._router.aliased():
                return  # it came back into use while we waited
            holders = [r for r in self._pool.replicas if r.serves(served_name)]
            unloaded = [r for r in holders if await self._unload(r, served_name)]
            for placed in self._placed.values():
                placed.discard(served_name)
        if not unloaded and not forget:
            return
        await asyncio.to_thread(
            self._registry.record,
            "adapter_unloaded",
            served_name,
            upstreams=[r.url for r in unloaded],
        )
        logger.info(
            "event=adapter_unloaded served_name=%s upstreams=%d", served_name, len(unloaded)
        )

    async def _wait_others_drained(self, served_name: str, since: int) -> None:
        """Until every other gateway process has applied registry event ``since`` (so routes no
        new request to ``served_name`` through an alias) and has none of its requests in
        flight, as their heartbeats report (``Presence.holding_up``)."""
        if self._presence is None:
            return
        deadline = time.monotonic() + OTHERS_DRAIN_TIMEOUT_S
        while waiting_on := await self._presence.holding_up(served_name, since=since):
            if time.monotonic() > deadline:
                logger.warning(
                    "event=adapter_drain_timeout served_name=%s processes=%s",
                    served_name, ",".join(waiting_on),
                )  # fmt: skip
                return
            await asyncio.sleep(self._presence.interval / 2)

    async def _unload(self, replica: Replica, served_name: str) -> bool:
        try:
            await unload_adapter(self._session, replica.url, served_name)
        except LoraLoadError as exc:
            logger.warning(
                "event=adapter_unload_failed served_name=%s upstream=%s error=%r",
                served_name, replica.url, str(exc),
            )  # fmt: skip
            return False
        self._pool.note_unloaded(replica, served_name)
        self._placed[replica.url].discard(served_name)
        return True

    async def _enforce_capacity(self, replicas: Iterable[Replica], *, keep: str) -> None:
        """Keep each of ``replicas`` within ``max_loaded_adapters`` by unloading idle versions
        no alias uses, least recently used first; ``keep`` (just loaded) is never chosen. Idle
        means here and, as their last heartbeats tell, in every other gateway process."""
        aliased = self._router.aliased()
        for replica in replicas:
            held = self._managed(replica)
            excess = len(held) - self._max_loaded
            if excess <= 0:
                continue
            idle = [n for n in held if n != keep and n not in aliased]
            idle.sort(key=lambda name: self._last_used.get(name, 0.0))
            for served_name in idle[:excess]:
                async with self._locks[served_name]:
                    if self._router.in_flight(served_name) or served_name in self._router.aliased():
                        continue
                    if self._presence is not None and await self._presence.holding_up(
                        served_name, since=0
                    ):
                        continue  # another process is running requests on it (or just started)
                    if await self._unload(replica, served_name):
                        self._metrics.adapter_evictions.inc()
                        logger.info(
                            "event=adapter_evicted served_name=%s upstream=%s",
                            served_name, replica.url,
                        )  # fmt: skip
