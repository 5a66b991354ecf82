"""Wire models of the OpenAI-compatible surface.

Only the fields the gateway reads are declared; ``extra="allow"`` carries every other OpenAI or
vLLM parameter through to the upstream untouched (vLLM's ``OpenAIBaseModel`` habit).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from gateway.protocol import OpenAIBaseModel, RetrievalOptions


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = None


# OpenAI's roles; anything else is refused rather than passed to a chat template.
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(OpenAIBaseModel):
    role: Role
    content: str | list[Any] | None = None


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (iterative: nesting depth is the parser's)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


class GenerationRequest(OpenAIBaseModel):
    model: str = Field(min_length=1, description="Base model, alias or adapter version.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
    best_of: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    user: str | None = None
    response_format: dict[str, Any] | None = None
    json_validation: Literal["strict", "report"] = Field(
        default="strict",
        description="tuneloop extension: with a JSON response_format, 'strict' answers 422 "
        "when the output stays invalid; 'report' returns it with the validation result in "
        "'tuneloop_validation'. Not forwarded upstream.",
    )

    retrieval: RetrievalOptions | None = Field(
        default=None,
        description="tuneloop extension (chat): search a collection with the last user message "
        "and put the numbered sources in a system message; 'citations' come back. Not "
        "forwarded upstream.",
    )

    @model_validator(mode="after")
    def _finite_extras(self) -> GenerationRequest:
        """Parameters we do not declare are forwarded as given: refuse the non-finite numbers
        (``Infinity``, ``NaN``, ``1e400``) that would otherwise reach vLLM as null."""
        for name, value in (self.__pydantic_extra__ or {}).items():
            if not _finite(value):
                raise ValueError(f"{name} must hold finite numbers only (no NaN or Infinity)")
        return self

    @property
    def wants_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]


class Usage(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int | None = 0
    total_tokens: int = 0


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tuneloop"
    root: str | None = None
    parent: str | None = None


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)
