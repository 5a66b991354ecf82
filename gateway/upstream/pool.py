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
    TransportError,
    UpstreamError,
    from_transport,
    is_connect_failure,
)
from gateway.metrics import GatewayMetrics

logger = logging.getLogger("tuneloop.upstream")


@dataclass
class Replica:
    """One upstream server as the gateway last saw it."""

    url: str
    ready: bool = False
    in_flight: int = 0
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_error: str | None = None
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
    ) -> None:
        if not urls:
            raise ValueError("an upstream pool needs at least one URL")
        self.replicas = [Replica(url=url) for url in urls]
        self._client = client
        self._metrics = metrics
        self._health_interval = health_interval
        self._health_timeout = health_timeout
        self._rotation = itertools.count()
        self._task: asyncio.Task[None] | None = None
        # Called after every passing health check, with the replica's fresh model list: the
        # adapter service reloads there any adapter it lacks (a restarted vLLM has none).
        self.on_healthy: Callable[[Replica], None] | None = None

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
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError) as exc:
            self._set_down(replica, f"{type(exc).__name__}: {exc}", kind="health")
            return
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
        one is tried; any other transport failure is raised as a gateway error.
        """
        for replica in self.candidates(model):
            replica.in_flight += 1
            try:
                response = await self._client.post(
                    f"{replica.url}{path}", data=body, headers=headers
                )
            except TransportError as exc:
                replica.in_flight -= 1
                if is_connect_failure(exc):
                    self.mark_down(replica, f"{type(exc).__name__}: {exc}")
                    continue
                self._metrics.upstream_errors.labels(replica.url, type(exc).__name__).inc()
                raise from_transport(exc) from exc
            return UpstreamCall(replica, response, self._metrics)
        raise NoReadyUpstream(f"no ready model server serves '{model}'")


class UpstreamCall:
    """One response being read from one replica; ``aclose`` releases the replica once."""

    __slots__ = ("replica", "_response", "_metrics", "_open")

    def __init__(self, replica: Replica, response: aiohttp.ClientResponse, metrics: GatewayMetrics):
        self.replica = replica
        self._response = response
        self._metrics = metrics
        self._open = True

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
        self.replica.in_flight -= 1
        if self._response.content.at_eof():
            self._response.release()  # fully read: the connection goes back to the pool
        else:
            self._response.close()  # abandoned mid-body: drop it so the upstream stops work
