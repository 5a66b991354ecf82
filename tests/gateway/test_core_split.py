"""While a job trains beside the embedded engine, engine and trainer run on disjoint cores;
an operator's cancel stops the trainer and gives the engine its cores back.

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
    champion = gw.register("coresx", trained_adapters["v1"])
    gw.point("coresx", champion)
    assert gw.call("PUT", "/admin/rubrics/coresx", content=JSON_RUBRIC).status_code == 200
    engine = engine_tree(serve)
    before = allowed(engine)

    # Far more steps than the test waits for: it is cancelled while it trains.
    job = gw.call("POST", "/admin/retrain", json={"alias": "coresx", "max_steps": 500}).json()
    trainer = wait_for_trainer(serve)
    trainer_cores = frozenset(trainer.cpu_affinity())
    during = allowed(engine)
    assert trainer.environ().get("OMP_NUM_THREADS") == str(len(trainer_cores))
    engine_cores = frozenset().union(*during.values())
    assert trainer_cores and engine_cores, (trainer_cores, engine_cores)
    assert not trainer_cores & engine_cores, (trainer_cores, engine_cores)

    # An operator cancels it: the trainer is killed, the engine gets its cores back, the
    # alias is free for the next job and still on its champion.
    cancelled = gw.call("POST", f"/admin/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    trainer.wait(timeout=30)
    assert not trainer.is_running()

    def restored() -> bool:
        after = allowed(engine)
        common = before.keys() & after.keys()
        return bool(common) and {t: after[t] for t in common} == {t: before[t] for t in common}

    wait_until(restored, timeout=30, what="the engine's cores restored after the cancel")
    again = gw.call("POST", f"/admin/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    record = gw.call("GET", f"/admin/jobs/{job['id']}").json()
    assert record["state"] == "cancelled" and record["error"] == "cancelled by an operator"
    aliases = {a["name"]: a["targets"] for a in gw.call("GET", "/admin/aliases").json()["data"]}
    assert aliases["coresx"] == {champion: 100}
