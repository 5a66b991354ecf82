"""Adapter lifecycle: register, load on every replica, alias, hot swap, drain, unload.

Composes the registry (``adapters.registry``, in worker threads), the vLLM runtime LoRA API
(``adapters.loading``), the upstream pool and the in-memory ``ModelRouter``. Loads and unloads
of one served name are serialized by a lock per name; the request path never takes a lock
unless the version it needs is not loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from adapters.loading import LoraLoadError, load_adapter, unload_adapter
from adapters.registry import AdapterRecord, AliasRecord, Registry, RegistryError
from adapters.training import read_report
from adapters.validation import validate_adapter_dir
from gateway.exceptions import NoReadyUpstream, UpstreamError
from gateway.metrics import GatewayMetrics
from gateway.openai.json_guard import parse_response_format
from gateway.routing import AliasDefaults, ModelRouter, Route
from gateway.settings import Settings
from gateway.upstream.pool import Replica, UpstreamPool

logger = logging.getLogger("tuneloop.adapters")


class AdapterLoadFailed(UpstreamError):
    """A replica refused the adapter; the version is recorded as failed."""

    status_code = 502
    code = "adapter_load_failed"


class AdapterService:
    """The one place that changes which adapter versions are loaded and where aliases point."""

    def __init__(
        self,
        *,
        registry: Registry,
        pool: UpstreamPool,
        router: ModelRouter,
        session: aiohttp.ClientSession,
        settings: Settings,
        metrics: GatewayMetrics,
    ) -> None:
        self.registry = registry
        self._pool = pool
        self._router = router
        self._session = session
        self._settings = settings
        self._metrics = metrics
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._paths: dict[str, str] = {}  # served name -> folder, for every ready version
        self._unloaded: set[str] = set()  # ready versions deliberately not on the replicas
        self._last_used: dict[str, float] = {}  # served name -> monotonic time of last request
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconciling: set[str] = set()  # replica URLs being reconciled now

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Rebuild the routing table from the registry and load what aliases need."""
        versions = await asyncio.to_thread(self.registry.adapters)
        aliases = await asyncio.to_thread(self.registry.aliases)
        for record in versions:
            if record.status == "ready":
                self._paths[record.served_name] = record.path
                self._router.add_version(record.served_name)
        for alias in aliases:
            self._router.set_alias(alias.name, alias.targets, _defaults(alias))
        aliased = self._router.aliased()
        self._unloaded = set(self._paths) - aliased
        self._pool.on_healthy = self._on_replica_healthy
        for replica in self._pool.replicas:
            if replica.ready:
                await self._reconcile(replica)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: object, name: str) -> None:
        task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
                self._pool.note_loaded(replica, served_name, parent=self.base_model_name)
                logger.info(
                    "event=adapter_reconciled served_name=%s upstream=%s", served_name, replica.url
                )
            except LoraLoadError as exc:
                logger.warning(
                    "event=adapter_reconcile_failed served_name=%s error=%r", served_name, str(exc)
                )

    # --- properties --------------------------------------------------------------------------
    @property
    def base_model_name(self) -> str:
        return self._settings.model_name

    @property
    def adapter_root(self) -> Path:
        return self._settings.resolved_adapter_root

    def _base_names(self) -> set[str]:
        names = {self._settings.model_name, self._settings.base_model_path.name}
        names |= {
            model for model, card in self._pool.known_models().items() if not card.get("parent")
        }
        return names

    # --- the request path --------------------------------------------------------------------
    async def route(self, model: str, user: str | None) -> Route | None:
        """Resolve an alias or version and hold it; ``None`` for anything else (base model)."""
        route = self._router.resolve(model, user)
        if route is None:
            return None
        if route.served_name in self._unloaded:
            await self.ensure_loaded(route.served_name)
        self._router.acquire(route.served_name)  # no await since the check: cannot be unloaded
        self._last_used[route.served_name] = time.monotonic()
        return route

    def release(self, route: Route) -> None:
        self._router.release(route.served_name)

    def alias_names(self) -> list[str]:
        return sorted(self._router.aliases)

    # --- registration ------------------------------------------------------------------------
    async def register(self, name: str, path: str) -> AdapterRecord:
        """Validate, record the next version, load it on every ready replica, mark it ready."""
        info = await asyncio.to_thread(
            validate_adapter_dir,
            self.adapter_root,
            path,
            base_model_names=self._base_names(),
            max_rank=self._settings.engine_max_lora_rank,
        )
        report = await asyncio.to_thread(read_report, info.path)
        if not self._pool.any_ready:
            raise NoReadyUpstream("no model server is ready to load the adapter")
        async with self._locks[f"name:{name}"]:
            record = await asyncio.to_thread(
                self.registry.register,
                name,
                info,
                dataset_hash=report.dataset_hash if report else None,
                metrics={"best_val_loss": report.best_val_loss, "steps": report.steps}
                if report
                else {},
            )
        served_name = record.served_name
        try:
            async with self._locks[served_name]:
                await self._load_everywhere(served_name, record.path)
        except LoraLoadError as exc:
            await asyncio.to_thread(self.registry.set_status, served_name, "failed", error=str(exc))
            raise AdapterLoadFailed(str(exc)) from exc
        self._paths[served_name] = record.path
        self._router.add_version(served_name)
        record = await asyncio.to_thread(self.registry.set_status, served_name, "ready")
        logger.info("event=adapter_ready served_name=%s path=%s", served_name, record.path)
        await self._enforce_capacity(keep=served_name)
        return record

    async def delete(self, served_name: str) -> AdapterRecord:
        record = await asyncio.to_thread(self.registry.delete, served_name)  # 409 if aliased
        self._router.remove_version(served_name)
        self._paths.pop(served_name, None)
        self._spawn(self._drain_and_unload(served_name, forget=True), f"delete {served_name}")
        return record

    # --- aliases -----------------------------------------------------------------------------
    async def set_alias(
        self,
        alias: str,
        targets: dict[str, int],
        *,
        response_format: dict[str, Any] | None = None,
        retrieval: dict[str, Any] | None = None,
    ) -> AliasRecord:
        """Point ``alias`` at ``targets`` once they are loaded; retire what it no longer uses."""
        # A bound format must be one requests could send: same checks, same 400s.
        parse_response_format(
            response_format, max_schema_bytes=self._settings.json_max_schema_bytes
        )
        if alias in self._base_names():
            raise RegistryError("bad_name", f"alias {alias!r} is the name of a base model")
        for served_name in targets:
            if served_name not in self._paths:
                await asyncio.to_thread(self.registry.get, served_name)  # 404 if unknown
                raise RegistryError("bad_targets", f"{served_name} is not a ready version")
        # One change per alias at a time, so the database and the routing table agree.
        async with self._locks[f"alias:{alias}"]:
            for served_name in targets:
                await self.ensure_loaded(served_name)
            loaded_at = time.perf_counter()
            record = await asyncio.to_thread(
                self.registry.set_alias,
                alias,
                targets,
                response_format=response_format,
                retrieval=retrieval,
            )
            self._flip(alias, record, since=loaded_at)
        return record

    def alias_targets(self, alias: str) -> set[str] | None:
        """The served names ``alias`` routes to now; ``None`` for an unknown alias."""
        return self._router.aliases.get(alias)

    async def retarget(self, alias: str, targets: dict[str, int]) -> AliasRecord:
        """Point ``alias`` at ``targets``, keeping its bound response_format and retrieval."""
        current = await asyncio.to_thread(self.registry.alias, alias)
        return await self.set_alias(
            alias, targets, response_format=current.response_format, retrieval=current.retrieval
        )

    async def rollback(self, alias: str) -> AliasRecord:
        async with self._locks[f"alias:{alias}"]:
            current = self._router.aliases.get(alias, set())
            stored = await asyncio.to_thread(self.registry.alias, alias)  # 404 if unknown
            for served_name in stored.previous_targets or {}:
                if served_name not in current:
                    await self.ensure_loaded(served_name)
            loaded_at = time.perf_counter()
            record = await asyncio.to_thread(self.registry.rollback_alias, alias)
            self._flip(alias, record, since=loaded_at)
        return record

    async def delete_alias(self, alias: str) -> None:
        async with self._locks[f"alias:{alias}"]:
            await asyncio.to_thread(self.registry.delete_alias, alias)
            old = self._router.aliases.get(alias, set())
            self._router.remove_alias(alias)
        self._retire(old)

    def _flip(self, alias: str, record: AliasRecord, *, since: float) -> None:
        old = self._router.aliases.get(alias, set())
        targets = record.targets
        self._router.set_alias(alias, targets, _defaults(record))  # the atomic swap
        if old == set(targets) and len(old) == 1:
            return  # same target (a repeated PUT, or only the bound format changed)
        self._metrics.alias_flip.observe(time.perf_counter() - since)
        self._metrics.alias_swaps.labels(alias).inc()
        logger.info(
            "event=alias_flipped alias=%s targets=%s previous=%s",
            alias, targets, record.previous_targets,
        )  # fmt: skip
        self._retire(old - set(targets))

    def _retire(self, served_names: set[str]) -> None:
        for served_name in served_names - self._router.aliased():
            self._spawn(self._drain_and_unload(served_name), f"retire {served_name}")

    # --- loading -----------------------------------------------------------------------------
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
        await self._enforce_capacity(keep=served_name)

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
            self._pool.note_loaded(replica, served_name, parent=self.base_model_name)
            self._metrics.adapter_load.observe(float(seconds))  # type: ignore[arg-type]
        if replicas:
            await asyncio.to_thread(
                self.registry.record,
                "adapter_loaded",
                served_name,
                upstreams=[r.url for r in replicas],
                seconds=[round(float(s), 4) for s in results],  # type: ignore[arg-type]
            )

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
            self.registry.record,
            "adapter_unloaded",
            served_name,
            upstreams=[r.url for r in holders],
        )
        logger.info("event=adapter_unloaded served_name=%s upstreams=%d", served_name, len(holders))

    async def _enforce_capacity(self, *, keep: str) -> None:
        """Keep at most ``max_loaded_adapters`` loaded by unloading idle, unaliased versions,
        least recently used first; ``keep`` (the version just loaded) is never chosen."""
        limit = self._settings.max_loaded_adapters
        loaded = [name for name in self._paths if name not in self._unloaded]
        excess = len(loaded) - limit
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


def _defaults(alias: AliasRecord) -> AliasDefaults:
    return AliasDefaults(response_format=alias.response_format, retrieval=alias.retrieval)
