"""Rubric checks, one module per family; ``CHECK_TYPES`` is the registry of every check type.

- ``text``: regex, contains, not_contains, contains_any, length
- ``structured``: json_valid, json_schema
- ``semantic``: grounded, reference_similarity (need an ``embed`` callable)
- ``judge``: llm_judge (needs a ``judge`` callable)
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated

from pydantic import Field

from eval.checks.base import CheckConfig, Embed, Judge, Outcome, ScoreInput, Tools
from eval.checks.judge import (
    JUDGE_SCHEMA,
    JudgeCall,
    JudgeReply,
    JudgeReplyError,
    LlmJudgeCheck,
    parse_judge_reply,
)
from eval.checks.semantic import GroundedCheck, ReferenceSimilarityCheck
from eval.checks.structured import JsonSchemaCheck, JsonValidCheck
from eval.checks.text import (
    ContainsAnyCheck,
    ContainsCheck,
    LengthCheck,
    NotContainsCheck,
    RegexCheck,
)

AnyCheck = Annotated[
    JsonValidCheck
    | JsonSchemaCheck
    | RegexCheck
    | ContainsCheck
    | NotContainsCheck
    | ContainsAnyCheck
    | LengthCheck
    | GroundedCheck
    | ReferenceSimilarityCheck
    | LlmJudgeCheck,
    Field(discriminator="type"),
]
"""Any check's parameters, told apart by ``type``."""

CHECK_TYPES: MappingProxyType[str, type[CheckConfig]] = MappingProxyType(
    {
        check.model_fields["type"].default: check
        for check in (
            JsonValidCheck,
            JsonSchemaCheck,
            RegexCheck,
            ContainsCheck,
            NotContainsCheck,
            ContainsAnyCheck,
            LengthCheck,
            GroundedCheck,
            ReferenceSimilarityCheck,
            LlmJudgeCheck,
        )
    }
)
"""Check type -> its parameter model (for docs and the docs test)."""

__all__ = [
    "AnyCheck",
    "CHECK_TYPES",
    "CheckConfig",
    "ContainsAnyCheck",
    "ContainsCheck",
    "Embed",
    "GroundedCheck",
    "JUDGE_SCHEMA",
    "JsonSchemaCheck",
    "JsonValidCheck",
    "Judge",
    "JudgeCall",
    "JudgeReply",
    "JudgeReplyError",
    "LengthCheck",
    "LlmJudgeCheck",
    "NotContainsCheck",
    "Outcome",
    "ReferenceSimilarityCheck",
    "RegexCheck",
    "ScoreInput",
    "Tools",
    "parse_judge_reply",
]
