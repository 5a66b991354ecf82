"""Gateway configuration: one ``Settings`` object, every field a ``TUNELOOP_*`` env var.

The README's configuration table lists every field here; ``tests/test_docs.py`` keeps it so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

logger = logging.getLogger("tuneloop.settings")

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _split_csv(value: object) -> object:
    """Accept ``a,b,c`` from the environment as well as a list (whose items may be ``a,b``
    too, as a repeated command-line option gives them)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [part for item in value for part in _split_csv(item)]  # type: ignore[union-attr]
    return value


class Settings(BaseSettings):
    """Everything the gateway and its embedded engine can be told."""

    model_config = SettingsConfigDict(env_prefix="TUNELOOP_", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("~/.local/share/tuneloop"),
        description="Folder for models, adapters, indexes and the database.",
    )

    # --- the gateway's own HTTP server -------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the gateway listens on.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Gateway worker processes, each with its own SO_REUSEPORT listener on the "
        "same port (the kernel spreads connections); they share state through the database.",
    )
    registry_poll_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between heartbeats in the table of live gateway processes, and "
        "between checks for adapter and alias changes other processes made on the same "
        "database (SQLite: PRAGMA data_version; PostgreSQL: only while its LISTEN connection "
        "is down).",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated inference keys; when set, /v1/* needs "
        "'Authorization: Bearer <key>'.",
    )
    key_sync_interval: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between re-reading managed API keys (/admin/keys) from the "
        "database, so gateways sharing it converge, and writing per-key usage to it.",
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above)."
    )

    # --- admission control: per-request caps and requests in flight ---------------------------
    max_n: int = Field(
        default=8, ge=1, description="Largest 'n' (and 'best_of') a request may ask for (400)."
    )
    default_max_tokens: int = Field(
        default=512,
        ge=1,
        description="max_tokens given to chat requests that set neither max_tokens nor "
        "max_completion_tokens (text completions keep vLLM's default of 16).",
    )
    max_tokens_limit: int = Field(
        default=4096,
        ge=1,
        description="Largest max_tokens / max_completion_tokens a request may ask for (400).",
    )
    max_messages: int = Field(
        default=512, ge=1, description="Most messages in one chat request (400 above)."
    )
    max_stop_sequences: int = Field(
        default=16, ge=1, description="Most stop sequences in one request (400 above)."
    )
    max_in_flight: int = Field(
        default=512,
        ge=1,
        description="Generation requests the gateway lets through at once; more wait in a "
        "bounded queue.",
    )
    max_in_flight_per_replica: int = Field(
        default=128,
        ge=1,
        description="Requests in flight on one upstream replica; when every replica serving "
        "a model is full, requests wait (up to queue_timeout) instead of queueing in vLLM.",
    )
    max_queue: int = Field(
        default=512,
        ge=0,
        description="Requests waiting for a slot beyond max_in_flight; when full, 429 with "
        "Retry-After at once.",
    )
    queue_timeout: float = Field(
        default=30,
        gt=0,
        description="Seconds a request waits for a slot (gateway-wide or on a replica) "
        "before a 429 with Retry-After.",
    )

    log_level: str = Field(default="INFO", description="Python log level for tuneloop's logs.")
    access_log: bool = Field(
        default=True, description="Log one line per inference request (id, model, status, times)."
    )

    # --- admin API, registry and adapters -----------------------------------------------------
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for /admin/* (adapters, aliases, events). Unset: the admin "
        "API is disabled. Inference keys never open it.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the registry database; default: SQLite (WAL) file "
        "tuneloop.db in the data dir. Use PostgreSQL when several gateways share it.",
    )
    adapter_root: Path | None = Field(
        default=None,
        description="Only adapter folders inside it can be registered; default: "
        "<data dir>/adapters.",
    )
    max_loaded_adapters: int = Field(
        default=4,
        gt=0,
        description="Adapter versions kept loaded on each replica; idle versions no alias "
        "points at are unloaded beyond it, least recently used first (match vLLM's "
        "--max-cpu-loras).",
    )
    adapter_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas each adapter version is loaded on (0: every ready replica). "
        "Requests go to a replica holding their adapter; a version held by none is loaded on "
        "the least loaded replica when first asked for.",
    )
    routing: Literal["adapter_affinity", "round_robin"] = Field(
        default="adapter_affinity",
        description="adapter_affinity: a replica holding the request's adapter, then vLLM's "
        "queue and KV use, then least in flight. round_robin: replicas in turn, each loading "
        "the adapters it is sent (the baseline bench/overhead.py compares against).",
    )

    # --- guaranteed JSON ------------------------------------------------------------------------
    json_max_retries: int = Field(
        default=2,
        ge=0,
        le=5,
        description="Times a response failing its JSON response_format is asked for again "
        "(with twice the max_tokens and the validation errors quoted) before a 422.",
    )
    json_max_schema_bytes: int = Field(
        default=65536, gt=0, description="Largest JSON schema accepted in response_format (400)."
    )

    # --- continuous evaluation --------------------------------------------------------------------
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

    # --- the loop: retraining, gate, canary ----------------------------------------------------
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

    @field_validator("upstreams", "api_keys", "pii_phone_regions", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("eval_alias_rates", mode="before")
    @classmethod
    def _rates(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        rates = {}
        for part in _split_csv(value):  # type: ignore[union-attr]
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

    @field_validator("upstreams")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream {url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in value]

    @field_validator("pii_hmac_key")
    @classmethod
    def _strong_pii_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the PII HMAC key must be at least 16 characters")
        return value

    @field_validator("admin_token")
    @classmethod
    def _no_weak_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("admin token must be at least 16 characters")
        return value

    @field_validator("data_dir", "model_path", "adapter_root")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}")
        return level

    @model_validator(mode="after")
    def _drift_window(self) -> Settings:
        if self.eval_drift_baseline_samples < 2 * self.eval_drift_batch_size:
            raise ValueError(
                "eval_drift_baseline_samples must hold at least two batches "
                f"(2 x eval_drift_batch_size = {2 * self.eval_drift_batch_size})"
            )
        return self

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def base_model_path(self) -> Path:
        return self.model_path or self.models_dir / self.model_name

    @property
    def resolved_adapter_root(self) -> Path:
        return self.adapter_root or self.data_dir / "adapters"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'tuneloop.db'}"

    def warn_if_exposed(self) -> None:
        """Say so when inference is open to the network without keys."""
        if self.host not in _LOOPBACK and not self.api_keys:
            logger.warning(
                "event=exposed host=%s reason='no TUNELOOP_API_KEYS: /v1 is open to anyone'",
                self.host,
            )
