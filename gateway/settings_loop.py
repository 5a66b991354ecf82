"""Settings of the loop: when challengers are retrained, the gate they must pass, the canary.

A field-group mixin of ``gateway.settings.Settings``, which gives every field here its
``TUNELOOP_*`` env var; this class has no env config of its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from adapters.cores import parse_cpus

__all__ = ["LoopSettings"]


class LoopSettings(BaseModel):
    """Retraining, the champion/challenger gate, shadow traffic and the canary."""

    loop_retrain_on_drift: bool = Field(
        default=True,
        description="Start a retrain job when an alias's drift check reaches 'drift' (and it "
        "has an imported dataset).",
    )
    loop_retrain_every_hours: float = Field(
        default=0,
        ge=0,
        description="Also retrain every alias with a dataset on this schedule; 0: only on drift "
        "or on request.",
    )
    loop_train_steps: int = Field(
        default=8,
        ge=1,
        description="Training steps of a challenger (early stopping may end it sooner).",
    )
    loop_train_eval_every: int = Field(
        default=2, ge=1, description="Steps between validation passes (for early stopping)."
    )
    loop_train_lr: float = Field(default=1e-3, gt=0, description="Challenger learning rate.")
    loop_train_timeout: float = Field(
        default=1800, gt=0, description="Seconds a training process may run before it is killed."
    )
    train_executor: Literal["local", "ray"] = Field(
        default="local",
        description="Where challengers are trained: 'local' (a supervised child process on "
        "this host) or 'ray' (an actor on the Ray cluster at TUNELOOP_RAY_ADDRESS, with the "
        "resources TUNELOOP_RAY_NUM_CPUS/_NUM_GPUS/_MEMORY_MB; needs `pip install "
        "tuneloop[ray]` here and tuneloop on the cluster's nodes).",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster the 'ray' executor trains on: its GCS 'host:6379', "
        "'ray://host:10001' (Ray Client, from outside the cluster) or 'auto'.",
    )
    ray_num_cpus: float = Field(default=1, gt=0, description="CPUs a Ray training job asks for.")
    ray_num_gpus: float = Field(default=0, ge=0, description="GPUs a Ray training job asks for.")
    ray_memory_mb: int | None = Field(
        default=None, ge=1, description="Memory (MiB) a Ray training job asks for; unset: none."
    )
    train_cpus: str = Field(
        default="auto",
        description="While a job trains on the host of the embedded engine, the trainer's "
        "cores: 'auto' (those the engine is not bound to), a core list ('1', '2-3'), or 'off' "
        "(no split: trainer and engine share every core). The engine's threads are bound to the "
        "other cores meanwhile and restored after.",
    )
    train_nice: int = Field(
        default=10, ge=0, le=19, description="Niceness added to the trainer's process."
    )
    loop_candidate_min_score: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Sampled answers scoring at least this become training candidates "
        "(corrections from /v1/feedback always do).",
    )
    loop_gate_margin: float = Field(
        default=0.0,
        description="The challenger's paired-bootstrap 95% interval of (challenger - champion) "
        "on the frozen set must lie above this.",
    )
    loop_gate_check_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="No rubric check's pass rate may be worse than the champion's by more.",
    )
    loop_shadow_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of an alias's sampled requests mirrored to a challenger awaiting "
        "its verdict (answers scored, never returned).",
    )
    loop_canary_share: int = Field(
        default=20, ge=1, le=99, description="Percent of the alias's traffic a canary gets."
    )
    loop_canary_samples: int = Field(
        default=10,
        ge=1,
        description="Scored live samples the canary needs before it takes all the traffic.",
    )
    loop_canary_timeout: float = Field(
        default=600,
        gt=0,
        description="Seconds to collect the canary's samples; short of them it is rolled back.",
    )

    @model_validator(mode="after")
    def _ray_needs_an_address(self) -> LoopSettings:
        if self.train_executor == "ray" and not self.ray_address:
            raise ValueError("TUNELOOP_TRAIN_EXECUTOR=ray needs TUNELOOP_RAY_ADDRESS")
        return self

    @field_validator("train_cpus")
    @classmethod
    def _core_list(cls, value: str) -> str:
        if value not in ("auto", "off"):
            parse_cpus(value)  # a ValueError here is a clear settings error at start
        return value
