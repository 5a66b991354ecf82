"""Continuous-evaluation settings: sampling, the drift check, daily reports, PII scrubbing.

A field-group mixin of ``gateway.settings.Settings``, which gives every field here its
``TUNELOOP_*`` env var; this class has no env config of its own.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from gateway.settings_csv import split_csv

__all__ = ["EvalSettings"]


class EvalSettings(BaseModel):
    """How requests are sampled, scored, watched for drift and scrubbed of PII."""

    eval_sample_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of requests sampled for evaluation for aliases without a rate of "
        "their own (and the base model); 1 samples everything, 0 turns sampling off.",
    )
    eval_alias_rates: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Per-alias sample rates, 'alias=rate' comma-separated (extract=0.5,chat=0.1).",
    )
    eval_queue_size: int = Field(
        default=1000,
        gt=0,
        description="Sampled requests waiting to be scrubbed, scored and stored; when full, "
        "new samples are dropped and counted, never waited for.",
    )
    eval_max_samples_per_second: float = Field(
        default=20,
        gt=0,
        description="Most samples scrubbed, scored and stored per second; evaluation shares "
        "the gateway's cores, so beyond it samples are dropped and counted (queue_full).",
    )
    eval_retention_days: float = Field(
        default=30, gt=0, description="Days samples, scores and feedback are kept."
    )
    eval_judge_tokens_per_hour: int = Field(
        default=20000,
        ge=0,
        description="Token budget per hour for llm_judge checks; past it, judge checks are "
        "skipped (counted as decision judge_budget) until the hour turns.",
    )
    eval_drift_interval: float = Field(
        default=60, gt=0, description="Seconds between drift checks."
    )
    eval_drift_baseline_samples: int = Field(
        default=200, ge=2, description="Scored samples in an alias's drift baseline window."
    )
    eval_drift_batch_size: int = Field(
        default=25, ge=1, description="Scores averaged into one point of the drift CUSUM."
    )
    eval_drift_k: float = Field(
        default=1.0,
        ge=0,
        description="CUSUM slack, in baseline standard deviations (1.0: under 1% false alarms "
        "over 10k stable samples; the textbook 0.5 alarms on about half of them).",
    )
    eval_drift_h: float = Field(
        default=6.0, gt=0, description="CUSUM alarm threshold (warning above h/2)."
    )
    eval_report_hour: int = Field(
        default=0, ge=0, le=23, description="Hour (UTC) the daily quality report is written."
    )
    pii_hmac_key: SecretStr | None = Field(
        default=None,
        description="When set, PII is replaced by stable pseudonyms (<EMAIL:3fa9c1>, "
        "HMAC-SHA256) instead of bare placeholders, so one value links across samples.",
    )
    pii_phone_regions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR"],
        description="Comma-separated regions (ISO 3166) whose national phone formats are "
        "recognised; international (+..) numbers are recognised everywhere.",
    )

    @field_validator("pii_phone_regions", mode="before")
    @classmethod
    def _split_regions(cls, value: object) -> object:
        return split_csv(value)

    @field_validator("eval_alias_rates", mode="before")
    @classmethod
    def _rates(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        rates = {}
        for part in split_csv(value):  # type: ignore[union-attr]
            alias, sep, rate = part.partition("=")
            if not sep:
                raise ValueError(f"expected alias=rate, got {part!r}")
            rates[alias.strip()] = float(rate)
        return rates

    @field_validator("eval_alias_rates")
    @classmethod
    def _rate_range(cls, value: dict[str, float]) -> dict[str, float]:
        for alias, rate in value.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"sample rate of {alias} must be within 0..1, got {rate}")
        return value

    @field_validator("pii_hmac_key")
    @classmethod
    def _strong_pii_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the PII HMAC key must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _drift_window(self) -> Self:
        if self.eval_drift_baseline_samples < 2 * self.eval_drift_batch_size:
            raise ValueError(
                "eval_drift_baseline_samples must hold at least two batches "
                f"(2 x eval_drift_batch_size = {2 * self.eval_drift_batch_size})"
            )
        return self
