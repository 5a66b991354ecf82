"""Wire models of ``/admin/keys``. Unknown fields are refused: a typo must not pass silently."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

KeyName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"),
]
ModelName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=200, strip_whitespace=True, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]  # no control characters
MAX_EXPIRES_IN = 10 * 365 * 86400  # ten years
MAX_LIMIT = 2**31 - 1  # per-minute limits fit any database integer


class KeysModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateKeyRequest(KeysModel):
    name: KeyName = Field(
        description="Who the key belongs to: 1-64 of A-Z a-z 0-9 . _ - (the metrics label). "
        "Unique, never reused."
    )
    models: list[ModelName] | None = Field(
        default=None,
        max_length=100,
        description="Models, aliases or versions the key may call; empty or absent: all.",
    )
    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LIMIT,
        description="Requests per 60-second window; null: unlimited.",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LIMIT,
        description="Prompt plus completion tokens per 60-second window; null: unlimited. "
        "Counted when a request ends: once the window's tokens are used up, requests get 429.",
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the key stops working (with a time zone)."
    )
    expires_in: int | None = Field(
        default=None,
        ge=1,
        le=MAX_EXPIRES_IN,
        description="Seconds from now after which the key stops working (instead of expires_at).",
    )

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("expires_at is in the past")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> CreateKeyRequest:
        if self.expires_at is not None and self.expires_in is not None:
            raise ValueError("give expires_at or expires_in, not both")
        return self


class KeyUsageTotals(BaseModel):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ApiKeyRecord(BaseModel):
    """A key as listed: never its secret, only its first characters for recognition."""

    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    models: list[str] = Field(description="Models and aliases the key may call; empty: all.")
    requests_per_minute: int | None
    tokens_per_minute: int | None
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None
    status: Literal["active", "expired", "revoked"]
    usage: KeyUsageTotals = Field(default_factory=KeyUsageTotals)


class CreatedApiKey(ApiKeyRecord):
    key: str = Field(description="The key itself. Shown this once: only its hash is stored.")


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKeyRecord]


class KeyUsageBucket(KeyUsageTotals):
    start: datetime = Field(description="Start of the hour (UTC).")


class KeyUsage(BaseModel):
    object: Literal["list"] = "list"
    key_id: str
    name: str
    totals: KeyUsageTotals
    data: list[KeyUsageBucket] = Field(description="Hourly buckets, oldest first.")


__all__ = [
    "ApiKeyList",
    "ApiKeyRecord",
    "CreateKeyRequest",
    "CreatedApiKey",
    "KeyUsage",
    "KeyUsageBucket",
    "KeyUsageTotals",
]
