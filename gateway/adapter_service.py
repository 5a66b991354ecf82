"""Adapter bookkeeping: register, delete, aliases, hot swap, rollback, the routing table.

Composes the registry (``adapters.registry``, in worker threads), the in-memory
``ModelRouter`` and ``AdapterPlacement`` (``gateway.placement``), which loads, reconciles,
drains, unloads and evicts versions on the replicas. Changes to one adapter name or one alias
are serialized by a lock per key, so the database and the routing table agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.exc import SQLAlchemyError

from adapters.loading import LoraLoadError
from adapters.registry import AdapterRecord, AliasRecord, Registry, RegistryError
from adapters.training import read_report
from adapters.validation import validate_adapter_dir
from gateway.exceptions import GatewayError, NoReadyUpstream, UpstreamError
from gateway.metrics import GatewayMetrics
from gateway.openai.json_guard import parse_response_format
from gateway.placement import AdapterPlacement
from gateway.presence import Presence
from gateway.registry_watch import RegistryWatcher
from gateway.routing import AliasDefaults, ModelRouter, Route
from gateway.settings import Settings
from gateway.upstream.pool import UpstreamPool

logger = logging.getLogger("tuneloop.adapters")


class AdapterLoadFailed(UpstreamError):
    """A replica refused the adapter; the version is recorded as failed."""

    status_code = 502
    code = "adapter_load_failed"


class AdapterService:
    """The one place that changes which adapter versions exist and where aliases point."""

    def __init__(
        self,
        *,
        registry: Registry,
        pool: UpstreamPool,
        router: ModelRouter,
        session: aiohttp.ClientSession,
        settings: Settings,
        metrics: GatewayMetrics,
        presence: Presence | None = None,
    ) -> None:
        self.registry = registry
        self._pool = pool
        self._router = router
        self._settings = settings
        self._metrics = metrics
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # name:, alias:
        self._applied: dict[str, datetime] = {}  # alias -> updated_at of the record applied
        self._watcher: asyncio.Task[None] | None = None
        self._placement = AdapterPlacement(
            registry=registry,
            pool=pool,
            router=router,
            session=session,
            metrics=metrics,
            base_model_name=settings.model_name,
            max_loaded_adapters=settings.max_loaded_adapters,
            adapter_replicas=settings.adapter_replicas,
            presence=presence,
        )
        # The newest registry event the routing table reflects: each heartbeat reports it with
        # the requests in flight per version, so a drain elsewhere knows when it may unload.
        self.applied_event_id: int | None = None
        if presence is not None:
            presence.snapshot = self._snapshot

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Rebuild the routing table from the registry and load what aliases need."""
        applied = await asyncio.to_thread(self.registry.last_event_id)  # read before the tables
        versions = await asyncio.to_thread(self.registry.adapters)
        aliases = await asyncio.to_thread(self.registry.aliases)
        ready = {r.served_name: r.path for r in versions if r.status == "ready"}
        for served_name in ready:
            self._router.add_version(served_name)
        for alias in aliases:
            self._router.set_alias(alias.name, alias.targets, _defaults(alias))
            self._applied[alias.name] = alias.updated_at
        await self._placement.start(ready, aliased=self._router.aliased())
        self.applied_event_id = applied

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._placement.close()

    # --- several processes on one database -----------------------------------------------------
    def watch(self, interval: float) -> None:
        """Adopt what other gateway processes (workers, replicas of the gateway) change, within
        about a second: woken by LISTEN/NOTIFY on PostgreSQL, by ``PRAGMA data_version`` read
        every ``interval`` seconds on SQLite (``gateway.registry_watch``)."""
        watcher = RegistryWatcher(self.registry.engine, self.registry, interval=interval)
        self._watcher = asyncio.create_task(self._watch(watcher), name="tuneloop-registry-watch")

    async def _watch(self, watcher: RegistryWatcher) -> None:
        async with contextlib.aclosing(watcher.changes()) as changes:  # closes its connection
            async for latest in changes:
                try:
                    await self.sync()
                    self.applied_event_id = latest
                except (SQLAlchemyError, RegistryError, GatewayError) as exc:
                    logger.warning("event=registry_sync_failed error=%r", str(exc))

    async def sync(self) -> None:
        """Bring the routing table in line with the registry: versions registered or deleted and
        aliases set, flipped or deleted by another process. Aliases this process set itself
        are recognised by their ``updated_at`` and left alone."""
        # Only versions routable before the read can have been deleted since: one this process
        # registers meanwhile becomes routable after the database calls it ready (``register``).
        routable = self._router.versions
        versions = await asyncio.to_thread(self.registry.adapters)
        aliases = {a.name: a for a in await asyncio.to_thread(self.registry.aliases)}
        ready = {r.served_name: r.path for r in versions if r.status == "ready"}
        changed: list[str] = []
        for served_name, path in ready.items():
            if not self._placement.is_ready(served_name):
                self._placement.adopt(served_name, path)
                self._router.add_version(served_name)
                changed.append(served_name)
        for gone in (routable & self._router.versions) - set(ready):
            self._router.remove_version(gone)
            self._placement.forget(gone)
            changed.append(gone)
        flipped = {n: r for n, r in aliases.items() if self._applied.get(n) != r.updated_at}
        if flipped:
            # The process that set them loaded their targets first: read the replicas' listings
            # now rather than load again on the strength of this process's older view.
            await self._pool.check_all()
        for name, record in flipped.items():
            changed.append(name)
            async with self._locks[f"alias:{name}"]:
                for served_name in record.targets:
                    await self._placement.ensure_placed(served_name)
                self._flip(name, record, since=time.perf_counter())
                self._applied[name] = record.updated_at
        for name in set(self._router.aliases) - set(aliases):
            old = self._router.aliases.get(name, set())
            self._router.remove_alias(name)
            self._applied.pop(name, None)
            self._placement.retire(old)
            changed.append(name)
        if changed:
            logger.info("event=registry_synced changed=%s", ",".join(sorted(changed)))

    def _snapshot(self) -> tuple[int | None, dict[str, int]]:
        return self.applied_event_id, self._router.in_flight_counts()

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
        """Resolve an alias or version and hold it (it cannot be unloaded while held); ``None``
        for anything else (base model). A version no replica holds is loaded by the pool's
        placer when the request is sent."""
        route = self._router.resolve(model, user)
        if route is None:
            return None
        self._router.acquire(route.served_name)
        self._placement.touch(route.served_name)
        return route

    def release(self, route: Route) -> None:
        self._router.release(route.served_name)

    def alias_names(self) -> list[str]:
        return sorted(self._router.aliases)

    # --- registration ------------------------------------------------------------------------
    async def register(self, name: str, path: str) -> AdapterRecord:
        """Validate, record the next version, load it where placement puts it, mark it ready."""
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
            await self._placement.load_new(served_name, record.path)
        except LoraLoadError as exc:
            await asyncio.to_thread(self.registry.set_status, served_name, "failed", error=str(exc))
            raise AdapterLoadFailed(str(exc)) from exc
        # Ready in the database before routable here: ``sync`` treats a routable version the
        # database does not call ready as deleted elsewhere, and would unload this one.
        record = await asyncio.to_thread(self.registry.set_status, served_name, "ready")
        self._router.add_version(served_name)
        logger.info("event=adapter_ready served_name=%s path=%s", served_name, record.path)
        return record

    async def delete(self, served_name: str, *, status: str = "deleted") -> AdapterRecord:
        """Retire ``served_name`` (``status``: deleted, or rejected by the loop): no longer
        routable, unloaded once its requests have drained."""
        record = await asyncio.to_thread(
            self.registry.delete, served_name, status=status
        )  # 409 if aliased
        self._router.remove_version(served_name)
        self._placement.forget(served_name)
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
            if not self._placement.is_ready(served_name):
                await asyncio.to_thread(self.registry.get, served_name)  # 404 if unknown
                raise RegistryError("bad_targets", f"{served_name} is not a ready version")
        # One change per alias at a time, so the database and the routing table agree.
        async with self._locks[f"alias:{alias}"]:
            for served_name in targets:
                await self._placement.ensure_placed(served_name)
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
                    await self._placement.ensure_placed(served_name)
            loaded_at = time.perf_counter()
            record = await asyncio.to_thread(self.registry.rollback_alias, alias)
            self._flip(alias, record, since=loaded_at)
        return record

    async def delete_alias(self, alias: str) -> None:
        async with self._locks[f"alias:{alias}"]:
            await asyncio.to_thread(self.registry.delete_alias, alias)
            old = self._router.aliases.get(alias, set())
            self._router.remove_alias(alias)
            self._applied.pop(alias, None)
        self._placement.retire(old)

    def _flip(self, alias: str, record: AliasRecord, *, since: float) -> None:
        self._applied[alias] = record.updated_at
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
        self._placement.retire(old - set(targets))


def _defaults(alias: AliasRecord) -> AliasDefaults:
    return AliasDefaults(response_format=alias.response_format, retrieval=alias.retrieval)
