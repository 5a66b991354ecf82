"""While a job trains beside the embedded engine, engine and trainer run on disjoint cores.

Against the session's ``tuneloop serve`` (the only gateway here that starts its own vLLM): a
retrain job of two steps, and the kernel's own account of every thread's allowed cores
(``/proc/<pid>/task/<tid>/status``) while the trainer runs and after it has finished.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from adapters.cores import parse_cpus
from tests.conftest import ServeProcess
from tests.gateway.conftest import JSON_RUBRIC, EvalGateway
from tests.helpers import EXAMPLE_DATA, wait_until

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")


def allowed(pids: list[int]) -> dict[int, frozenset[int]]:
    found = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:  # the thread ended meanwhile
                continue
            line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
            found[int(tid)] = parse_cpus(line.split(":", 1)[1].strip())
    return found


def engine_tree(serve: ServeProcess) -> list[int]:
    """vLLM's processes: the server the gateway started and its engine core."""
    [server] = [p for p in psutil.Process(serve.pid).children() if "vllm" in " ".join(p.cmdline())]
    return [server.pid, *(p.pid for p in server.children(recursive=True))]


def wait_for_trainer(serve: ServeProcess) -> psutil.Process:
    """The trainer once it runs its own code (``python -m gateway train``, after the
    trampoline that bound it to its cores has exec'ed it)."""
    found: list[psutil.Process] = []

    def started() -> bool:
        for child in psutil.Process(serve.pid).children(recursive=True):
            try:
                if child.cmdline()[1:4] == ["-m", "gateway", "train"]:
                    found.append(child)
                    return True
            except (psutil.Error, IndexError):
                continue
        return False

    wait_until(started, timeout=300, what="the trainer to start", interval=0.1)
    return found[0]


def test_engine_and_trainer_get_disjoint_cores_while_a_job_trains(
    serve: ServeProcess, trained_adapters: dict[str, Path]
) -> None:
    gw = EvalGateway(serve.gateway_url)
    assert gw.call("POST", "/admin/datasets/coresx?source=extract.jsonl",
                   content=EXAMPLE_DATA.read_bytes()).status_code == 201  # fmt: skip
    gw.point("coresx", gw.register("coresx", trained_adapters["v1"]))
    assert gw.call("PUT", "/admin/rubrics/coresx", content=JSON_RUBRIC).status_code == 200
    engine = engine_tree(serve)
    before = allowed(engine)

    job = gw.call("POST", "/admin/retrain", json={"alias": "coresx", "max_steps": 2}).json()
    trainer = wait_for_trainer(serve)
    trainer_cores = frozenset(trainer.cpu_affinity())
    during = allowed(engine)
    assert trainer.environ().get("OMP_NUM_THREADS") == str(len(trainer_cores))
    engine_cores = frozenset().union(*during.values())
    assert trainer_cores and engine_cores, (trainer_cores, engine_cores)
    assert not trainer_cores & engine_cores, (trainer_cores, engine_cores)

    def trained() -> bool:
        state = gw.call("GET", f"/admin/jobs/{job['id']}").json()["state"]
        assert state != "failed", gw.call("GET", f"/admin/jobs/{job['id']}").json()
        return state not in ("queued", "running")

    wait_until(trained, timeout=600, what="the challenger to be trained", interval=0.5)
    after = allowed(engine)
    common = before.keys() & after.keys()
    assert common and {tid: after[tid] for tid in common} == {tid: before[tid] for tid in common}
    # (The job goes on to its gate and canary; the session's teardown stops it.)
