"""Guaranteed JSON: what a response must satisfy, checking it, and asking again when it fails.

Constrained decoding in vLLM is the first line; this module is the promise. ``JsonSpec`` comes
from OpenAI's ``response_format`` (``json_object`` or ``json_schema``, JSON Schema Draft
2020-12), or from an alias that binds one. ``violations`` lists what is wrong with a text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from gateway.exceptions import InvalidRequest

MAX_REPORTED_ERRORS = 5


class JsonValidationFailed(InvalidRequest):
    """The model's output stayed invalid after every retry."""

    status_code = 422
    code = "json_validation_failed"


@dataclass(frozen=True)
class JsonSpec:
    """The JSON a response must hold; ``response_format`` is what vLLM is sent to guide it."""

    kind: Literal["json_object", "json_schema"]
    response_format: dict[str, Any]
    validator: Draft202012Validator | None = None

    @property
    def schema(self) -> dict[str, Any] | None:
        return self.validator.schema if self.validator is not None else None


def parse_response_format(value: object, *, max_schema_bytes: int) -> JsonSpec | None:
    """The spec for an OpenAI ``response_format``; ``None`` for plain text; 400 when invalid."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("response_format must be an object", param="response_format")
    kind = value.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return JsonSpec(kind="json_object", response_format={"type": "json_object"})
    if kind != "json_schema":
        raise InvalidRequest(
            f"response_format.type {kind!r} is not one of 'text', 'json_object', 'json_schema'",
            param="response_format.type",
        )
    body = value.get("json_schema")
    schema = body.get("schema") if isinstance(body, dict) else None
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "response_format.json_schema.schema must be a JSON Schema object",
            param="response_format.json_schema.schema",
        )
    canonical = json.dumps(schema, sort_keys=True)
    if len(canonical) > max_schema_bytes:
        raise InvalidRequest(
            f"JSON schema of {len(canonical)} bytes exceeds the {max_schema_bytes}-byte limit",
            param="response_format.json_schema.schema",
        )
    return JsonSpec(kind="json_schema", response_format=value, validator=_validator(canonical))


@lru_cache(maxsize=256)
def _validator(canonical_schema: str) -> Draft202012Validator:
    """Check and compile a schema once: clients and aliases send the same few again and again."""
    schema = json.loads(canonical_schema)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise InvalidRequest(
            f"invalid JSON schema at {where}: {exc.message}",
            param="response_format.json_schema.schema",
        ) from exc
    validator = Draft202012Validator(schema)
    try:
        _check_references(schema)
        validator.is_valid({})  # follows the root's references: a cycle among them never ends
    except (Unresolvable, RecursionError) as exc:
        problem = "its references loop" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidRequest(
            f"invalid JSON schema: {problem}"[:500], param="response_format.json_schema.schema"
        ) from exc
    return validator


def _check_references(schema: dict[str, Any]) -> None:
    """Every ``$ref`` points inside the schema (``#...``), at something that is there.

    Nothing is ever fetched: constrained decoding in vLLM supports local references only, and
    an unresolvable one would fail the validation of every answer.
    """
    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    stack: list[Any] = [schema]
    while stack:  # no recursion: the schema may be deep
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    if not value.startswith("#"):
                        raise InvalidRequest(
                            f"JSON schema reference {value[:200]!r} is not local: only '#...' "
                            "references are supported",
                            param="response_format.json_schema.schema",
                        )
                    resolver.lookup(value)
                else:
                    stack.append(value)


def violations(spec: JsonSpec, text: str | None, *, truncated: bool = False) -> list[str]:
    """What is wrong with ``text`` under ``spec``; empty when it is valid."""
    try:
        value = json.loads(text or "")
    except json.JSONDecodeError as exc:
        reason = "cut off by max_tokens" if truncated else f"not valid JSON ({exc.msg})"
        return [f"the output is {reason} at line {exc.lineno} column {exc.colno}"]
    if spec.validator is None:
        return [] if isinstance(value, dict) else ["the output is JSON but not an object"]
    try:
        errors = sorted(spec.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    except (Unresolvable, RecursionError):  # a reference loop only this answer's nesting reaches
        return ["the schema's references loop or cannot be followed for this output"]
    return [f"at {_path(error.absolute_path)}: {error.message}" for error in errors][
        :MAX_REPORTED_ERRORS
    ]


def _path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def repair_instruction(spec: JsonSpec, errors: list[str]) -> str:
    """The message appended to a chat when its answer failed validation."""
    wanted = (
        f"JSON matching this schema: {json.dumps(spec.schema)}"
        if spec.schema is not None
        else "a JSON object"
    )
    return (
        "Your previous answer was rejected: " + "; ".join(errors) + f". Answer again with only "
        f"{wanted}. No text before or after the JSON."
    )
