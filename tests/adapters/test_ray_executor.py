"""Training through a real Ray cluster (a head on loopback): the bundled model's adapter is
trained by our trainer on a Ray node, comes back through the object store, and is unpacked
complete; a cancel leaves no trainer running and nothing at the output; a failed training says
why; a hostile tarball is refused and leaves nothing behind."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
import pytest

from adapters.executors import TrainingFailed
from adapters.progress import parse_step_line
from adapters.ray_executor import RayExecutor, RayResources, RemoteTrainer, unpack_adapter
from adapters.trainer_process import TrainRequest
from adapters.validation import validate_adapter_dir
from gateway.settings import Settings
from tests.helpers import EXAMPLE_DATA, ROOT
from tests.ray_cluster import RayHead


def ray_trainers() -> list[psutil.Process]:
    """Trainers running on the Ray node (``-m gateway train`` on a ``tuneloop-ray-`` scratch
    folder)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline[1:4] == ["-m", "gateway", "train"] and "tuneloop-ray-" in " ".join(cmdline):
            found.append(process)
    return found


def request(tmp_path: Path, *, steps: int, data: Path = EXAMPLE_DATA) -> TrainRequest:
    return TrainRequest(data=data, out=tmp_path / "adapter", max_steps=steps, eval_every=2, seed=3)


def test_an_adapter_is_trained_on_ray_and_comes_back_complete(
    ray_address: str, tmp_path: Path, base_settings: Settings
) -> None:
    executor = RayExecutor(ray_address, resources=RayResources(num_cpus=1))
    lines: list[str] = []
    log = tmp_path / "job.log"
    asyncio.run(
        executor.train(request(tmp_path, steps=2), log_path=log, timeout=600, on_line=lines.append)
    )
    out = tmp_path / "adapter"
    base = {base_settings.base_model_path.name}  # trained on the model the engine serves
    info = validate_adapter_dir(tmp_path, out, base_model_names=base, max_rank=64)
    assert info.rank > 0 and (out / "adapter_model.safetensors").is_file()
    steps = [p for p in map(parse_step_line, lines) if p is not None]
    assert [p.step for p in steps] == [1, 2], lines[-10:]  # streamed while it trained
    text = log.read_text()
    assert "training on Ray at" in text and "adapter received from Ray" in text
    assert sum(line.startswith("tuneloop-step ") for line in text.splitlines()) == 2
    assert not list(tmp_path.glob(".adapter.*")), "no staging folder left behind"


CLIENT_SCRIPT = """
import asyncio, sys
from pathlib import Path
from adapters.ray_executor import RayExecutor
from adapters.trainer_process import TrainRequest
address, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
request = TrainRequest(data=data, out=out, max_steps=1, eval_every=1, seed=1)
lines = []
asyncio.run(RayExecutor(address).train(request, log_path=out.with_suffix(".log"), timeout=300,
                                       on_line=lines.append))
print("lines", len(lines))
"""


def test_a_gateway_outside_the_cluster_trains_through_ray_client(
    ray_head: RayHead, tmp_path: Path
) -> None:
    """How a gateway pod reaches KubeRay's head: ``ray://`` (its own process: a process holds
    one Ray connection, and this one is a driver on the head's node)."""
    out = tmp_path / "adapter"
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, ray_head.client_address, str(EXAMPLE_DATA),
         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    client_logs = ray_head.logs("ray_client_server*")  # why Ray's client server failed, if it did
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:] + client_logs
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert int(result.stdout.split("lines")[-1]) > 0, "the trainer's lines came through"
    assert "training on Ray at ray://" in out.with_suffix(".log").read_text()


def test_a_cancelled_ray_job_leaves_no_trainer_and_no_adapter(
    ray_address: str, tmp_path: Path
) -> None:
    executor = RayExecutor(ray_address)
    first_step = asyncio.Event()

    def on_line(line: str) -> None:
        if parse_step_line(line) is not None:
            first_step.set()

    async def run() -> None:
        job = asyncio.create_task(
            executor.train(request(tmp_path, steps=500), log_path=tmp_path / "job.log",
                           timeout=600, on_line=on_line)
        )  # fmt: skip
        await asyncio.wait_for(first_step.wait(), timeout=300)
        assert ray_trainers(), "the trainer runs on the Ray node"
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    before = {p.pid for p in ray_trainers()}
    asyncio.run(run())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [p for p in ray_trainers() if p.pid not in before]
        if not left:
            break
        time.sleep(0.2)
    assert not left, "the trainer outlived the cancel"
    assert not (tmp_path / "adapter").exists()


def test_a_failed_training_on_ray_says_why(ray_address: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "not a conversation"}\n')
    with pytest.raises(TrainingFailed, match="exited with .* on the Ray node"):
        asyncio.run(
            RayExecutor(ray_address).train(
                request(tmp_path, steps=2, data=bad), log_path=tmp_path / "job.log", timeout=300
            )
        )
    assert not (tmp_path / "adapter").exists()


def stalling_trainer(marker: Path, *, times: int) -> type[RemoteTrainer]:
    """An actor class whose first ``times`` actors never start their trainer (their work
    thread wedged before the spawn); the later ones train. ``marker`` counts them across
    actors."""

    class Stalling(RemoteTrainer):
        def _train(self, data: bytes, request: TrainRequest, timeout: float, nice: int) -> bytes:
            count = int(marker.read_text()) if marker.exists() else 0
            marker.write_text(str(count + 1))
            if count < times:
                time.sleep(3600)
            return super()._train(data, request, timeout, nice)

    return Stalling  # defined in a function: Ray ships it by value to the node


def test_a_wedged_ray_actor_is_replaced_and_the_job_still_trains(
    ray_address: str, tmp_path: Path
) -> None:
    marker = tmp_path / "actors"
    executor = RayExecutor(
        ray_address, start_timeout=5, attempts=2, actor=stalling_trainer(marker, times=1)
    )
    log = tmp_path / "job.log"
    asyncio.run(executor.train(request(tmp_path, steps=1), log_path=log, timeout=300))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert marker.read_text() == "2"  # a second actor trained it
    text = log.read_text()
    assert "trainer did not start within 5s (attempt 1 of 2)" in text
    assert "adapter received from Ray" in text


def test_a_ray_actor_that_never_starts_fails_the_job_clearly(
    ray_address: str, tmp_path: Path
) -> None:
    executor = RayExecutor(
        ray_address, start_timeout=3, attempts=1, actor=stalling_trainer(tmp_path / "n", times=9)
    )
    with pytest.raises(TrainingFailed, match="trainer did not start within 3s"):
        asyncio.run(
            executor.train(request(tmp_path, steps=1), log_path=tmp_path / "job.log", timeout=300)
        )
    assert not (tmp_path / "adapter").exists()


def tarball(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return buffer.getvalue()


def member(name: str, content: bytes = b"{}", kind: bytes = tarfile.REGTYPE) -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(content) if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    return info, content


@pytest.mark.parametrize(
    ("members", "said"),
    [
        ([member("../escape.json")], "cannot be unpacked"),
        ([member("/abs/adapter_config.json")], "cannot be unpacked|no adapter_config"),
        ([member("adapter_config.json"), member("link", kind=tarfile.SYMTYPE)], "links"),
        ([member("weights.bin")], "no adapter_config.json"),
        ([member("adapter_config.json", b"x" * 2048)], "over 1024 bytes"),
    ],
)
def test_a_hostile_adapter_tarball_is_refused_and_leaves_nothing(
    tmp_path: Path, members: list, said: str
) -> None:
    out = tmp_path / "adapters" / "job-1"
    out.parent.mkdir()
    with pytest.raises(TrainingFailed, match=said):
        unpack_adapter(tarball(*members), out, max_bytes=1024)
    assert list(out.parent.iterdir()) == [] and not (tmp_path / "escape.json").exists()
    with pytest.raises(TrainingFailed, match="cannot be unpacked"):
        unpack_adapter(b"not a tarball", out)
