"""Wire models of the loop: retrain requests, jobs and dataset versions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.dataset_registry import DatasetVersion
from adapters.jobs import JobRecord


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, description="Alias to retrain (its champion keeps serving).")
    max_steps: int | None = Field(
        default=None, ge=1, le=100000, description="Training steps (TUNELOOP_LOOP_TRAIN_STEPS)."
    )
    lr: float | None = Field(
        default=None, gt=0, le=1, description="Learning rate (TUNELOOP_LOOP_TRAIN_LR)."
    )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobRecord]


class DatasetList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DatasetVersion]


class DatasetImport(BaseModel):
    """What an import made: the version (new, or the existing one with the same hash) and
    every example it removed, with the reason."""

    version: DatasetVersion
    removals: list[dict[str, object]]
    frozen: int = Field(description="Examples in the alias's frozen test set.")
