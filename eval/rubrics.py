"""Rubrics: declarative YAML per alias, parsed and validated here, then scored by ``Scorer``.

    description: extraction answers are JSON with name/age/city
    checks:
      - type: json_valid
        weight: 2
      - type: regex
        name: no_apology
        pattern: "(?i)sorry"
        negate: true

Each check gives a score 0..1 and ``passed``, or nothing when it does not apply (no retrieved
chunks for ``grounded``, an unselected sample for ``llm_judge``...). The total is the weighted
mean over the checks that apply, None when none does.

``evaluator_epoch`` names what produced a score (rubric, judge models, scorer version): scores
of different epochs are never compared. Bump ``SCORER_VERSION`` whenever a check's scoring
changes for the same parameters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from eval.checks import (
    CHECK_TYPES,
    JUDGE_SCHEMA,
    AnyCheck,
    CheckConfig,
    Embed,
    Judge,
    JudgeCall,
    JudgeReply,
    JudgeReplyError,
    LlmJudgeCheck,
    Outcome,
    ScoreInput,
    Tools,
    parse_judge_reply,
)
from eval.checks.base import CountTokens, invalid

SCORER_VERSION = "1"
EPOCH_CHARS = 16

__all__ = [
    "JUDGE_SCHEMA",
    "SCORER_VERSION",
    "CheckResult",
    "CountTokens",
    "Embed",
    "Judge",
    "JudgeCall",
    "JudgeReply",
    "JudgeReplyError",
    "Rubric",
    "RubricError",
    "ScoreInput",
    "ScoreResult",
    "Scorer",
    "evaluator_epoch",
    "parse_judge_reply",
    "parse_rubric",
]


class RubricError(ValueError):
    """A rubric that cannot be used; ``path`` (e.g. ``checks[2].pattern``) names the culprit.

    ``path`` is None for problems of the whole text (YAML syntax, not a mapping).
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.message = message
        self.path = path


class Rubric(BaseModel):
    """A validated rubric: what is checked on every scored answer of an alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = Field(
        default=None, description="What the rubric checks, for people (not part of the epoch)."
    )
    checks: list[AnyCheck] = Field(min_length=1, description="The checks, scored in order.")

    @model_validator(mode="after")
    def _unique_names(self) -> Rubric:
        seen: set[str] = set()
        for index, check in enumerate(self.checks):
            if check.name in seen:
                raise invalid(
                    f"check name {check.name!r} is used twice; give one a distinct 'name'",
                    field=f"checks[{index}].name",
                )
            seen.add(check.name)
        return self

    def judge_models(self) -> list[str]:
        """Models named by the llm_judge checks, sorted (checks naming none are left out)."""
        return sorted(
            {c.model for c in self.checks if isinstance(c, LlmJudgeCheck) and c.model is not None}
        )

    def as_dict(self) -> dict[str, Any]:
        """The rubric as JSON-ready data with every default filled in; parses back to itself."""
        return self.model_dump(mode="json", by_alias=True)


def parse_rubric(source: str | Mapping[str, Any]) -> Rubric:
    """A rubric from YAML (or JSON) text or from already-loaded data; raises ``RubricError``."""
    if isinstance(source, str):
        data = _load_yaml(source)
    else:
        data = source
    if data is None:
        raise RubricError("the rubric is empty; it needs a 'checks' list")
    if not isinstance(data, Mapping):
        raise RubricError(f"a rubric is a mapping with a 'checks' list, not {type(data).__name__}")
    try:
        return Rubric.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        path, message = _describe(errors[0])
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise RubricError(message, path=path) from exc


# libyaml when installed: the pure-Python loader takes seconds over a 64 KiB list.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str) -> Any:
    """Safe YAML without aliases: ``*name`` would let a few hundred bytes expand into millions
    of nodes (or a cycle) when the rubric is validated, dumped and hashed."""
    try:
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=_YAML_LOADER)):
            raise RubricError("YAML aliases (*name) are not allowed in a rubric")
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise RubricError(f"invalid YAML: {_yaml_problem(exc)}") from exc
    except RecursionError as exc:
        raise RubricError("invalid YAML: nested too deeply") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1} column {mark.column + 1}"


def _describe(error: ErrorDetails) -> tuple[str | None, str]:
    """(path, message) for one pydantic error, in the rubric's own terms."""
    loc = list(error["loc"])
    if len(loc) > 2 and loc[0] == "checks" and isinstance(loc[1], int):
        del loc[2]  # the discriminated union's tag (the check type), not a key of the input
    ctx = error.get("ctx") or {}
    message = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    known = ", ".join(CHECK_TYPES)
    if kind == "union_tag_invalid":
        loc.append("type")
        message = f"unknown check type {ctx.get('tag')!r}; known types: {known}"
    elif kind == "union_tag_not_found":
        loc.append("type")
        message = f"every check needs a 'type' (one of: {known})"
    elif kind == "model_attributes_type" and len(loc) == 2 and loc[0] == "checks":
        message = "a check is a mapping with a 'type' and its parameters"
    elif kind == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
    if ctx.get("field"):
        loc.append(ctx["field"])
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or None, message


def evaluator_epoch(
    rubric: Rubric, *, judge_model: str | None = None, scorer_version: str = SCORER_VERSION
) -> str:
    """Short sha256 hex naming what scores are made by: rubric, judge model(s), scorer version.

    ``judge_model`` is the gateway's default judge, used by llm_judge checks that name none; it
    changes the epoch only when such a check exists. The description is left out (it changes
    no score); key order and defaults written out or not make no difference.
    """
    judges = [c.model or judge_model for c in rubric.checks if isinstance(c, LlmJudgeCheck)]
    payload = {
        "checks": rubric.as_dict()["checks"],
        "judges": judges,
        "scorer_version": scorer_version,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:EPOCH_CHARS]


class CheckResult(BaseModel):
    """One check's result on one answer."""

    name: str = Field(description="The check's name in the rubric.")
    type: str = Field(description="The check type.")
    weight: float = Field(description="The check's weight in the total.")
    score: float | None = Field(description="0..1, or null when the check does not apply.")
    passed: bool | None = Field(description="Whether the check passed; null when not applicable.")
    detail: str | None = Field(default=None, description="Why, in a few words.")


class ScoreResult(BaseModel):
    """The score of one answer under one rubric, with the per-check breakdown."""

    total: float | None = Field(
        description="Weighted mean of the applicable checks' scores; null when none applies."
    )
    checks: list[CheckResult] = Field(description="Every check of the rubric, in rubric order.")
    epoch: str = Field(description="The evaluator epoch the score belongs to.")
    judge_tokens: int = Field(
        default=0, description="Tokens the judge calls reported, for the hourly judge budget."
    )


def weighted_total(results: list[CheckResult]) -> float | None:
    """Weighted mean of the applicable results' scores; None when none applies."""
    applicable = [r for r in results if r.score is not None]
    weight = sum(r.weight for r in applicable)
    if not applicable or weight <= 0:
        return None
    return sum(r.weight * r.score for r in applicable if r.score is not None) / weight


def _evaluate_sync(checks: list[CheckConfig], item: ScoreInput, tools: Tools) -> list[Outcome]:
    return [check.evaluate(item, tools) for check in checks]


class Scorer:
    """Scores answers against rubrics with the tools it is given.

    ``embed`` serves grounded and reference_similarity, ``judge`` serves llm_judge,
    ``count_tokens`` the length check's ``tokens`` unit (default: whitespace-split words).
    A check whose tool is missing does not apply; it never fails the score.
    """

    def __init__(
        self,
        *,
        embed: Embed | None = None,
        judge: Judge | None = None,
        count_tokens: CountTokens | None = None,
    ) -> None:
        self._embed = embed
        self._judge = judge
        self._count_tokens = count_tokens

    def _tools(self, *, allow_judge: bool) -> Tools:
        return Tools(
            embed=self._embed,
            count_tokens=self._count_tokens,
            judge=self._judge,
            allow_judge=allow_judge,
        )

    def evaluate_sync(self, rubric: Rubric, item: ScoreInput) -> dict[str, Outcome]:
        """The synchronous checks' outcomes. Blocking: call it from a worker thread (a batch
        of samples can share one thread hop this way)."""
        tools = self._tools(allow_judge=False)
        sync_checks = [check for check in rubric.checks if not check.is_async]
        done = _evaluate_sync(sync_checks, item, tools)
        return dict(zip((c.name for c in sync_checks), done, strict=True))

    async def finish(
        self,
        rubric: Rubric,
        item: ScoreInput,
        outcomes: dict[str, Outcome],
        *,
        epoch: str,
        allow_judge: bool = True,
    ) -> ScoreResult:
        """Run the asynchronous checks (the judge) and assemble the result."""
        tools = self._tools(allow_judge=allow_judge)
        async_checks = [check for check in rubric.checks if check.is_async]
        outcomes = dict(outcomes)
        if async_checks:
            done = await asyncio.gather(*(c.evaluate_async(item, tools) for c in async_checks))
            outcomes.update(zip((c.name for c in async_checks), done, strict=True))
        results = [
            CheckResult(
                name=check.name,
                type=check.type,
                weight=check.weight,
                score=outcomes[check.name].score,
                passed=outcomes[check.name].passed,
                detail=outcomes[check.name].detail,
            )
            for check in rubric.checks
        ]
        return ScoreResult(
            total=weighted_total(results),
            checks=results,
            epoch=epoch,
            judge_tokens=sum(outcome.tokens for outcome in outcomes.values()),
        )

    async def score(
        self, rubric: Rubric, item: ScoreInput, *, epoch: str, allow_judge: bool = True
    ) -> ScoreResult:
        """Score ``item``: the synchronous checks in one worker thread, then the judge calls.

        ``allow_judge=False`` (the judge budget is spent) makes llm_judge checks not apply
        without calling the judge.
        """
        outcomes: dict[str, Outcome] = {}
        if any(not check.is_async for check in rubric.checks):
            outcomes = await asyncio.to_thread(self.evaluate_sync, rubric, item)
        return await self.finish(rubric, item, outcomes, epoch=epoch, allow_judge=allow_judge)
