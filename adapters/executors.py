"""Where a challenger is trained: one interface, picked by ``TUNELOOP_TRAIN_EXECUTOR``.

The loop asks a ``TrainExecutor`` to turn a ``TrainRequest`` into an adapter folder at
``request.out`` and awaits it; the executor owns where the work runs, its resources, its
deadline and its cancellation (a cancelled ``train`` leaves nothing running and nothing at
``request.out``). ``LocalExecutor`` is today's supervised child process (``TrainerProcess``)
on this host, with the engine's and the trainer's cores split while it trains.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from adapters.cores import CorePartition
from adapters.trainer_process import TrainerProcess, TrainRequest

__all__ = ["LocalExecutor", "TrainExecutor", "TrainingFailed"]


class TrainingFailed(RuntimeError):
    """The trainer ran and did not produce an adapter (its log says why)."""


class TrainExecutor(Protocol):
    name: str

    async def train(
        self,
        request: TrainRequest,
        *,
        log_path: Path,
        timeout: float,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """Train until the adapter is at ``request.out``; raise ``TrainingFailed`` when the
        trainer fails, ``TimeoutError`` past ``timeout`` seconds."""
        ...


class LocalExecutor:
    """The trainer as a child of this gateway: niced, on cores of its own, dying with us."""

    name = "local"

    def __init__(
        self, trainer: TrainerProcess, *, partition: CorePartition | None = None, nice: int = 10
    ) -> None:
        self._trainer = trainer
        self._partition = partition
        self._nice = nice
        self._lock = asyncio.Lock()

    async def train(
        self,
        request: TrainRequest,
        *,
        log_path: Path,
        timeout: float,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        # One core split at a time: jobs on one host take turns; without a split they don't.
        turn = self._lock if self._partition is not None else contextlib.nullcontext()
        async with turn:
            with self._partition.split() if self._partition else contextlib.nullcontext() as cpus:
                code = await self._trainer.run(
                    request, log_path=log_path, timeout=timeout, nice=self._nice, cpus=cpus,
                    on_line=on_line,
                )  # fmt: skip
        if code != 0:
            raise TrainingFailed(f"the trainer exited with {code} (log: {log_path})")
