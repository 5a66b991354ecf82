"""A real Ray cluster for the tests: one head node on loopback, started by ``ray start``.

Small on purpose (one core, a 100 MB object store, no dashboard). On a machine with two cores
or more the whole node (raylet, workers, the trainers they start) is bound to the last core,
apart from the one vLLM CPU binds its engine to (the first): the node stands in for the
training box of a real deployment, which never shares the serving engine's cores. The node
gets the prepared base model through ``TUNELOOP_MODEL_PATH``, as a real cluster's nodes get
theirs from their image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.engine import free_port
from gateway.settings import Settings

RAY = Path(sys.executable).with_name("ray")
RAY_CPUS = 1  # the node's CPUs: what a training job may ask for here


def _bound(argv: list[str]) -> list[str]:
    """``argv`` run on the last core of this machine when it has two or more."""
    cores = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if len(cores) < 2 or taskset is None:
        return argv
    return [taskset, "-c", str(cores[-1]), *argv]


def _ray(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> None:
    result = subprocess.run(
        _bound([str(RAY), *args]), capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


@dataclass(frozen=True)
class RayHead:
    address: str  # host:port of its GCS (this process connects there, as a node's driver)
    client_address: str  # ray://host:port of its Ray Client server (from outside a cluster)
    temp: Path  # Ray's temp dir: its session's logs are under session_latest/logs

    def logs(self, pattern: str, *, tail: int = 2000) -> str:
        """The ends of the head's log files matching ``pattern`` (for a failure's message)."""
        found = sorted((self.temp / "session_latest" / "logs").glob(pattern))
        return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-tail:]}" for f in found)


@pytest.fixture(scope="session")
def ray_address(ray_head: RayHead) -> str:
    return ray_head.address


@pytest.fixture(scope="session")
def ray_head(base_settings: Settings) -> Iterator[RayHead]:
    """A running Ray head; stopped (and this process disconnected) after."""
    port, client_port = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "TUNELOOP_MODEL_PATH": str(base_settings.base_model_path),
           "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    _ray(
        "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
        f"--num-cpus={RAY_CPUS}", "--num-gpus=0", "--object-store-memory=100000000",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
        f"--ray-client-server-port={client_port}", env=env,
    )  # fmt: skip
    try:
        yield RayHead(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", Path(temp))
    finally:
        import ray

        ray.shutdown()
        _ray("stop", "--force", env=env)
        shutil.rmtree(temp, ignore_errors=True)
