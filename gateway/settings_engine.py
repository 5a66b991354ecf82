"""Settings of the vLLM servers behind the gateway: upstream URLs, or the embedded engine.

A field-group mixin of ``gateway.settings.Settings``, which gives every field here its
``TUNELOOP_*`` env var; this class has no env config of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from gateway.settings_csv import split_csv

__all__ = ["DEFAULT_MODEL_NAME", "EngineSettings"]

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


class EngineSettings(BaseModel):
    """Where generations come from: upstream vLLM servers, or else one embedded engine."""

    # --- upstream vLLM servers -----------------------------------------------------------------
    upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated base URLs of vLLM OpenAI servers. Empty: start an "
        "embedded vLLM engine on the bundled model.",
    )
    upstream_connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to open a connection to an upstream."
    )
    upstream_read_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds to wait for the next bytes from an upstream (504 when exceeded).",
    )
    upstream_max_connections: int = Field(
        default=512, gt=0, description="Connection pool size shared by all upstreams."
    )
    health_interval: float = Field(
        default=5.0, gt=0, description="Seconds between upstream health checks."
    )
    health_timeout: float = Field(
        default=2.0, gt=0, description="Seconds one upstream health check may take."
    )

    # --- the embedded engine (used only when no upstreams are given) ---------------------------
    model_name: str = Field(
        default=DEFAULT_MODEL_NAME, description="Name the embedded engine serves the base model as."
    )
    model_path: Path | None = Field(
        default=None,
        description="Model folder for the embedded engine; default: the prepared bundled model "
        "under the data dir.",
    )
    engine_host: str = Field(default="127.0.0.1", description="Address of the embedded engine.")
    engine_port: int = Field(
        default=0, ge=0, le=65535, description="Port of the embedded engine (0: pick a free one)."
    )
    engine_dtype: str = Field(
        default="float32",
        description="Weights dtype of the embedded engine (float32 is fastest for batches on CPU).",
    )
    engine_max_model_len: int = Field(
        default=2048, gt=0, description="Context length of the embedded engine."
    )
    engine_kv_cache_gib: int = Field(
        default=1, gt=0, description="KV cache size in GiB of the embedded CPU engine."
    )
    engine_max_loras: int = Field(
        default=4, gt=0, description="LoRA adapters the embedded engine holds at once."
    )
    engine_scheduling_policy: Literal["priority", "fcfs"] = Field(
        default="priority",
        description="vLLM's --scheduling-policy for the embedded engine: 'priority' lets the "
        "gateway's own requests (judge, gate, shadow) yield to clients' (see "
        "TUNELOOP_INTERNAL_PRIORITY).",
    )
    engine_max_lora_rank: int = Field(
        default=16, gt=0, description="Largest LoRA rank the embedded engine accepts."
    )
    engine_startup_timeout: float = Field(
        default=600.0, gt=0, description="Seconds to wait for the embedded engine to be ready."
    )
    engine_extra_args: str = Field(
        default="", description="Extra command-line arguments for the embedded vLLM server."
    )
    engine_unhealthy_seconds: float = Field(
        default=60,
        gt=0,
        description="The embedded engine is restarted when its /health has not answered for "
        "this long (or at once when its process exits).",
    )
    engine_max_restarts: int = Field(
        default=5,
        ge=0,
        description="Restarts of the embedded engine allowed within engine_restart_window; one "
        "more and 'tuneloop serve' exits non-zero so systemd or Kubernetes take over.",
    )
    engine_restart_window: float = Field(
        default=600, gt=0, description="Seconds over which engine restarts are counted."
    )
    engine_log_max_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Size at which the embedded engine's log (<data dir>/logs/engine.log) is "
        "rotated.",
    )
    engine_log_backups: int = Field(
        default=3, ge=1, description="Rotated engine logs kept (engine.log.1, .2, ...)."
    )

    @field_validator("upstreams", mode="before")
    @classmethod
    def _split_upstreams(cls, value: object) -> object:
        return split_csv(value)

    @field_validator("upstreams")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream {url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in value]

    @field_validator("model_path")
    @classmethod
    def _expand_model_path(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None
