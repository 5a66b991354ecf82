"""What every rubric check shares: the scored item, the tools the scorer lends, the outcome.

A check is a pydantic model that validates its own parameters when the rubric is parsed and
then scores one answer. Synchronous checks implement ``evaluate`` and run in the scorer's worker
thread; a check that must await something (the LLM judge) sets ``is_async`` and implements
``evaluate_async`` instead.

Parameter errors are raised as ``invalid(...)`` so the rubric parser can name the exact field
(``checks[2].min``) even when the problem is found by a validator of the whole check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from eval.checks.judge import JudgeCall, JudgeReply

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
DETAIL_CHARS = 300
TYPE_HELP = "The check type; selects the parameters and the scoring."

Embed = Callable[[list[str]], np.ndarray]
"""Texts -> one L2-normalised row per text. Synchronous; called from a worker thread."""
Judge = Callable[["JudgeCall"], Awaitable["JudgeReply"]]
"""Sends one judge prompt to a served model and returns its parsed structured reply."""
CountTokens = Callable[[str], int]
"""Text -> number of tokens (a tokenizer); the ``length`` check's ``tokens`` unit uses it."""


@dataclass(frozen=True, kw_only=True)
class ScoreInput:
    """One answer to score, with what it answered and what it was given."""

    sample_id: str
    """Stable id of the sample (e.g. the request id); the judge's rate decision hashes it."""
    question: str
    """The last user message (chat) or the prompt (completions)."""
    answer: str
    """The answer text that is scored."""
    messages: list[dict[str, Any]] | None = None
    """The full chat messages, when the request was a chat."""
    context: list[str] = field(default_factory=list)
    """Texts of the retrieved chunks the answer was given; empty when retrieval was off."""
    reference: str | None = None
    """A reference answer (offline evaluation sets); None on live traffic."""


@dataclass(frozen=True, kw_only=True)
class Tools:
    """What the scorer lends the checks for one scoring run."""

    embed: Embed | None = None
    """Sentence embedder for grounded and reference_similarity; None: they do not apply."""
    count_tokens: CountTokens | None = None
    """Tokenizer for ``length`` in tokens; None: whitespace-split words."""
    judge: Judge | None = None
    """Judge model call for llm_judge; None: it does not apply."""
    allow_judge: bool = True
    """False when the judge budget is spent: llm_judge does not apply and is not called."""


class Outcome(NamedTuple):
    """One check's verdict: score 0..1 and passed, both None when the check does not apply."""

    score: float | None
    passed: bool | None
    detail: str | None = None
    tokens: int = 0


def not_applicable(detail: str, *, tokens: int = 0) -> Outcome:
    """The check says nothing about this answer; ``detail`` says why."""
    return Outcome(None, None, clip(detail), tokens)


def binary(ok: bool, detail: str | None = None) -> Outcome:
    """Score 1 and passed, or score 0 and failed."""
    return Outcome(1.0 if ok else 0.0, ok, clip(detail) if detail else None)


def clip(text: str, limit: int = DETAIL_CHARS) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for details and snippets."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def invalid(message: str, *, field: str | None = None) -> PydanticCustomError:
    """A parameter error; ``field`` names the parameter when a whole-check validator finds it."""
    return PydanticCustomError("rubric_invalid", "{message}", {"message": message, "field": field})


class CheckConfig(BaseModel):
    """Parameters every check has; subclasses add theirs and the scoring logic."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    is_async: ClassVar[bool] = False

    type: str = Field(description=TYPE_HELP)
    name: str = Field(
        pattern=NAME_PATTERN,
        description="Name, unique within the rubric (default: the type); results are keyed by it.",
    )
    weight: float = Field(
        default=1.0, gt=0, description="Weight in the rubric's weighted mean (> 0)."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data:
            return {**data, "name": data.get("type", cls.model_fields["type"].default)}
        return data

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        """Score ``item`` (synchronous checks; runs in a worker thread)."""
        raise NotImplementedError(f"{type(self).__name__} is scored with evaluate_async")

    async def evaluate_async(self, item: ScoreInput, tools: Tools) -> Outcome:
        """Score ``item`` (checks that await, ``is_async = True``)."""
        raise NotImplementedError(f"{type(self).__name__} is scored with evaluate")
