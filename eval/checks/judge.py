"""The llm_judge check: a rubric prompt sent to a served model, which replies
``{"score": number, "reason": string}`` under guided decoding (``JUDGE_SCHEMA``).

Pass or fail is decided here, from the score against ``threshold``; whatever verdict the
judge's reason states is never read. The judge is the scorer's ``judge`` callable (the gateway's
internal completion path); this module only builds the call and reads the reply.

Which samples are judged is decided from a hash of the sample id, salted with the check's name:
reproducible, and independent of the sampler's own hash decision (an unsalted hash would judge
every sampled request whenever the judge rate exceeds the sampling rate).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from eval.checks.base import (
    TYPE_HELP,
    CheckConfig,
    Outcome,
    ScoreInput,
    Tools,
    clip,
    invalid,
    not_applicable,
)

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "number"}, "reason": {"type": "string"}},
    "required": ["score", "reason"],
    "additionalProperties": False,
}
PLACEHOLDERS = ("question", "answer", "context")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NO_CONTEXT = "(none)"


@dataclass(frozen=True, kw_only=True)
class JudgeCall:
    """One request to the judge model."""

    model: str | None
    """Served model or alias to ask; None: the gateway's default judge model."""
    prompt: str
    """The rubric prompt with the sample filled in, ending with the reply format."""
    max_tokens: int
    """Completion token limit for the reply."""
    schema: dict[str, Any]
    """JSON schema of the reply, for guided decoding (a copy of ``JUDGE_SCHEMA``)."""


@dataclass(frozen=True)
class JudgeReply:
    """The judge's parsed reply."""

    score: float
    """Score on the check's scale (0..scale)."""
    reason: str
    """The judge's explanation (shown as the check's detail, never parsed)."""
    tokens: int = 0
    """Tokens the call used (prompt + completion), for the hourly judge budget."""


class JudgeReplyError(ValueError):
    """The judge's text is not a ``{"score": number, "reason": string}`` object."""


def parse_judge_reply(text: str, *, tokens: int = 0) -> JudgeReply:
    """Read the judge's completion text; other keys (a stated verdict, say) are ignored."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JudgeReplyError(f"judge reply is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise JudgeReplyError("judge reply is not a JSON object")
    score, reason = value.get("score"), value.get("reason")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise JudgeReplyError("judge reply has no numeric 'score'")
    if not isinstance(reason, str):
        raise JudgeReplyError("judge reply has no string 'reason'")
    return JudgeReply(float(score), reason, tokens)


def judge_selected(sample_id: str, rate: float, *, salt: str) -> bool:
    """Whether ``sample_id`` falls in the judged share ``rate`` (same answer every time)."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{salt}\x00{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


class LlmJudgeCheck(CheckConfig):
    """A served model grades the answer on ``0..scale``; passes at ``score >= threshold``."""

    is_async = True

    type: Literal["llm_judge"] = Field(default="llm_judge", description=TYPE_HELP)
    model: str | None = Field(
        default=None,
        min_length=1,
        description="Served model or alias that judges; omitted: the gateway's default judge.",
    )
    prompt: str = Field(
        min_length=1,
        description="Rubric prompt; {question}, {answer} and {context} are filled in. "
        "Other braces are left as they are.",
    )
    scale: float = Field(default=10, gt=0, description="The judge scores from 0 to this.")
    threshold: float | None = Field(
        default=None,
        ge=0,
        description="Judge score needed to pass, on the judge's scale (default: 0.6 x scale).",
    )
    rate: float = Field(
        default=1.0, ge=0, le=1, description="Share of samples judged, chosen by sample id hash."
    )
    max_tokens: int = Field(default=256, ge=16, le=4096, description="Token limit of the reply.")

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, prompt: str) -> str:
        unknown = sorted({name for name in PLACEHOLDER.findall(prompt)} - set(PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}}; use {{question}}, {{answer}} or {{context}}"
            )
        if "{answer}" not in prompt:
            raise ValueError("the prompt must contain {answer}")
        return prompt

    @model_validator(mode="after")
    def _threshold_on_scale(self) -> LlmJudgeCheck:
        if self.threshold is not None and self.threshold > self.scale:
            raise invalid(
                f"threshold {self.threshold:g} is above the scale {self.scale:g}",
                field="threshold",
            )
        return self

    @property
    def pass_score(self) -> float:
        """The judge score needed to pass."""
        return self.threshold if self.threshold is not None else 0.6 * self.scale

    def render(self, item: ScoreInput) -> str:
        """The prompt for ``item`` (one pass: text in the answer is never substituted again)."""
        values = {
            "question": item.question,
            "answer": item.answer,
            "context": "\n\n".join(item.context) if item.context else NO_CONTEXT,
        }
        body = PLACEHOLDER.sub(lambda match: values[match.group(1)], self.prompt)
        return (
            f"{body}\n\nReply with JSON only: "
            f'{{"score": <number from 0 to {self.scale:g}>, "reason": "<one sentence>"}}'
        )

    async def evaluate_async(self, item: ScoreInput, tools: Tools) -> Outcome:
        if tools.judge is None:
            return not_applicable("no judge configured")
        if not judge_selected(item.sample_id, self.rate, salt=f"llm_judge:{self.name}"):
            return not_applicable(f"not selected for judging (rate {self.rate:g})")
        if not tools.allow_judge:
            return not_applicable("judging not allowed now (judge token budget spent)")
        call = JudgeCall(
            model=self.model,
            prompt=self.render(item),
            max_tokens=self.max_tokens,
            schema=copy.deepcopy(JUDGE_SCHEMA),
        )
        try:
            reply = await tools.judge(call)
        except Exception as exc:  # any judge failure costs this check, never the whole score
            return not_applicable(f"judge failed: {type(exc).__name__}: {exc}")
        return self._read(reply)

    def _read(self, reply: JudgeReply) -> Outcome:
        score, tokens = reply.score, reply.tokens
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            return not_applicable(f"judge reply has no usable score: {score!r}", tokens=tokens)
        if not 0 <= score <= self.scale:
            return not_applicable(f"judge score {score:g} outside 0..{self.scale:g}", tokens=tokens)
        detail = clip(f"judge {score:g}/{self.scale:g}: {reply.reason}")
        return Outcome(score / self.scale, score >= self.pass_score, detail, tokens)
