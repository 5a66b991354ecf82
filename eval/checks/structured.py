"""Checks on structured answers: json_valid and json_schema (Draft 2020-12).

Both are binary. The answer must be JSON as it stands (surrounding whitespace aside): a JSON
value wrapped in prose or a code fence fails, as it would fail a client parsing it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from pydantic import Field, PrivateAttr, model_validator

from eval.checks.base import TYPE_HELP, CheckConfig, Outcome, ScoreInput, Tools, binary, invalid


def _load(answer: str) -> tuple[Any, str | None]:
    """The parsed answer, or (None, why it is not JSON)."""
    try:
        return json.loads(answer), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"


class JsonValidCheck(CheckConfig):
    """Passes when the answer parses as JSON."""

    type: Literal["json_valid"] = Field(default="json_valid", description=TYPE_HELP)

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        _, error = _load(item.answer)
        return binary(error is None, error)


class JsonSchemaCheck(CheckConfig):
    """Passes when the answer is JSON that validates against ``schema`` (Draft 2020-12)."""

    type: Literal["json_schema"] = Field(default="json_schema", description=TYPE_HELP)
    schema_: dict[str, Any] | bool = Field(
        alias="schema", description="JSON Schema (Draft 2020-12) the parsed answer must satisfy."
    )

    _validator: Draft202012Validator = PrivateAttr()

    @model_validator(mode="after")
    def _compile(self) -> JsonSchemaCheck:
        try:
            Draft202012Validator.check_schema(self.schema_)
        except SchemaError as exc:
            where = "/".join(str(part) for part in exc.path) or "(root)"
            raise invalid(f"invalid JSON schema at {where}: {exc.message}", field="schema") from exc
        self._validator = Draft202012Validator(self.schema_)
        return self

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        value, error = _load(item.answer)
        if error is not None:
            return binary(False, f"answer is {error}")
        problem = best_match(self._validator.iter_errors(value))
        if problem is None:
            return binary(True)
        where = "/".join(str(part) for part in problem.absolute_path) or "(root)"
        return binary(False, f"at {where}: {problem.message}")
