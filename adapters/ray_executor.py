"""Training on a Ray cluster: the job runs where the cluster has the resources it asks for.

``RayExecutor`` asks the cluster at ``address`` for one actor per job with the job's resource
request (CPUs, GPUs, memory; Ray places it on a node that has them). The actor
(``RemoteTrainer``) writes the dataset it was sent into a scratch folder on its node and runs
the same supervised trainer process the local executor runs (``TrainerProcess``: own process
group, niced, parent-death signal, its own deadline); the adapter comes back through Ray's
object store as a tarball, which is unpacked beside ``request.out`` (members checked: no
absolute or escaping paths, no links or devices, a size cap), checked for an
``adapter_config.json`` and renamed into place, so ``request.out`` is complete or absent.

The trainer's lines are polled from the actor (``lines``) into the job's log and ``on_line``
while it trains. A cancel or a deadline kills the actor (``ray.kill``): its worker process
exits and the trainer, bound to it by its parent-death signal, dies with it. The actor is not
detached, so it also dies with the gateway that asked for it.

Why an actor and not a streaming-generator task: Ray Client (``ray://``, how a gateway outside
the cluster reaches KubeRay's head) does not carry generator tasks; actors work over both Ray
Client and a driver on a cluster node. Every node needs tuneloop installed (the chart's Ray
pods run the gateway's image). ``ray`` is imported only when this executor is used.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from adapters.executors import TrainingFailed
from adapters.trainer_process import TrainerProcess, TrainRequest

__all__ = ["RayExecutor", "RayResources", "RemoteTrainer", "unpack_adapter"]

logger = logging.getLogger("tuneloop.trainer")

MAX_ADAPTER_BYTES = 4 * 1024**3  # unpacked; a LoRA of a small model is megabytes
NAMESPACE = "tuneloop"


@dataclass(frozen=True, slots=True)
class RayResources:
    """What one training job asks the cluster for (Ray's ``num_cpus``, ``num_gpus``,
    ``memory`` in bytes; ``None``: Ray's default for an actor)."""

    num_cpus: float = 1
    num_gpus: float = 0
    memory: int | None = None

    def options(self) -> dict[str, Any]:
        found: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory is not None:
            found["memory"] = self.memory
        return found


class RemoteTrainer:
    """The Ray actor that trains one job on its node (an async actor: ``lines`` answers while
    ``train`` runs)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    async def train(self, data: bytes, request: TrainRequest, timeout: float, nice: int) -> bytes:
        """Train on ``data`` (the dataset's bytes) as ``request`` says; the adapter folder as a
        gzipped tarball. ``request``'s paths are replaced by scratch paths on this node."""
        with tempfile.TemporaryDirectory(prefix="tuneloop-ray-") as scratch:
            root = Path(scratch)
            (root / "data.jsonl").write_bytes(data)
            local = replace(request, data=root / "data.jsonl", out=root / "adapter")
            trainer = TrainerProcess(env=_model_env())
            code = await trainer.run(
                local, log_path=root / "train.log", timeout=timeout, nice=nice,
                on_line=self._lines.append,
            )  # fmt: skip
            if code != 0:
                tail = "\n".join(self._lines[-5:])
                raise TrainingFailed(f"the trainer exited with {code} on the Ray node:\n{tail}")
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                tar.add(local.out, arcname=".")
            return buffer.getvalue()

    async def lines(self, after: int) -> list[str]:
        """The trainer's lines from number ``after`` on."""
        return self._lines[after:]


def _model_env() -> dict[str, str]:
    """The node's own base model: ``TUNELOOP_MODEL_PATH`` when its environment sets it, else the
    trainer finds the bundled model as on any host."""
    path = os.environ.get("TUNELOOP_MODEL_PATH")
    return {"TUNELOOP_MODEL_PATH": path} if path else {}


def unpack_adapter(blob: bytes, out: Path, *, max_bytes: int = MAX_ADAPTER_BYTES) -> None:
    """Unpack an adapter tarball to ``out`` (which must not exist) through a staging folder
    beside it: complete and checked, or nothing at ``out``."""
    if out.exists():
        raise TrainingFailed(f"{out} already exists")
    staging = out.with_name(f".{out.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            members = tar.getmembers()
            if sum(m.size for m in members) > max_bytes:
                raise TrainingFailed(f"the adapter from Ray unpacks to over {max_bytes} bytes")
            if any(not (m.isfile() or m.isdir()) for m in members):
                raise TrainingFailed("the adapter from Ray holds links or special files")
            tar.extractall(staging, filter="data")  # refuses absolute and escaping paths
        if not (staging / "adapter_config.json").is_file():
            raise TrainingFailed("the adapter from Ray has no adapter_config.json")
        staging.rename(out)
    except (tarfile.TarError, OSError) as exc:
        raise TrainingFailed(f"the adapter from Ray cannot be unpacked: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class RayExecutor:
    """Train each job as a Ray actor on the cluster at ``address`` (``host:port`` of its GCS,
    ``ray://host:10001`` through Ray Client, or ``auto``)."""

    name = "ray"

    def __init__(
        self,
        address: str,
        *,
        resources: RayResources | None = None,
        nice: int = 10,
        poll: float = 0.5,
        connect_timeout: float = 60.0,
    ) -> None:
        self._address = address
        self._resources = resources or RayResources()
        self._nice = nice
        self._poll = poll
        self._connect_timeout = connect_timeout
        self._connected = threading.Lock()
        self._actor_class: Any = None

    def _connect(self) -> Any:
        """``ray`` connected to the cluster, once per process (Ray's own state is global)."""
        import ray  # an optional dependency: only a gateway that trains on Ray needs it

        with self._connected:
            if not ray.is_initialized():
                try:
                    ray.init(
                        address=self._address, namespace=NAMESPACE, log_to_driver=False,
                        logging_level=logging.WARNING,
                    )  # fmt: skip
                except Exception as exc:  # ConnectionError, RuntimeError, ValueError by version
                    raise TrainingFailed(
                        f"cannot reach the Ray cluster at {self._address}: {exc}"
                    ) from exc
                logger.info("event=ray_connected address=%s", self._address)
            if self._actor_class is None:
                self._actor_class = ray.remote(RemoteTrainer)
        return ray

    def _lines(self, ray: Any, actor: Any, after: int) -> list[str]:
        """The actor's new lines; none yet while Ray is still placing it."""
        try:
            return ray.get(actor.lines.remote(after), timeout=max(5.0, 4 * self._poll))
        except ray.exceptions.GetTimeoutError:
            return []

    async def train(
        self,
        request: TrainRequest,
        *,
        log_path: Path,
        timeout: float,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        ray = await asyncio.wait_for(asyncio.to_thread(self._connect), self._connect_timeout)
        data = await asyncio.to_thread(request.data.read_bytes)
        options = self._resources.options()
        actor = self._actor_class.options(**options).remote()
        result = actor.train.remote(data, request, timeout, self._nice)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout + 30  # the actor's own trainer stops at timeout
        seen = 0
        try:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"[tuneloop] training on Ray at {self._address} with {options}\n")
                while True:
                    ready, _ = await asyncio.to_thread(ray.wait, [result], timeout=self._poll)
                    new = await asyncio.to_thread(self._lines, ray, actor, seen)
                    for line in new:
                        log.write(line + "\n")
                        if on_line is not None:
                            on_line(line)
                    seen += len(new)
                    log.flush()
                    if ready:
                        break
                    if time.monotonic() > deadline:
                        where = "ran past" if seen else "did not start within"
                        raise TimeoutError(
                            f"training on Ray {where} its {timeout:g}s deadline (asked for "
                            f"{options}; log: {log_path})"
                        )
                try:
                    blob = await asyncio.to_thread(ray.get, result)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                    if isinstance(cause, TimeoutError):
                        raise TimeoutError(str(cause)) from exc
                    raise TrainingFailed(str(cause)) from exc
                except ray.exceptions.RayError as exc:  # the actor or its node died
                    raise TrainingFailed(f"the Ray actor training the job died: {exc}") from exc
                log.write(f"[tuneloop] adapter received from Ray: {len(blob)} bytes\n")
            await asyncio.to_thread(unpack_adapter, blob, request.out)
        finally:
            # Done, failed, cancelled or past the deadline: the actor (and with it, by its
            # parent-death signal, any trainer still running) goes.
            await asyncio.shield(asyncio.to_thread(ray.kill, actor, no_restart=True))
