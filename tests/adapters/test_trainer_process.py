"""The trainer's supervision with small stand-in scripts (the real trainer is too slow here).

Each test runs a real child process through ``TrainerProcess`` and checks, with psutil, what
the OS says afterwards: the exit code, the log file, the niceness, and that a timeout, a
cancellation or a normal exit leaves nothing of the child's process group alive.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from adapters.trainer_process import DEFAULT_COMMAND, TrainerProcess, TrainRequest

# Prints its pid and the pid of a grandchild it spawns, then waits for ever.
SPAWNS_AND_HANGS = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("pids", os.getpid(), child.pid, flush=True)
time.sleep(120)
"""


def request(tmp_path: Path, **overrides: object) -> TrainRequest:
    fields: dict[str, object] = {
        "data": tmp_path / "data.jsonl", "out": tmp_path / "adapter",
        "max_steps": 5, "eval_every": 2, "seed": 7,
    }  # fmt: skip
    fields.update(overrides)
    return TrainRequest(**fields)  # type: ignore[arg-type]


def script(source: str) -> TrainerProcess:
    return TrainerProcess((sys.executable, "-c", source), poll_interval=0.05)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_all_gone(pids: list[int], *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            alive = [pid for pid in pids if not gone(pid)]
            for pid in alive:  # leave no orphan behind a failing test either
                psutil.Process(pid).kill()
            raise AssertionError(f"still alive: {alive}")
        time.sleep(0.05)


def pids_from(lines: list[str]) -> list[int]:
    for line in lines:
        if line.startswith("pids "):
            return [int(p) for p in line.split()[1:]]
    raise AssertionError(f"the script printed no pids: {lines}")


def test_exit_code_is_returned_and_output_appended_to_the_log(tmp_path: Path) -> None:
    source = (
        "import os, sys; print('argv', *sys.argv[1:]); "
        "print('model', os.environ.get('TUNELOOP_MODEL_PATH')); "
        "print('oops', file=sys.stderr); sys.exit(3)"
    )
    log = tmp_path / "logs" / "job-1.log"
    log.parent.mkdir()
    log.write_text("earlier run\n")
    lines: list[str] = []
    started: list[int] = []
    req = request(tmp_path, extra_args=("--rank", "16"), model_path=tmp_path / "model")

    code = asyncio.run(
        script(source).run(
            req, log_path=log, timeout=60, on_line=lines.append, on_start=started.append
        )
    )

    assert code == 3
    text = log.read_text()
    assert text.startswith("earlier run\n"), "the log is appended to, never truncated"
    expected_args = (
        f"argv --data {tmp_path / 'data.jsonl'} --out {tmp_path / 'adapter'} "
        "--max-steps 5 --eval-every 2 --seed 7 --rank 16"
    )
    assert expected_args in text and "oops" in text, "stdout and stderr both go to the log"
    assert f"model {tmp_path / 'model'}" in text
    assert "with code 3" in text.splitlines()[-1]
    assert lines == [expected_args, f"model {tmp_path / 'model'}", "oops"]
    assert len(started) == 1 and gone(started[0])


def test_the_trainer_runs_niced(tmp_path: Path) -> None:
    """The child and its own children run at the gateway's niceness + nice from their start."""
    source = (
        "import os, subprocess, sys; print('nice', os.nice(0), flush=True); "
        "subprocess.run([sys.executable, '-c', 'import os; print(\"grandchild\", os.nice(0))'])"
    )
    base = os.getpriority(os.PRIO_PROCESS, 0)
    for nice, expected in ((10, min(19, base + 10)), (0, base)):
        lines: list[str] = []
        log = tmp_path / f"nice-{nice}.log"
        code = asyncio.run(
            script(source).run(
                request(tmp_path), log_path=log, timeout=60, nice=nice, on_line=lines.append
            )
        )
        assert code == 0
        assert lines == [f"nice {expected}", f"grandchild {expected}"], log.read_text()


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    lines: list[str] = []
    log = tmp_path / "t.log"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="deadline"):
        asyncio.run(
            script(SPAWNS_AND_HANGS).run(
                request(tmp_path), log_path=log, timeout=5, on_line=lines.append
            )
        )
    assert time.monotonic() - started < 30
    pids = pids_from(lines)
    assert len(pids) == 2
    assert_all_gone(pids)
    assert "killed after the 5s deadline" in log.read_text().splitlines()[-1]


def test_cancelling_the_run_kills_the_group_and_reraises(tmp_path: Path) -> None:
    lines: list[str] = []
    log = tmp_path / "c.log"

    async def scenario() -> None:
        task = asyncio.create_task(
            script(SPAWNS_AND_HANGS).run(
                request(tmp_path), log_path=log, timeout=120, on_line=lines.append
            )
        )
        deadline = time.monotonic() + 30
        while not any(line.startswith("pids ") for line in lines):
            assert time.monotonic() < deadline, log.read_text()
            assert not task.done(), log.read_text()
            await asyncio.sleep(0.05)
        assert not any(gone(pid) for pid in pids_from(lines)), "both run before the cancel"
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scenario())
    assert_all_gone(pids_from(lines))
    assert "killed: cancelled" in log.read_text().splitlines()[-1]


def test_what_the_trainer_leaves_behind_is_killed_after_it_exits(tmp_path: Path) -> None:
    """A normal exit returns at once, even while a leftover grandchild still runs."""
    source = (
        "import os, subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print('pids', os.getpid(), child.pid, flush=True)"
    )
    lines: list[str] = []
    started = time.monotonic()
    code = asyncio.run(
        script(source).run(
            request(tmp_path), log_path=tmp_path / "l.log", timeout=60, on_line=lines.append
        )
    )
    assert code == 0 and time.monotonic() - started < 30
    assert_all_gone(pids_from(lines))


def test_a_failing_line_callback_does_not_stop_the_run(tmp_path: Path) -> None:
    seen: list[str] = []

    def flaky(line: str) -> None:
        seen.append(line)
        raise RuntimeError("observer bug")

    code = asyncio.run(
        script("print('a'); print('b')").run(
            request(tmp_path), log_path=tmp_path / "f.log", timeout=60, on_line=flaky
        )
    )
    assert code == 0 and seen == ["a", "b"]


def test_the_default_command_is_the_gateway_trainer(tmp_path: Path) -> None:
    trainer = TrainerProcess()
    assert trainer.command == DEFAULT_COMMAND == (sys.executable, "-m", "gateway", "train")
    command = trainer.command_line(request(tmp_path))
    assert command == [
        sys.executable, "-m", "gateway", "train",
        "--data", str(tmp_path / "data.jsonl"), "--out", str(tmp_path / "adapter"),
        "--max-steps", "5", "--eval-every", "2", "--seed", "7",
    ]  # fmt: skip
    argv = trainer.argv(request(tmp_path), nice=10, cpus=frozenset({1, 0}), deadline=7.2)
    assert argv[:2] == [sys.executable, "-c"] and argv[3:] == ["10", "0,1", "8", *command]


def test_the_trainer_is_bound_to_the_cores_it_is_given(tmp_path: Path) -> None:
    """What a job gets while the engine keeps its own cores: an affinity and a thread count."""
    core = max(os.sched_getaffinity(0))
    lines: list[str] = []
    code = asyncio.run(
        script(
            "import os; print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'])"
        ).run(
            request(tmp_path),
            log_path=tmp_path / "c.log",
            timeout=60,
            cpus=frozenset({core}),
            on_line=lines.append,
        )  # fmt: skip
    )
    assert code == 0 and lines == [f"[{core}] 1"]
    assert f"cpus {core})" in (tmp_path / "c.log").read_text()


def test_the_trainer_dies_with_the_gateway(tmp_path: Path) -> None:
    """A gateway killed by SIGKILL runs no cleanup: the parent-death signal ends the trainer."""
    supervisor = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
from adapters.trainer_process import TrainerProcess, TrainRequest
from pathlib import Path
hang = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(120)"
trainer = TrainerProcess((sys.executable, "-c", hang))
request = TrainRequest(data=Path("d"), out=Path("o"), max_steps=1, eval_every=1, seed=0)
asyncio.run(trainer.run(request, log_path=Path({str(tmp_path / "t.log")!r}), timeout=120,
                        on_line=lambda line: print(line, flush=True)))
"""
    gateway = subprocess.Popen(
        [sys.executable, "-c", supervisor], stdout=subprocess.PIPE, text=True
    )
    try:
        assert gateway.stdout is not None
        line = gateway.stdout.readline()
        assert line.startswith("pid "), line
        trainer_pid = int(line.split()[1])
        assert not gone(trainer_pid)
    finally:
        gateway.kill()
        gateway.wait()
    assert_all_gone([trainer_pid])


def test_the_trainer_enforces_its_own_deadline(tmp_path: Path) -> None:
    """Even with no supervisor watching, the trainer's alarm ends it after its deadline."""
    trainer = script("import time; time.sleep(60)")
    began = time.monotonic()
    done = subprocess.run(trainer.argv(request(tmp_path), nice=0, deadline=1), timeout=30)
    assert done.returncode == -signal.SIGALRM
    assert time.monotonic() - began < 20


def test_bad_requests_and_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_steps"):
        request(tmp_path, max_steps=0)
    with pytest.raises(ValueError, match="eval_every"):
        request(tmp_path, eval_every=0)
    assert request(tmp_path, extra_args=["--rank", "4"]).extra_args == ("--rank", "4")
    trainer = script("pass")
    with pytest.raises(ValueError, match="timeout"):
        asyncio.run(trainer.run(request(tmp_path), log_path=tmp_path / "x.log", timeout=0))
    with pytest.raises(ValueError, match="nice"):
        asyncio.run(trainer.run(request(tmp_path), log_path=tmp_path / "x.log", timeout=5, nice=-5))
    with pytest.raises(ValueError, match="command"):
        TrainerProcess(())
