"""A trainer's progress as one line per step, written by ``tuneloop train`` and read back.

When its output is not a terminal (a job's log) the trainer prints, after every optimizer
step, ``tuneloop-step step=3 total=10 loss=1.2345 eta_s=25``. The loop reads these lines from
the job's log as they are written (``TrainerProcess``'s ``on_line``) and puts the figures on the
job, its gauges and the dashboard.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, Field

_PREFIX = "tuneloop-step"
_LINE = re.compile(
    rf"^{_PREFIX} step=(\d{{1,9}}) total=(\d{{1,9}}) loss=([0-9.eE+-]{{1,32}}|nan|inf) "
    r"eta_s=(\d{1,9})$"
)


class TrainProgress(BaseModel):
    """Where a training run is: its step of ``total``, the last loss and the time left."""

    step: int = Field(ge=0)
    total: int = Field(ge=1)
    loss: float | None = Field(description="None when the loss was not a finite number.")
    eta_s: int = Field(ge=0, description="Seconds left at the pace so far.")


def step_line(step: int, total: int, loss: float, eta_s: float) -> str:
    """The line the trainer prints after a step."""
    return f"{_PREFIX} step={step} total={total} loss={loss:.4f} eta_s={max(0, round(eta_s))}"


def parse_step_line(line: str) -> TrainProgress | None:
    """The progress a trainer's line reports; None for every other line."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    step, total, loss, eta = match.groups()
    try:
        value = float(loss)
        return TrainProgress(
            step=int(step), total=int(total), loss=value if math.isfinite(value) else None,
            eta_s=int(eta),
        )  # fmt: skip
    except ValueError:  # pydantic's ValidationError is one
        return None
