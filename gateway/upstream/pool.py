"""A pool of vLLM OpenAI servers: health checks, adapter-aware choice, failover bookkeeping.

Each health check also scrapes the replica's ``/metrics`` for vLLM's own queue (waiting,
running, KV-cache use; ``gateway.upstream.load``). A request goes to a ready replica that
serves its model; among several, one that is not saturated (no waiting queue, KV cache below
95 %), then the fewest requests (vLLM's running + waiting as last scraped, corrected by this
process's live in-flight count since), then the emptier KV cache; ties rotate. Where no ready
replica serves the model, ``placer`` (the adapter placement) may load it on one first.

The client is one ``aiohttp.ClientSession`` owned by the app's lifespan. httpx was measured
first: its pool scans every pooled connection on each request (httpcore's
``_assign_requests_to_connections`` topped the profile) and its request
and URL models cost more than the rest of the proxying; through it the gateway kept 0.011 of
the direct throughput at 64 connections, through aiohttp it keeps several times more.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from gateway.exceptions import (
    NoReadyUpstream,
    RateLimited,
    TransportError,
    from_transport,
    is_connect_failure,
    is_disconnect,
)
from gateway.metrics import GatewayMetrics
from gateway.upstream.call import UpstreamCall
from gateway.upstream.load import EngineLoad, parse_engine_load

logger = logging.getLogger("tuneloop.upstream")

SLOW_CHECKS_TO_DOWN = 3  # consecutive timed-out health checks before a replica is marked down

RoutingPolicy = Literal["adapter_affinity", "round_robin"]

# Loads ``model`` on ``replica`` (or, given ``None``, on the replica placement prefers) when no
# ready replica serves it; ``False`` when it is nothing placement can load (a base model).
Placer = Callable[[str, "Replica | None"], Awaitable[bool]]


@dataclass
class Replica:
    """One upstream server as the gateway last saw it."""

    url: str
    ready: bool = False
    in_flight: int = 0
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_error: str | None = None
    slow_checks: int = 0  # consecutive health checks that timed out
    answered_at: float = float("-inf")  # monotonic time a request last got headers from it
    load: EngineLoad | None = None  # vLLM's own gauges at the last health check
    in_flight_at_scrape: int = 0  # this process's in-flight count when ``load`` was read
    # Loads/unloads the gateway made itself: name -> (when, card or None for unloaded). A
    # health check that began before one of them must not undo it with a stale listing.
    noted: dict[str, tuple[float, dict[str, Any] | None]] = field(default_factory=dict)

    def serves(self, model: str) -> bool:
        return model in self.models

    @property
    def estimated_load(self) -> float:
        """Requests on the replica now, as well as this process can tell: vLLM's running and
        waiting at the last scrape (other gateways' included), corrected by how this
        process's own in-flight count moved since."""
        if self.load is None:
            return float(self.in_flight)
        others = self.load.running + self.load.waiting - self.in_flight_at_scrape
        return self.in_flight + max(0.0, others)

    def rank(self) -> tuple[bool, float, float]:
        """Sort key: not saturated first, then least loaded, then the emptier KV cache."""
        load = self.load
        return (
            load is not None and load.saturated,
            self.estimated_load,
            load.kv_use if load is not None else 0.0,
        )


_REASONS = ("saturation", "load", "kv_cache")  # which part of ``Replica.rank`` decided


class UpstreamPool:
    """Tracks which replicas are ready and which models each serves; picks one per request."""

    def __init__(
        self,
        urls: list[str],
        client: aiohttp.ClientSession,
        *,
        metrics: GatewayMetrics,
        health_interval: float = 5.0,
        health_timeout: float = 2.0,
        max_in_flight_per_replica: int = 128,
        capacity_wait: float = 30.0,
        policy: RoutingPolicy = "adapter_affinity",
    ) -> None:
        if not urls:
            raise ValueError("an upstream pool needs at least one URL")
        self.replicas = [Replica(url=url) for url in urls]
        self._client = client
        self._metrics = metrics
        self._health_interval = health_interval
        self._health_timeout = health_timeout
        self.max_in_flight_per_replica = max_in_flight_per_replica
        self._capacity_wait = capacity_wait
        self.policy: RoutingPolicy = policy
        # Resolved (and replaced) whenever a request releases a replica while others wait.
        self._freed: asyncio.Future[None] | None = None
        self._rotation = itertools.count()
        self._task: asyncio.Task[None] | None = None
        # Called after every passing health check, with the replica's fresh model list and
        # whether it came back (was down, or its server restarted): the adapter placement
        # gives it back the adapters it held (a restarted vLLM has none).
        self.on_healthy: Callable[[Replica, bool], None] | None = None
        self.placer: Placer | None = None

    @property
    def client(self) -> aiohttp.ClientSession:
        """The shared upstream HTTP session (owned by the app's lifespan)."""
        return self._client

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Check every replica once, then keep checking in the background."""
        await self.check_all()
        self._task = asyncio.create_task(self._health_loop(), name="tuneloop-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            await self.check_all()

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))

    async def _check(self, replica: Replica) -> None:
        timeout = aiohttp.ClientTimeout(total=self._health_timeout)
        began = time.monotonic()
        try:
            async with self._client.get(f"{replica.url}/health", timeout=timeout) as health:
                health.raise_for_status()
            async with self._client.get(f"{replica.url}/v1/models", timeout=timeout) as listing:
                listing.raise_for_status()
                cards = (await listing.json(content_type=None)).get("data", [])
            models = {card["id"]: card for card in cards if isinstance(card, dict) and "id" in card}
        except TimeoutError as exc:
            # A busy engine (a first grammar compile, a long prefill) can miss one check: only
            # a run of timeouts marks it down. A refused connection or an error does at once.
            # Nor does a timeout count while requests get answers: then the check lost a race
            # for this process's own saturated event loop, not the replica.
            if time.monotonic() - replica.answered_at <= self._health_interval:
                return
            replica.slow_checks += 1
            if replica.slow_checks >= SLOW_CHECKS_TO_DOWN:
                self._set_down(
                    replica, f"{type(exc).__name__}: health check timed out", kind="health"
                )
            return
        except (aiohttp.ClientError, ValueError, AttributeError) as exc:
            self._set_down(replica, f"{type(exc).__name__}: {exc}", kind="health")
            return
        replica.slow_checks = 0
        for name, (at, card) in list(replica.noted.items()):
            if at < began:
                del replica.noted[name]  # the listing already reflects it
            elif card is None:
                models.pop(name, None)
            else:
                models[name] = card
        replica.models = models
        replica.last_error = None
        load = await self._scrape(replica, timeout)
        came_back = not replica.ready or (
            load is not None
            and replica.load is not None
            and load.started_at != replica.load.started_at
        )
        if load is not None:
            replica.load = load
            replica.in_flight_at_scrape = replica.in_flight
        self._metrics.upstream_ready.labels(replica.url).set(1)
        if not replica.ready:
            logger.info("event=upstream_ready upstream=%s models=%s", replica.url, ",".join(models))
            replica.ready = True
        elif came_back:
            logger.warning("event=upstream_restarted upstream=%s", replica.url)
        if self.on_healthy is not None:
            self.on_healthy(replica, came_back)

    async def _scrape(self, replica: Replica, timeout: aiohttp.ClientTimeout) -> EngineLoad | None:
        """vLLM's queue gauges from the replica's ``/metrics``; ``None`` when it has none (a
        server that is not vLLM) or the scrape failed: routing then uses in-flight counts."""
        try:
            async with self._client.get(f"{replica.url}/metrics", timeout=timeout) as response:
                if response.status != 200:
                    return None
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
            return None
        try:
            return parse_engine_load(text)
        except ValueError as exc:
            logger.debug("event=upstream_metrics_unparsed upstream=%s error=%r", replica.url, exc)
            return None

    def _set_down(self, replica: Replica, reason: str, *, kind: str) -> None:
        self._metrics.upstream_errors.labels(replica.url, kind).inc()
        self._metrics.upstream_ready.labels(replica.url).set(0)
        if replica.ready:
            logger.warning(
                "event=upstream_down upstream=%s kind=%s reason=%r", replica.url, kind, reason
            )
        replica.ready = False
        replica.last_error = reason

    def mark_down(self, replica: Replica, reason: str) -> None:
        """A request could not connect: stop choosing it until a health check passes."""
        self._set_down(replica, reason, kind="connect")

    def note_loaded(self, replica: Replica, served_name: str, *, parent: str) -> None:
        """An adapter was loaded there: route to it before the next health check says so."""
        card = {"id": served_name, "object": "model", "parent": parent}
        replica.models[served_name] = card
        replica.noted[served_name] = (time.monotonic(), card)

    def note_unloaded(self, replica: Replica, served_name: str) -> None:
        replica.models.pop(served_name, None)
        replica.noted[served_name] = (time.monotonic(), None)

    # --- queries -----------------------------------------------------------------------------
    @property
    def any_ready(self) -> bool:
        return any(replica.ready for replica in self.replicas)

    def known_models(self) -> dict[str, dict[str, Any]]:
        """Model cards served by ready replicas, first replica's card winning."""
        cards: dict[str, dict[str, Any]] = {}
        for replica in self.replicas:
            if replica.ready:
                for model, card in replica.models.items():
                    cards.setdefault(model, card)
        return cards

    def candidates(self, model: str) -> list[Replica]:
        """Ready replicas serving ``model``, best first (see ``Replica.rank``); ties rotate."""
        return self._ranked(model)[0]

    def _ranked(self, model: str) -> tuple[list[Replica], str]:
        """Ready replicas serving ``model``, best first, and what decided the first place."""
        ready = [r for r in self.replicas if r.ready and r.serves(model)]
        if len(ready) < 2:
            return ready, "single"
        shift = next(self._rotation) % len(ready)
        ready = ready[shift:] + ready[:shift]
        ready.sort(key=Replica.rank)  # stable: the rotation breaks ties
        best, runner_up = ready[0].rank(), ready[1].rank()
        reason = next(
            (name for name, a, b in zip(_REASONS, best, runner_up, strict=True) if a != b),
            "rotation",
        )
        return ready, reason

    # --- requests ----------------------------------------------------------------------------
    async def open(
        self, path: str, body: bytes, *, model: str, headers: dict[str, str]
    ) -> UpstreamCall:
        """Send a POST to the best replica serving ``model`` and return once headers arrive.

        A replica that refuses the connection (nothing was sent) is marked down and the next
        one is tried (where no other serves the model, ``placer`` may load it on one); one
        that closes the connection before its response began gets the request sent again,
        once; any other transport failure is raised as a gateway error. Replicas at
        ``max_in_flight_per_replica`` are skipped; when all are, the request waits (at most
        ``capacity_wait`` seconds, then 429) rather than piling up inside an engine.
        """
        failed_over = resent = False
        for _ in range(len(self.replicas) + 2):
            replica, reason = await self._choose(model)
            replica.in_flight += 1
            try:
                response = await self._client.post(
                    f"{replica.url}{path}", data=body, headers=headers
                )
            except TransportError as exc:
                self._release(replica)
                if is_connect_failure(exc):
                    self.mark_down(replica, f"{type(exc).__name__}: {exc}")
                    failed_over = True
                    continue
                if is_disconnect(exc) and not resent:
                    # Closed before the response began: a replica that just died (the next
                    # connection to it is refused, so it is marked down) or a kept-alive
                    # connection it had just closed. Sent again once only, so a request that
                    # itself crashes replicas takes down two at most.
                    self._metrics.upstream_errors.labels(replica.url, "disconnect").inc()
                    logger.warning("event=upstream_disconnected upstream=%s resent=1", replica.url)
                    failed_over = resent = True
                    continue
                self._metrics.upstream_errors.labels(replica.url, type(exc).__name__).inc()
                raise from_transport(exc) from exc
            except BaseException:  # cancelled (the client left): the replica is not held
                self._release(replica)
                raise
            replica.answered_at = time.monotonic()
            self._metrics.route("failover" if failed_over else reason)
            return UpstreamCall(replica, response, self._metrics, self._release)
        raise NoReadyUpstream(f"no ready model server serves '{model}'")

    async def _choose(self, model: str) -> tuple[Replica, str]:
        """The replica for one attempt and why; waits for a free slot, loads on demand."""
        if self.policy == "round_robin":
            chosen = await self._next_in_turn(model)
            if chosen is not None:
                return chosen, "round_robin"
        ranked, reason = self._ranked(model)
        if not ranked and self.placer is not None and await self.placer(model, None):
            ranked, reason = self._ranked(model)[0], "placed"
        if not ranked:
            raise NoReadyUpstream(f"no ready model server serves '{model}'")
        free = [r for r in ranked if r.in_flight < self.max_in_flight_per_replica]
        if not free:
            free = await self._wait_for_capacity(model)
        return free[0], reason if free[0] is ranked[0] else "capacity"

    async def _next_in_turn(self, model: str) -> Replica | None:
        """``round_robin``: the next ready replica in turn, made to serve ``model`` if it does
        not (the baseline adapter-aware routing is measured against)."""
        ready = [r for r in self.replicas if r.ready]
        if not ready:
            return None
        replica = ready[next(self._rotation) % len(ready)]
        if replica.in_flight >= self.max_in_flight_per_replica:
            return None
        if replica.serves(model) or (self.placer is not None and await self.placer(model, replica)):
            return replica
        return None

    async def _wait_for_capacity(self, model: str) -> list[Replica]:
        """Ready replicas serving ``model`` with a free slot, once there is one; 429 past the
        wait."""
        deadline = time.monotonic() + self._capacity_wait
        while True:
            free = [
                r for r in self.candidates(model) if r.in_flight < self.max_in_flight_per_replica
            ]
            if free:
                return free
            if not self.candidates(model):
                raise NoReadyUpstream(f"no ready model server serves '{model}'")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._metrics.admission_rejected.labels("replica_full").inc()
                raise RateLimited(
                    f"Every replica serving '{model}' has {self.max_in_flight_per_replica} "
                    "requests in flight; retry after 1s.",
                    limit="requests",
                    retry_after=1,
                )
            if self._freed is None or self._freed.done():
                self._freed = asyncio.get_running_loop().create_future()
            await asyncio.wait({self._freed}, timeout=remaining)  # never cancels the future

    def _release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        if self._freed is not None and not self._freed.done():
            self._freed.set_result(None)
