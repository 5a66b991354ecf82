"""The engine/trainer core split, on real processes read back from the kernel.

The "engine" is a child with busy threads, one of them bound to core 0 the way vLLM CPU binds
its OpenMP threads; the trainer is a real child started by ``LocalExecutor``. What the test
reads is what ``/proc/<pid>/task/<tid>/status`` says (``Cpus_allowed_list``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.cores import CorePartition, parse_cpus, plan
from adapters.executors import LocalExecutor, TrainingFailed
from adapters.trainer_process import TrainerProcess, TrainRequest

HOST = frozenset(os.sched_getaffinity(0))
needs_two_cores = pytest.mark.skipif(len(HOST) < 2, reason="a split needs two cores")

# One thread bound to the first core (like vLLM's OpenMP threads), two left floating.
ENGINE = f"""
import os, threading, time
def spin(bind):
    if bind:
        os.sched_setaffinity(0, {{{min(HOST)}}})
    while True:
        time.sleep(0.01)
for bind in (True, False, False):
    threading.Thread(target=spin, args=(bind,), daemon=True).start()
print("ready", flush=True)
time.sleep(300)
"""


def allowed(pid: int) -> dict[int, frozenset[int]]:
    """Every thread's allowed cores, as the kernel reports them."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
        found[int(tid)] = parse_cpus(line.split(":", 1)[1].strip())
    return found


@pytest.fixture
def engine() -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-c", ENGINE], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    yield process.pid
    process.kill()
    process.wait()


def test_core_lists_parse_and_bad_ones_are_refused() -> None:
    assert parse_cpus("0,2-3, 5") == {0, 2, 3, 5}
    for bad in ("", "a", "3-1", "1-x"):
        with pytest.raises(ValueError):
            parse_cpus(bad)


def test_the_plan_keeps_the_engine_on_its_bound_cores() -> None:
    four = frozenset(range(4))
    assert plan(four, frozenset({0}), None) == plan(four, frozenset(), frozenset({1, 2, 3}))
    split = plan(four, frozenset({0}), None)
    assert split is not None and split.engine == {0} and split.trainer == {1, 2, 3}
    unbound = plan(four, frozenset(), None)
    assert unbound is not None and unbound.engine == {0, 1} and unbound.trainer == {2, 3}
    assert plan(frozenset({0}), frozenset(), None) is None  # one core: nothing to split
    assert plan(four, frozenset(), four) is None  # the trainer may not take every core


@needs_two_cores
def test_while_a_job_trains_engine_and_trainer_cores_are_disjoint_and_restored_after(
    engine: int, tmp_path: Path
) -> None:
    before = allowed(engine)
    assert len(set(before.values())) == 2  # one bound thread, the rest on every core
    during: dict[int, frozenset[int]] = {}
    trainer_cores: list[frozenset[int]] = []

    def on_line(line: str) -> None:  # the trainer prints its cores; the engine is read meanwhile
        trainer_cores.append(parse_cpus(line))
        during.update(allowed(engine))

    executor = LocalExecutor(
        TrainerProcess(
            (sys.executable, "-c",
             "import os; print(','.join(map(str, sorted(os.sched_getaffinity(0)))), flush=True);"
             "import time; time.sleep(0.5)"),
            poll_interval=0.05,
        ),
        partition=CorePartition(lambda: [engine]),
    )  # fmt: skip
    request = TrainRequest(data=tmp_path / "d", out=tmp_path / "o", max_steps=1, eval_every=1,
                           seed=0)  # fmt: skip
    asyncio.run(executor.train(request, log_path=tmp_path / "job.log", timeout=60, on_line=on_line))

    [trainer] = trainer_cores
    engine_cores = frozenset().union(*during.values())
    assert engine_cores == {min(HOST)} and trainer == HOST - {min(HOST)}
    assert not engine_cores & trainer
    assert allowed(engine) == before  # every engine thread is back where it was


@needs_two_cores
def test_a_failed_training_still_restores_the_engine(engine: int, tmp_path: Path) -> None:
    before = allowed(engine)
    executor = LocalExecutor(
        TrainerProcess((sys.executable, "-c", "raise SystemExit(3)")),
        partition=CorePartition(lambda: [engine], trainer_cpus=frozenset({max(HOST)})),
    )
    request = TrainRequest(data=tmp_path / "d", out=tmp_path / "o", max_steps=1, eval_every=1,
                           seed=0)  # fmt: skip
    with pytest.raises(TrainingFailed, match="exited with 3"):
        asyncio.run(executor.train(request, log_path=tmp_path / "job.log", timeout=60))
    assert allowed(engine) == before
