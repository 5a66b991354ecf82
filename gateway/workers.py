"""``tuneloop serve --workers N``: N gateway processes on one port, supervised by the parent.

Each worker opens its own listening socket with ``SO_REUSEPORT``, so the kernel spreads new
connections across them (a shared, inherited socket leaves that to whichever process wakes
first, and multi-worker uvicorn is known to lose ``TCP_NODELAY`` on such sockets); asyncio
sets ``TCP_NODELAY`` on every accepted connection of a socket it created itself. Workers share
aliases, adapters, keys and jobs through the database: each polls the registry for changes
(``TUNELOOP_REGISTRY_POLL_INTERVAL``) and scheduled jobs take a lease row, so one runs them.

The parent starts the workers (and, without upstreams, the embedded engine before them),
restarts a worker that dies, supervises the engine, and on SIGTERM stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque

import aiohttp

from gateway.engine import EmbeddedEngine, die_with_parent
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from gateway.supervisor import EngineSupervisor, SupervisorConfig

logger = logging.getLogger("tuneloop.workers")

WORKER_RESTARTS = 5  # within WORKER_WINDOW seconds; one more and the parent gives up
WORKER_WINDOW = 60.0


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket of this process's own, bound to the port its siblings share.

    Not listening yet: the server starts listening once the app's startup is done, so the
    kernel never hands connections to a worker that cannot answer them (a starting or
    restarting one).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def run_worker() -> None:  # pragma: no cover - runs in a worker process
    """One worker: the whole gateway app on its own ``SO_REUSEPORT`` socket."""
    import uvicorn

    from gateway.app import create_app

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s %(name)s worker={os.getpid()} %(message)s",
        stream=sys.stderr,
        force=True,
    )
    config = uvicorn.Config(
        create_app(settings),
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    uvicorn.Server(config).run(sockets=[bound_socket(settings.host, settings.port)])


class WorkerPool:
    """Start ``count`` worker processes and keep them running until told to stop."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._env = {
            **os.environ,
            "TUNELOOP_HOST": settings.host,
            "TUNELOOP_PORT": str(settings.port),
            "TUNELOOP_UPSTREAMS": ",".join(settings.upstreams),
            "TUNELOOP_WORKERS": "1",
        }
        self._count = count
        self._processes: list[subprocess.Popen[bytes]] = []
        self._restarts: deque[float] = deque()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", "from gateway.workers import run_worker; run_worker()"],
            env=self._env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        logger.info("event=worker_started pid=%d", process.pid)
        return process

    def start(self) -> None:
        self._processes = [self._spawn() for _ in range(self._count)]

    def check(self) -> str | None:
        """Restart workers that exited; the reason to give up when they keep dying."""
        for index, process in enumerate(self._processes):
            code = process.poll()
            if code is None:
                continue
            now = time.monotonic()
            while self._restarts and now - self._restarts[0] > WORKER_WINDOW:
                self._restarts.popleft()
            if len(self._restarts) >= WORKER_RESTARTS:
                return f"workers exited {len(self._restarts) + 1} times in {WORKER_WINDOW:.0f}s"
            self._restarts.append(now)
            logger.warning("event=worker_exited pid=%d code=%s action=restart", process.pid, code)
            self._processes[index] = self._spawn()
        return None

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM every worker (a graceful uvicorn shutdown), SIGKILL what outlives it."""
        for process in self._processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def supervise(settings: Settings, engine: EmbeddedEngine | None) -> str | None:
    """Run the workers (and watch the engine) until SIGTERM/SIGINT; the reason if given up."""
    workers = WorkerPool(settings, settings.workers)
    stop = asyncio.Event()
    lost: list[str] = []
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def give_up(reason: str) -> None:
        lost.append(reason)
        stop.set()

    workers.start()
    logger.info(
        "event=workers_running count=%d port=%d pids=%s",
        settings.workers,
        settings.port,
        ",".join(map(str, workers.pids)),
    )
    async with aiohttp.ClientSession() as client:
        supervisor = None
        if engine is not None:
            supervisor = EngineSupervisor(
                engine,
                client,
                metrics=GatewayMetrics(),  # the parent serves no /metrics: workers do
                on_ready=lambda: asyncio.sleep(0),  # workers' health checks reload adapters
                on_give_up=give_up,
                config=SupervisorConfig.from_settings(settings),
            )
            await supervisor.start()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if not stop.is_set() and (reason := workers.check()) is not None:
                    give_up(reason)
        finally:
            if supervisor is not None:
                await supervisor.close()
            await asyncio.to_thread(workers.stop)
    return lost[0] if lost else None
