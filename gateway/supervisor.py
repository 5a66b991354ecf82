"""Keeps the embedded engine alive: restarted with backoff when it exits or stops answering.

While it is down the pool's health checks mark the replica down, so clients get 503; once it
answers again the pool is checked at once, which reloads the adapters it lost (the adapter
service's reconciliation). Too many restarts within a window means something a restart does
not fix: the supervisor gives up and asks the server to exit non-zero, so systemd or
Kubernetes take over (Kubernetes' restart policy, vLLM's own engine-core handling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import aiohttp

from gateway.engine import EmbeddedEngine, EngineFailed
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings

logger = logging.getLogger("tuneloop.engine")


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """How the embedded engine is watched and restarted."""

    check_interval: float = 2.0  # seconds between liveness checks
    health_timeout: float = 2.0  # seconds one /health probe may take
    unhealthy_seconds: float = 60.0  # restart when /health has not answered for this long
    max_restarts: int = 5  # within restart_window; one more and the supervisor gives up
    restart_window: float = 600.0
    backoff_initial: float = 1.0  # seconds before the first restart, doubled each time
    backoff_max: float = 30.0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, check_interval: float | None = None
    ) -> SupervisorConfig:
        """The engine's health and restart settings; ``check_interval`` when given (else the
        default above), the backoff defaults as they are."""
        config = cls(
            health_timeout=settings.health_timeout,
            unhealthy_seconds=settings.engine_unhealthy_seconds,
            max_restarts=settings.engine_max_restarts,
            restart_window=settings.engine_restart_window,
        )
        return config if check_interval is None else replace(config, check_interval=check_interval)


class EngineSupervisor:
    """A background task watching one ``EmbeddedEngine``.

    ``on_ready`` runs after every restart (the app re-checks its pool there);
    ``on_give_up`` is called once, with the reason, when restarts are exhausted.
    """

    def __init__(
        self,
        engine: EmbeddedEngine,
        client: aiohttp.ClientSession,
        *,
        metrics: GatewayMetrics,
        on_ready: Callable[[], Awaitable[None]],
        on_give_up: Callable[[str], None],
        config: SupervisorConfig | None = None,
    ) -> None:
        self._engine = engine
        self._client = client
        self._metrics = metrics
        self._on_ready = on_ready
        self._on_give_up = on_give_up
        self.config = config or SupervisorConfig()
        self._restarts: deque[float] = deque()
        self._task: asyncio.Task[None] | None = None
        self.gave_up: str | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tuneloop-engine-supervisor")

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    @property
    def restarts(self) -> int:
        """Restarts within the current window."""
        return len(self._restarts)

    async def _run(self) -> None:
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.config.check_interval)
            code = self._engine.poll()
            if code is not None:
                reason = "exited"
                detail = f"code={code}"
            elif await self._healthy():
                last_ok = time.monotonic()
                continue
            elif time.monotonic() - last_ok < self.config.unhealthy_seconds:
                continue
            else:
                reason = "unhealthy"
                detail = f"no /health answer for {time.monotonic() - last_ok:.0f}s"
            if not self._may_restart(reason, detail):
                return
            await self._restart(reason, detail)
            last_ok = time.monotonic()

    async def _healthy(self) -> bool:
        timeout = aiohttp.ClientTimeout(total=self.config.health_timeout)
        try:
            async with self._client.get(f"{self._engine.url}/health", timeout=timeout) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    def _may_restart(self, reason: str, detail: str) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self.config.restart_window:
            self._restarts.popleft()
        if len(self._restarts) < self.config.max_restarts:
            return True
        self.gave_up = f"engine {reason} ({detail}) after {len(self._restarts)} restarts"
        logger.error(
            "event=engine_gave_up reason=%s detail=%r restarts=%d window_s=%.0f log=%s",
            reason,
            detail,
            len(self._restarts),
            self.config.restart_window,
            self._engine.log_path,
        )
        self._on_give_up(self.gave_up)
        return False

    async def _restart(self, reason: str, detail: str) -> None:
        self._restarts.append(time.monotonic())
        self._metrics.engine_restarts.labels(reason).inc()
        delay = min(self.config.backoff_max, self.config.backoff_initial * 2 ** (self.restarts - 1))
        logger.warning(
            "event=engine_restarting reason=%s detail=%r attempt=%d backoff_s=%.1f",
            reason,
            detail,
            self.restarts,
            delay,
        )
        began = time.monotonic()
        await asyncio.to_thread(self._engine.stop)
        await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(self._engine.start)
            await asyncio.to_thread(self._engine.wait_ready)
        except (EngineFailed, OSError) as exc:
            # The next check sees it exited (or unhealthy) and counts another restart.
            logger.warning("event=engine_restart_failed reason=%r", str(exc).splitlines()[0])
            return
        except asyncio.CancelledError:
            await asyncio.to_thread(self._engine.stop)  # shutting down mid-restart: no orphan
            raise
        await self._on_ready()
        logger.info(
            "event=engine_restarted reason=%s seconds=%.1f url=%s",
            reason,
            time.monotonic() - began,
            self._engine.url,
        )
