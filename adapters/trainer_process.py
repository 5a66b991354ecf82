"""The trainer as a supervised OS process: its own process group, niced, logged, with a deadline.

Training never runs in the gateway's event loop (it holds a model in memory and keeps the cores
busy for minutes), so the gateway starts ``python -m gateway train ...`` as a child and awaits
``TrainerProcess.run``. The child:

- gets a session and process group of its own (``start_new_session``), so killing the group
  takes whatever it spawned with it, and a Ctrl-C at the gateway's terminal does not reach it;
- is set up *before* it runs any code, by a short Python trampoline that then ``exec``s the
  real command (no ``preexec_fn``, which is unsafe in a process with threads): niced, so no
  thread of the trainer ever runs at the gateway's priority; bound to its own CPUs when the
  caller gives some (``cpus``: the cores the engine does not use while the job trains, see
  ``adapters.cores``), with ``OMP_NUM_THREADS`` set to match so torch does not start threads
  that fight over one core; given a parent-death signal (``PR_SET_PDEATHSIG``: SIGKILL when the
  gateway dies, even by SIGKILL); and an alarm for its own deadline (an ``alarm`` survives
  ``exec``), so a trainer whose supervisor is gone still stops on time;
- writes stdout and stderr straight into its log file (appended), so the log survives whatever
  happens to the gateway; ``on_line`` callers get the lines by a tail of that file;
- is killed with its whole group (SIGKILL) when the deadline passes (``TimeoutError``) or when
  the awaiting task is cancelled (``CancelledError`` re-raised): no orphan. The trainer stages
  its output and renames it into place, so a kill never leaves a half-written adapter.

This module never imports ``gateway``: running ``-m gateway`` is a command line, not an import,
and the command is a constructor argument so tests can substitute a small script.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger("tuneloop.trainer")

DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "gateway", "train")
MODEL_PATH_ENV = "TUNELOOP_MODEL_PATH"
_DEADLINE_GRACE = 5.0  # the trainer's own alarm rings this long after the supervisor's deadline
# argv: nice, cpus ("" or "0,2"), deadline seconds (0: none), then the real command.
_TRAMPOLINE = """\
import ctypes, os, signal, sys
nice, cpus, deadline, argv = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the gateway
except (OSError, AttributeError):
    pass
if os.getppid() == 1:
    sys.exit("the gateway that started this trainer is gone")
if nice:
    os.nice(nice)
if cpus:
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
if deadline:
    signal.alarm(deadline)  # kept across exec; SIGALRM's default action ends the trainer
os.execvp(argv[0], argv)
"""


@dataclass(frozen=True)
class TrainRequest:
    """One training run: the trainer's options, checked on construction."""

    data: Path = field(metadata={"help": "Chat-format JSONL the adapter is trained on."})
    out: Path = field(metadata={"help": "Folder the adapter is written to (must not exist)."})
    max_steps: int = field(metadata={"help": "Stop after this many optimizer steps (>= 1)."})
    eval_every: int = field(
        metadata={"help": "Steps between validation passes; early stopping uses them (>= 1)."}
    )
    seed: int = field(metadata={"help": "Seed for the split, shuffling and initialisation."})
    extra_args: tuple[str, ...] = field(
        default=(), metadata={"help": "More trainer options, e.g. ('--rank', '16')."}
    )
    model_path: Path | None = field(
        default=None,
        metadata={"help": f"Base model folder, passed as {MODEL_PATH_ENV}; None: the default."},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        if self.model_path is not None:
            object.__setattr__(self, "model_path", Path(self.model_path))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, not {self.max_steps}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, not {self.eval_every}")
        if not all(isinstance(arg, str) for arg in self.extra_args):
            raise ValueError("extra_args must be strings")

    def args(self) -> list[str]:
        """The trainer's command-line options for this request."""
        return [
            "--data", str(self.data), "--out", str(self.out),
            "--max-steps", str(self.max_steps), "--eval-every", str(self.eval_every),
            "--seed", str(self.seed), *self.extra_args,
        ]  # fmt: skip


class TrainerProcess:
    """Start the trainer as a child process and watch it until it exits, times out or is cancelled.

    ``command`` is the trainer's command line without options (default: this interpreter's
    ``-m gateway train``); ``env`` adds environment variables over the gateway's own; ``cwd``
    is the child's working folder (default: the gateway's). ``poll_interval`` is how often
    the log is read for ``on_line``.
    """

    def __init__(
        self,
        command: Sequence[str] = DEFAULT_COMMAND,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        poll_interval: float = 0.25,
    ) -> None:
        if not command:
            raise ValueError("command must name a program")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.command = tuple(command)
        self._env = dict(env or {})
        self._cwd = cwd
        self._poll_interval = poll_interval

    def command_line(self, request: TrainRequest) -> list[str]:
        """The trainer's own command line for ``request`` (what the trampoline ``exec``s)."""
        return [*self.command, *request.args()]

    def argv(
        self,
        request: TrainRequest,
        *,
        nice: int = 10,
        cpus: frozenset[int] | None = None,
        deadline: float | None = None,
    ) -> list[str]:
        """The full command line ``run`` executes: the trampoline, then the trainer's."""
        cpu_list = ",".join(str(c) for c in sorted(cpus)) if cpus else ""
        seconds = math.ceil(deadline) if deadline else 0
        return [sys.executable, "-c", _TRAMPOLINE, str(nice), cpu_list, str(seconds),
                *self.command_line(request)]  # fmt: skip

    async def run(
        self,
        request: TrainRequest,
        *,
        log_path: Path,
        timeout: float,
        nice: int = 10,
        cpus: frozenset[int] | None = None,
        on_line: Callable[[str], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> int:
        """Run one training to its end and return the trainer's exit code (0: adapter written).

        ``nice`` is added to the gateway's own niceness (as ``nice -n`` does; the OS caps it at
        19). ``cpus``: the cores the trainer is bound to (None: the gateway's own); its
        ``OMP_NUM_THREADS`` is their count. The trainer also arms its own alarm a few seconds
        past ``timeout``. ``on_line`` gets each line the trainer writes, ``on_start`` its pid.
        Raises ``TimeoutError`` after ``timeout`` seconds and ``CancelledError`` when cancelled, in
        both cases only after the trainer's whole process group has been killed.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if nice < 0:
            raise ValueError("nice must be >= 0 (raising priority needs privileges)")
        if cpus is not None and not cpus:
            raise ValueError("cpus must name at least one core")
        argv = self.argv(request, nice=nice, cpus=cpus, deadline=timeout + _DEADLINE_GRACE)
        env = {**os.environ, **self._env, "PYTHONUNBUFFERED": "1"}
        if cpus:
            env["OMP_NUM_THREADS"] = str(len(cpus))
        if request.model_path is not None:
            env[MODEL_PATH_ENV] = str(request.model_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            command = shlex.join(self.command_line(request))
            where = f", cpus {','.join(map(str, sorted(cpus)))}" if cpus else ""
            _note(log, f"starting trainer (nice +{nice}{where}): {command}")
            offset = os.fstat(log.fileno()).st_size
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=env, cwd=self._cwd,
            )  # fmt: skip
            logger.info("trainer started pid=%d log=%s", process.pid, log_path)
            stop_tail = asyncio.Event()
            tail = (
                asyncio.create_task(self._tail(log_path, offset, on_line, stop_tail))
                if on_line is not None
                else None
            )
            outcome = "exited"
            try:
                if on_start is not None:
                    on_start(process.pid)
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                outcome = f"killed after the {timeout:g}s deadline"
                raise TimeoutError(
                    f"trainer ran past its {timeout:g}s deadline and was killed (log: {log_path})"
                ) from None
            except asyncio.CancelledError:
                outcome = "killed: cancelled"
                raise
            except Exception:
                outcome = "killed: the supervisor failed"
                raise
            finally:
                # Also after a normal exit: whatever the trainer left behind in its group goes.
                _kill_group(process.pid)
                if process.returncode is None:
                    await process.wait()
                if tail is not None:
                    stop_tail.set()
                    await tail
                _note(log, f"trainer {outcome} with code {process.returncode}")
                logger.info(
                    "trainer pid=%d %s code=%s log=%s",
                    process.pid, outcome, process.returncode, log_path,
                )  # fmt: skip
        assert process.returncode is not None
        return process.returncode

    async def _tail(
        self, path: Path, offset: int, on_line: Callable[[str], None], stop: asyncio.Event
    ) -> None:
        """Hand each complete line written after ``offset`` to ``on_line`` until ``stop``."""
        pending = b""
        with open(path, "rb") as handle:
            handle.seek(offset)
            while True:
                stopping = stop.is_set()  # read once more after the stop to catch the last bytes
                chunk = handle.read()
                if chunk:
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        _deliver(on_line, line)
                if stopping:
                    break
                if not chunk:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_interval):
                            await stop.wait()
        if pending:
            _deliver(on_line, pending)


def _deliver(on_line: Callable[[str], None], line: bytes) -> None:
    text = line.decode("utf-8", errors="replace").rstrip("\r")
    try:
        on_line(text)
    except Exception:  # an observer's bug must not stop the supervision of the trainer
        logger.exception("trainer on_line callback failed; the line was %r", text[:200])


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _note(log: BinaryIO, message: str) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    log.write(f"[tuneloop {stamp}] {message}\n".encode())
    log.flush()
