"""Disjoint CPU cores for the engine and the trainer while a job trains on the same host.

On a CPU host the embedded vLLM engine keeps its cores busy (its OpenMP threads spin), and a
trainer whose torch threads land on those cores crawls: measured here, 10 steps took 730 s
beside one client at 1 request/s, against ~70 s on an idle machine. So while a job trains,
``CorePartition.split`` binds every thread of the engine's process tree to the engine's
cores and hands the rest to the trainer (which binds itself to them before it runs any code,
``adapters.trainer_process``), then puts every engine thread back to the affinity it had.

Which cores: ``auto`` takes the cores the engine's threads are already bound to (vLLM CPU's
``VLLM_CPU_OMP_THREADS_BIND=auto`` binds its engine to core 0 of a 2-core host and reserves
the rest), or the first half of the host's cores when none are bound; the trainer gets what is
left. An explicit core list (``"1"``, ``"2-3,6"``) names the trainer's cores instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psutil

logger = logging.getLogger("tuneloop.cores")


def parse_cpus(text: str) -> frozenset[int]:
    """A Linux core list (``"0,2-3"``) as a set; ``ValueError`` names what is wrong."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"{text!r} is not a core list such as '1' or '0,2-3'")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"{part!r}: the range runs backwards")
        cpus.update(range(low, high + 1))
    if not cpus:
        raise ValueError("the core list is empty")
    return frozenset(cpus)


def threads_of(pids: list[int]) -> list[int]:
    """Every thread id of ``pids`` and their children (the engine's whole tree)."""
    found: list[int] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            for member in (process, *process.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    found += [thread.id for thread in member.threads()]
    return found


@dataclass(frozen=True, slots=True)
class Split:
    engine: frozenset[int]
    trainer: frozenset[int]


def plan(
    host: frozenset[int], bound: frozenset[int], trainer: frozenset[int] | None
) -> Split | None:
    """The split for a host with cores ``host`` whose engine threads are ``bound`` to some
    (empty: none bound); ``trainer``: cores asked for by name. None when no split fits."""
    if trainer is not None:
        trainer = trainer & host
        engine = host - trainer
    else:
        engine = bound if bound and bound != host else frozenset(sorted(host)[: len(host) // 2])
        trainer = host - engine
    if not trainer or not engine:
        return None
    return Split(engine=frozenset(engine), trainer=frozenset(trainer))


class CorePartition:
    """Split the host's cores between an engine's process tree and one trainer at a time.

    ``engine_pids`` gives the engine's top processes now (they change when it restarts);
    ``trainer_cpus``: the trainer's cores by name, None for ``auto``.
    """

    def __init__(
        self, engine_pids: Callable[[], list[int]], *, trainer_cpus: frozenset[int] | None = None
    ) -> None:
        self._engine_pids = engine_pids
        self._trainer_cpus = trainer_cpus

    @contextlib.contextmanager
    def split(self) -> Iterator[frozenset[int] | None]:
        """Bind the engine to its cores for the block; yields the trainer's cores (None: no
        split fits this host, the trainer shares every core)."""
        host = frozenset(os.sched_getaffinity(0))
        saved: dict[int, frozenset[int]] = {}
        for tid in threads_of(self._engine_pids()):
            with contextlib.suppress(OSError):
                saved[tid] = frozenset(os.sched_getaffinity(tid))
        pinned = [cpus for cpus in saved.values() if cpus != host]
        bound = frozenset().union(*pinned) if pinned else frozenset()
        split = plan(host, bound, self._trainer_cpus)
        if split is None:
            logger.info("event=cores_shared host=%s reason=no split fits", _fmt(host))
            yield None
            return
        for tid, cpus in saved.items():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(tid, (cpus & split.engine) or split.engine)
        logger.info(
            "event=cores_split engine=%s trainer=%s engine_threads=%d",
            _fmt(split.engine), _fmt(split.trainer), len(saved),
        )  # fmt: skip
        try:
            yield split.trainer
        finally:
            for tid, cpus in saved.items():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, cpus)
            logger.info("event=cores_restored engine_threads=%d", len(saved))


def _fmt(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
