"""``tuneloop serve --workers 2``: two processes on one port, state shared through the database.

- The kernel spreads connections over both workers (each has its own SO_REUSEPORT listener)
  and every accepted connection has TCP_NODELAY set (read from the worker's own socket).
- An alias flipped through one worker is served by the other within a second (real engine).
- SIGTERM stops the parent, the workers and nothing is left behind; a worker that dies is
  replaced.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from gateway.engine import free_port
from tests.helpers import ADMIN_TOKEN, ROOT, http_ok, stub_upstream, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
_SYS_PIDFD_GETFD = 438  # Linux 5.6+, same number on x86_64 and aarch64


def _nodelay(pid: int, fd: int) -> bool:
    """TCP_NODELAY of another process's socket, read through a duplicate of its descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        local = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        assert local >= 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(pidfd)
    with socket.socket(fileno=local) as sock:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@contextmanager
def serve_workers(
    upstream: str, data_dir: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--upstream", upstream, "--workers", "2"],
        cwd=ROOT,
        env={
            **os.environ, "TUNELOOP_PORT": str(port), "TUNELOOP_DATA_DIR": str(data_dir),
            "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_EVAL_SAMPLE_RATE": "0",
            "TUNELOOP_HEALTH_INTERVAL": "1", **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: listening(process, port) == 2, timeout=120, what="two workers")
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for worker in psutil.Process().children(recursive=True):
            if worker.pid != process.pid and "run_worker" in " ".join(worker.cmdline()):
                worker.kill()


def workers_of(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(process.pid).children()


def listening(process: subprocess.Popen[bytes], port: int) -> int:
    """Workers with a listening socket on ``port`` (they listen once their startup is done)."""
    return sum(
        any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
            for c in worker.net_connections("tcp"))
        for worker in workers_of(process)
    )  # fmt: skip


def test_workers_share_the_port_with_nodelay_and_stop_cleanly(tmp_path: Path) -> None:
    with stub_upstream() as stub, serve_workers(stub.url, tmp_path) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(24)]
        try:
            for client in clients:  # one connection each, kept open
                assert client.get("/v1/models").status_code == 200
            accepted = {
                worker.pid: [
                    c.fd for c in worker.net_connections("tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                ]
                for worker in workers_of(process)
            }  # fmt: skip
            assert len(accepted) == 2 and all(accepted.values()), accepted
            assert sum(map(len, accepted.values())) == len(clients)
            assert all(_nodelay(pid, fd) for pid, fds in accepted.items() for fd in fds)
        finally:
            for client in clients:
                client.close()

        # A worker that dies is replaced; the port keeps answering meanwhile.
        victim = workers_of(process)[0]
        victim.kill()
        wait_until(
            lambda: (
                victim.pid not in {w.pid for w in workers_of(process)}
                and len(workers_of(process)) == 2
            ),
            timeout=30,
            what="the worker to be replaced",
        )
        assert http_ok(f"{url}/readyz")

        family = [psutil.Process(process.pid), *workers_of(process)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        time.sleep(0.5)
        assert not [p.pid for p in family if p.is_running() and p.status() != "zombie"]


def test_alias_flipped_through_one_worker_is_served_by_all_within_a_second(
    engine_url: str, trained_adapters: dict[str, Path], adapter_root: Path, tmp_path: Path
) -> None:
    with serve_workers(engine_url, tmp_path, TUNELOOP_ADAPTER_ROOT=str(adapter_root)) as (
        url,
        _process,
    ):
        admin = httpx.Client(base_url=url, headers=ADMIN, timeout=120)
        served = []
        for label in ("v1", "v2"):
            response = admin.post(
                "/admin/adapters", json={"name": "wk", "path": trained_adapters[label].name}
            )
            assert response.status_code == 201, response.text
            served.append(response.json()["served_name"])

        def answered_by(_: int) -> str:
            body = {"model": "wk", "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 1}  # fmt: skip
            with httpx.Client(base_url=url, timeout=120) as fresh:  # a new connection each
                response = fresh.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return response.json()["model"]

        for target in served:
            flipped = admin.put("/admin/aliases/wk", json={"targets": {target: 100}})
            assert flipped.status_code == 200, flipped.text
            time.sleep(1.5)  # the poll interval (1 s) and one sync
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                assert set(pool.map(answered_by, range(16))) == {target}
