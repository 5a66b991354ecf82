"""Checks on the answer's text: regex, contains, not_contains, contains_any, length.

All are binary: score 1 (passed) or 0 (failed), and always applicable.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from eval.checks.base import (
    TYPE_HELP,
    CheckConfig,
    Outcome,
    ScoreInput,
    Tools,
    binary,
    clip,
    invalid,
)

FLAG_BITS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


class RegexCheck(CheckConfig):
    """Passes when the pattern matches the answer (or, with ``negate``, when it does not)."""

    type: Literal["regex"] = Field(default="regex", description=TYPE_HELP)
    pattern: str = Field(min_length=1, description="Python regular expression.")
    mode: Literal["search", "full"] = Field(
        default="search",
        description="'search': match anywhere in the answer; 'full': the whole answer must match.",
    )
    flags: str = Field(
        default="",
        description="re flags as letters: i (ignore case), m (multiline), s (dotall), x (verbose).",
    )
    negate: bool = Field(default=False, description="Pass when the pattern does NOT match.")

    _compiled: re.Pattern[str] = PrivateAttr()

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, flags: str) -> str:
        unknown = sorted(set(flags) - set(FLAG_BITS))
        if unknown:
            raise ValueError(f"unknown flag {unknown[0]!r}; flags are letters of 'imsx'")
        return flags

    @model_validator(mode="after")
    def _compile(self) -> RegexCheck:
        bits = 0
        for letter in self.flags:
            bits |= FLAG_BITS[letter]
        try:
            self._compiled = re.compile(self.pattern, bits)
        except re.error as exc:
            raise invalid(f"invalid regular expression: {exc}", field="pattern") from exc
        return self

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        find = self._compiled.fullmatch if self.mode == "full" else self._compiled.search
        match = find(item.answer)
        if self.negate:
            if match is None:
                return binary(True)
            return binary(False, f"matched {clip(match.group(0), 80)!r}, which must not appear")
        if match is None:
            what = "the whole answer does not match" if self.mode == "full" else "no match"
            return binary(False, what)
        return binary(True)


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


class ContainsCheck(CheckConfig):
    """Passes when the answer contains ``value``."""

    type: Literal["contains"] = Field(default="contains", description=TYPE_HELP)
    value: str = Field(min_length=1, description="Text that must appear in the answer.")
    case_sensitive: bool = Field(default=True, description="Compare case-sensitively.")

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        found = _fold(self.value, self.case_sensitive) in _fold(item.answer, self.case_sensitive)
        return binary(found, None if found else f"{clip(self.value, 80)!r} not found")


class NotContainsCheck(CheckConfig):
    """Passes when the answer does not contain ``value``."""

    type: Literal["not_contains"] = Field(default="not_contains", description=TYPE_HELP)
    value: str = Field(min_length=1, description="Text that must not appear in the answer.")
    case_sensitive: bool = Field(default=True, description="Compare case-sensitively.")

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        found = _fold(self.value, self.case_sensitive) in _fold(item.answer, self.case_sensitive)
        return binary(not found, f"{clip(self.value, 80)!r} found" if found else None)


class ContainsAnyCheck(CheckConfig):
    """Passes when the answer contains at least one of ``values``."""

    type: Literal["contains_any"] = Field(default="contains_any", description=TYPE_HELP)
    values: list[str] = Field(
        min_length=1, description="Texts of which at least one must appear in the answer."
    )
    case_sensitive: bool = Field(default=True, description="Compare case-sensitively.")

    @field_validator("values")
    @classmethod
    def _no_empty(cls, values: list[str]) -> list[str]:
        if any(not value for value in values):
            raise ValueError("values must be non-empty strings")
        return values

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        answer = _fold(item.answer, self.case_sensitive)
        found = any(_fold(value, self.case_sensitive) in answer for value in self.values)
        return binary(found, None if found else f"none of {len(self.values)} values found")


class LengthCheck(CheckConfig):
    """Passes when the answer's length lies within ``min``..``max`` (both inclusive)."""

    type: Literal["length"] = Field(default="length", description=TYPE_HELP)
    unit: Literal["chars", "tokens"] = Field(
        default="chars",
        description="'chars', or 'tokens': the scorer's tokenizer, else whitespace-split words.",
    )
    min: int | None = Field(default=None, ge=0, description="Least length allowed.")
    max: int | None = Field(default=None, ge=0, description="Greatest length allowed.")

    @model_validator(mode="after")
    def _bounds(self) -> LengthCheck:
        if self.min is None and self.max is None:
            raise invalid("a length check needs min, max or both", field="max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise invalid(f"min ({self.min}) is greater than max ({self.max})", field="min")
        return self

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        if self.unit == "chars":
            size = len(item.answer)
        elif tools.count_tokens is not None:
            size = tools.count_tokens(item.answer)
        else:
            size = len(item.answer.split())
        if self.min is not None and size < self.min:
            return binary(False, f"{size} {self.unit} < min {self.min}")
        if self.max is not None and size > self.max:
            return binary(False, f"{size} {self.unit} > max {self.max}")
        return binary(True, f"{size} {self.unit}")
