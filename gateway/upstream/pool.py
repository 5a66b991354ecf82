"""A pool of vLLM OpenAI servers: health checks, least-in-flight choice, failover bookkeeping.

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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.exceptions import (
    NoReadyUpstream,
    RateLimited,
    TransportError,
    UpstreamError,
    from_transport,
    is_connect_failure,
)
from gateway.metrics import GatewayMetrics

logger = logging.getLogger("tuneloop.upstream")

SLOW_CHECKS_TO_DOWN = 3  # consecutive timed-out health checks before a replica is marked down


@dataclass
class Replica:
    """One upstream server as the gateway last saw it."""

    url: str
    ready: bool = False
    in_flight: int = 0
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_error: str | None = None
    slow_checks: int = 0  # consecutive health checks that timed out
    # Loads/unloads the gateway made itself: name -> (when, card or None for unloaded). A
    # health check that began before one of them must not undo it with a stale listing.
    noted: dict[str, tuple[float, dict[str, Any] | None]] = field(default_factory=dict)

    def serves(self, model: str) -> bool:
        return model in self.models


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
        # Resolved (and replaced) whenever a request releases a replica while others wait.
        self._freed: asyncio.Future[None] | None = None
        self._rotation = itertools.count()
        self._task: asyncio.Task[None] | None = None
        # Called after every passing health check, with the replica's fresh model list: the
        # adapter service reloads there any adapter it lacks (a restarted vLLM has none).
        self.on_healthy: Callable[[Replica], None] | None = None

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
        self._metrics.upstream_ready.labels(replica.url).set(1)
        if not replica.ready:
            logger.info("event=upstream_ready upstream=%s models=%s", replica.url, ",".join(models))
            replica.ready = True
        if self.on_healthy is not None:
            self.on_healthy(replica)

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
        """Ready replicas serving ``model``, least in flight first; ties rotate."""
        ready = [r for r in self.replicas if r.ready and r.serves(model)]
        if len(ready) > 1:
            shift = next(self._rotation) % len(ready)
            ready = ready[shift:] + ready[:shift]
            ready.sort(key=lambda r: r.in_flight)  # stable: rotation breaks ties
        return ready

    # --- requests ----------------------------------------------------------------------------
    async def open(
        self, path: str, body: bytes, *, model: str, headers: dict[str, str]
    ) -> UpstreamCall:
        """Send a POST to the best replica serving ``model`` and return once headers arrive.

        A replica that refuses the connection (nothing was sent) is marked down and the next
        one is tried; any other transport failure is raised as a gateway error. Replicas at
        ``max_in_flight_per_replica`` are skipped; when all are, the request waits (at most
        ``capacity_wait`` seconds, then 429) rather than piling up inside an engine.
        """
        candidates = self.candidates(model)
        if candidates and candidates[0].in_flight >= self.max_in_flight_per_replica:
            candidates = await self._wait_for_capacity(model)
        for replica in candidates:
            if replica.in_flight >= self.max_in_flight_per_replica:
                continue
            replica.in_flight += 1
            try:
                response = await self._client.post(
                    f"{replica.url}{path}", data=body, headers=headers
                )
            except TransportError as exc:
                self._release(replica)
                if is_connect_failure(exc):
                    self.mark_down(replica, f"{type(exc).__name__}: {exc}")
                    continue
                self._metrics.upstream_errors.labels(replica.url, type(exc).__name__).inc()
                raise from_transport(exc) from exc
            except BaseException:  # cancelled (the client left): the replica is not held
                self._release(replica)
                raise
            return UpstreamCall(replica, response, self._metrics, self._release)
        raise NoReadyUpstream(f"no ready model server serves '{model}'")

    async def _wait_for_capacity(self, model: str) -> list[Replica]:
        """Ready replicas serving ``model`` once one has a free slot; 429 past the wait."""
        deadline = time.monotonic() + self._capacity_wait
        while True:
            candidates = self.candidates(model)
            if not candidates or candidates[0].in_flight < self.max_in_flight_per_replica:
                return candidates
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


class UpstreamCall:
    """One response being read from one replica; ``aclose`` releases the replica once."""

    __slots__ = ("replica", "_response", "_metrics", "_open", "_release")

    def __init__(
        self,
        replica: Replica,
        response: aiohttp.ClientResponse,
        metrics: GatewayMetrics,
        release: Callable[[Replica], None],
    ):
        self.replica = replica
        self._response = response
        self._metrics = metrics
        self._open = True
        self._release = release

    @property
    def status(self) -> int:
        return self._response.status

    async def read(self) -> bytes:
        """The whole body; a transport failure is raised as the matching gateway error."""
        try:
            return await self._response.read()
        except TransportError as exc:
            raise self._failed(exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; a transport failure is raised as a gateway error."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TransportError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> UpstreamError:
        self._metrics.upstream_errors.labels(self.replica.url, type(exc).__name__).inc()
        return from_transport(exc)

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        self._release(self.replica)
        if self._response.content.at_eof():
            self._response.release()  # fully read: the connection goes back to the pool
        else:
            self._response.close()  # abandoned mid-body: drop it so the upstream stops work
