"""Wire models of the OpenAI-compatible surface.

Only the fields the gateway reads are declared; ``extra="allow"`` carries every other OpenAI or
vLLM parameter through to the upstream untouched (vLLM's ``OpenAIBaseModel`` habit).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.collections.protocol import RetrievalOptions


class OpenAIBaseModel(BaseModel):
    """Base of every wire model: unknown fields are kept and forwarded."""

    model_config = ConfigDict(extra="allow")


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(OpenAIBaseModel):
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI answers it."""

    error: ErrorInfo


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = None


class ChatMessage(OpenAIBaseModel):
    role: str = Field(min_length=1)
    content: str | list[Any] | None = None


class GenerationRequest(OpenAIBaseModel):
    model: str = Field(min_length=1, description="Base model, alias or adapter version.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
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
