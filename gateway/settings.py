"""Gateway configuration: one ``Settings`` object, every field a ``TUNELOOP_*`` env var.

This module holds the gateway's own fields (data dir, HTTP server, admission control, admin API
and adapters, guaranteed JSON) and the paths derived from them; the other groups are mixins it
inherits: ``settings_eval`` (continuous evaluation), ``settings_loop`` (retraining, gate,
canary) and ``settings_engine`` (upstream vLLM servers and the embedded engine). The README's
configuration table lists every field of all of them; ``tests/test_docs.py`` keeps it so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.settings_csv import split_csv
from gateway.settings_engine import EngineSettings
from gateway.settings_eval import EvalSettings
from gateway.settings_loop import LoopSettings

__all__ = ["Settings"]

logger = logging.getLogger("tuneloop.settings")

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# vLLM runs lower numbers first; clients are sent at 0.
DEFAULT_INTERNAL_PRIORITY = 10


# The mixins are plain BaseModels, so BaseSettings' config (env prefix, validated defaults)
# applies to their fields too. Pydantic keys validators by attribute name across the bases: a
# validator here or in a mixin must not reuse another's name, or it silently replaces it.
class Settings(EvalSettings, LoopSettings, EngineSettings, BaseSettings):
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
    internal_priority: str = Field(
        default="auto",
        description="vLLM request priority of the gateway's own requests (judge, gate, "
        "shadow); larger is later, clients are sent at 0. 'auto': 10 on the embedded engine "
        "(started with --scheduling-policy priority), none for external replicas; 'off': none; "
        "a number: that priority (run external vLLM with --scheduling-policy priority first).",
    )
    internal_max_in_flight: int = Field(
        default=2,
        ge=1,
        description="Most internal requests (judge, gate, shadow) in flight at once; none is "
        "sent while a client waits for admission.",
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

    @field_validator("api_keys", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return split_csv(value)

    @field_validator("internal_priority")
    @classmethod
    def _priority(cls, value: str) -> str:
        if value not in ("auto", "off") and not value.lstrip("-").isdigit():
            raise ValueError("internal_priority is 'auto', 'off' or an integer")
        return value

    def internal_priority_value(self, *, embedded: bool) -> int | None:
        """The priority internal requests carry (None: none), for an embedded engine or not."""
        if self.internal_priority == "off" or (self.internal_priority == "auto" and not embedded):
            return None
        if self.internal_priority == "auto":
            return (
                DEFAULT_INTERNAL_PRIORITY if self.engine_scheduling_policy == "priority" else None
            )
        return int(self.internal_priority)

    @field_validator("admin_token")
    @classmethod
    def _no_weak_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("admin token must be at least 16 characters")
        return value

    @field_validator("data_dir", "adapter_root")
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
