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
detached, so it also dies with the gateway that asked for it. An actor that Ray placed but
whose trainer never starts (or later goes silent) is killed and replaced, a bounded number of
times (see ``RayExecutor``): a wedged worker costs a minute, not the job's whole deadline.

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
STARTED = "[tuneloop] trainer started on the Ray node"  # the line that says the trainer runs


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
        gzipped tarball. ``request``'s paths are replaced by scratch paths on this node.

        The work runs in a thread of its own, so whatever happens to it (a spawn that wedges)
        never blocks the actor's event loop: ``lines`` keeps answering, and the executor can
        tell a silent trainer from an actor Ray has not placed yet."""
        return await asyncio.to_thread(self._train, data, request, timeout, nice)

    def _train(self, data: bytes, request: TrainRequest, timeout: float, nice: int) -> bytes:
        with tempfile.TemporaryDirectory(prefix="tuneloop-ray-") as scratch:
            root = Path(scratch)
            (root / "data.jsonl").write_bytes(data)
            local = replace(request, data=root / "data.jsonl", out=root / "adapter")
            trainer = TrainerProcess(env=_model_env())
            code = asyncio.run(
                trainer.run(
                    local, log_path=root / "train.log", timeout=timeout, nice=nice,
                    on_line=self._lines.append,
                    on_start=lambda pid: self._lines.append(f"{STARTED} (pid {pid})"),
                )
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


def _done(ray: Any, ref: Any) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)


class _Stalled(Exception):
    """An actor that was placed but whose trainer did not start, or went silent."""


class RayExecutor:
    """Train each job as a Ray actor on the cluster at ``address`` (``host:port`` of its GCS,
    ``ray://host:10001`` through Ray Client, or ``auto``).

    A job waits for a node with its resources for as long as its deadline allows (a cluster may
    be scaling up). Once the actor is placed its trainer must start within ``start_timeout``
    seconds and then never stay silent for ``stall_timeout``; an actor that does not is killed
    and the job is tried again on a fresh one, up to ``attempts`` times in all (as Ray Train's
    ``FailureConfig(max_failures)`` retries a failed worker), all within the one deadline.
    ``actor`` is the actor's class (tests substitute one that misbehaves).
    """

    name = "ray"

    def __init__(
        self,
        address: str,
        *,
        resources: RayResources | None = None,
        nice: int = 10,
        poll: float = 0.5,
        connect_timeout: float = 60.0,
        start_timeout: float = 60.0,
        stall_timeout: float = 600.0,
        attempts: int = 2,
        actor: type[RemoteTrainer] = RemoteTrainer,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._address = address
        self._resources = resources or RayResources()
        self._nice = nice
        self._poll = poll
        self._connect_timeout = connect_timeout
        self._start_timeout = start_timeout
        self._stall_timeout = stall_timeout
        self._attempts = attempts
        self._actor = actor
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
                self._actor_class = ray.remote(self._actor)
        return ray

    def _lines(self, ray: Any, actor: Any, after: int) -> list[str] | None:
        """The actor's new lines; None while Ray is still placing it or it does not answer."""
        try:
            return ray.get(actor.lines.remote(after), timeout=max(5.0, 4 * self._poll))
        except ray.exceptions.GetTimeoutError:
            return None

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
        deadline = time.monotonic() + timeout + 30  # the actor's own trainer stops at timeout
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            for attempt in range(1, self._attempts + 1):
                try:
                    blob = await self._attempt(
                        ray, data, request, timeout=timeout, deadline=deadline, log=log,
                        on_line=on_line,
                    )  # fmt: skip
                    break
                except _Stalled as exc:
                    log.write(f"[tuneloop] {exc} (attempt {attempt} of {self._attempts})\n")
                    log.flush()
                    logger.warning(
                        "event=ray_trainer_stalled attempt=%d of=%d reason=%r",
                        attempt, self._attempts, str(exc),
                    )  # fmt: skip
                    if attempt == self._attempts:
                        raise TrainingFailed(f"training on Ray failed: {exc}") from None
            log.write(f"[tuneloop] adapter received from Ray: {len(blob)} bytes\n")
        await asyncio.to_thread(unpack_adapter, blob, request.out)

    async def _attempt(
        self,
        ray: Any,
        data: bytes,
        request: TrainRequest,
        *,
        timeout: float,
        deadline: float,
        log: Any,
        on_line: Callable[[str], None] | None,
    ) -> bytes:
        """One actor's try at the job: the adapter's tarball, or ``_Stalled`` (actor killed)."""
        options = self._resources.options()
        actor = self._actor_class.options(**options).remote()
        created = actor.__ray_ready__.remote()  # answers once Ray has placed the actor
        result = actor.train.remote(data, request, timeout, self._nice)
        log.write(f"[tuneloop] training on Ray at {self._address} with {options}\n")
        seen, placed_at, heard_at, started = 0, None, time.monotonic(), False
        try:
            while True:
                ready, _ = await asyncio.to_thread(ray.wait, [result], timeout=self._poll)
                new = await asyncio.to_thread(self._lines, ray, actor, seen)
                now = time.monotonic()
                if placed_at is None and (new is not None or _done(ray, created)):
                    placed_at = heard_at = now
                for line in new or ():
                    started = started or line.startswith(STARTED)
                    log.write(line + "\n")
                    if on_line is not None:
                        on_line(line)
                if new:
                    seen, heard_at = seen + len(new), now
                log.flush()
                if ready:
                    break
                if now > deadline:
                    where = "ran past" if started else "did not start within"
                    raise TimeoutError(
                        f"training on Ray {where} its {timeout:g}s deadline (asked for "
                        f"{options}; log: {log.name})"
                    )
                if placed_at is not None and not started and now - placed_at > self._start_timeout:
                    raise _Stalled(
                        f"the Ray actor was placed but its trainer did not start within "
                        f"{self._start_timeout:g}s"
                    )
                if started and now - heard_at > self._stall_timeout:
                    raise _Stalled(f"the trainer on Ray was silent for {self._stall_timeout:g}s")
            try:
                return await asyncio.to_thread(ray.get, result)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                if isinstance(cause, TimeoutError):
                    raise TimeoutError(str(cause)) from exc
                raise TrainingFailed(str(cause)) from exc
            except ray.exceptions.RayError as exc:  # the actor or its node died
                raise TrainingFailed(f"the Ray actor training the job died: {exc}") from exc
        finally:
            # Done, failed, stalled, cancelled or past the deadline: the actor (and with it, by
            # its parent-death signal, any trainer still running) goes.
            await asyncio.shield(asyncio.to_thread(ray.kill, actor, no_restart=True))
