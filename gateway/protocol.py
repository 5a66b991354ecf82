"""Wire models shared by every API surface: the base model, the error body, retrieval options.

Each surface (``gateway/openai``, ``gateway/admin``, ``gateway/collections``, ...) builds on
these; nothing here imports a surface, so the shared HTTP helpers need not import upward.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ErrorInfo", "ErrorResponse", "OpenAIBaseModel", "RetrievalOptions"]


class OpenAIBaseModel(BaseModel):
    """Base of every OpenAI wire model: unknown fields are kept and forwarded (vLLM's habit).

    NaN and infinities are refused: JSON has neither, and pydantic would send them on as null.
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(OpenAIBaseModel):
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI answers it."""

    error: ErrorInfo


class RetrievalOptions(BaseModel):
    """``"retrieval": {...}`` in a chat request (the openai SDK sends it via ``extra_body``)."""

    model_config = ConfigDict(extra="forbid")

    collection: str
    top_k: int = Field(default=4, ge=1, le=50)
    filter: dict[str, Any] | None = None
