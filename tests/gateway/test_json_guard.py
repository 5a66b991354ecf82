"""The JSON checks themselves: specs from response_format, violations, repair requests."""

from __future__ import annotations

import pytest

from gateway.exceptions import InvalidRequest
from gateway.openai.json_guard import parse_response_format, violations
from gateway.openai.json_retry import check_choices, repaired
from gateway.openai.protocol import ChatCompletionRequest

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "level": {"enum": ["low", "high"]},
        "owner": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
    },
    "required": ["name", "level"],
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA}}


def spec():
    return parse_response_format(FORMAT, max_schema_bytes=10_000)


def test_text_and_absent_formats_need_nothing() -> None:
    assert parse_response_format(None, max_schema_bytes=10) is None
    assert parse_response_format({"type": "text"}, max_schema_bytes=10) is None


def test_schema_violations_name_the_path() -> None:
    assert violations(spec(), '{"name": "a", "level": "low", "owner": {"id": 3}}') == []
    errors = violations(spec(), '{"name": "a", "level": "mid", "owner": {"id": "x"}}')
    assert errors == [
        "at $.level: 'mid' is not one of ['low', 'high']",
        "at $.owner.id: 'x' is not of type 'integer'",
    ]
    assert violations(spec(), '{"name": "a"}') == ["at $: 'level' is a required property"]


def test_bad_and_truncated_json() -> None:
    assert "not valid JSON" in violations(spec(), "Sure! {")[0]
    assert "cut off by max_tokens" in violations(spec(), '{"name": "a', truncated=True)[0]
    json_object = parse_response_format({"type": "json_object"}, max_schema_bytes=10)
    assert violations(json_object, "[1, 2]") == ["the output is JSON but not an object"]
    assert violations(json_object, '{"any": 1}') == []


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}, "invalid JSON"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "must be a JSON Schema object"),
        ({"type": "yaml"}, "is not one of"),
        ("json", "must be an object"),
    ],
)
def test_invalid_formats_are_400(value: object, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_response_format(value, max_schema_bytes=10_000)
    assert words in caught.value.message and caught.value.status_code == 400


def test_schema_size_limit() -> None:
    with pytest.raises(InvalidRequest, match="exceeds the 20-byte limit"):
        parse_response_format(FORMAT, max_schema_bytes=20)


def test_repair_shows_the_rejected_answer_and_gives_more_room() -> None:
    request = ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "ticket?"}], max_tokens=10
    )
    body = {"choices": [{"index": 0, "message": {"content": '{"name": 1'},
                         "finish_reason": "length"}]}  # fmt: skip
    errors = check_choices(spec(), body)
    assert errors == ["the output is cut off by max_tokens at line 1 column 11"]
    again = repaired(request, body, spec(), errors)
    assert again.max_tokens == 20
    assert [m.role for m in again.messages] == ["user", "assistant", "user"]
    assert again.messages[1].content == '{"name": 1'
    assert "cut off by max_tokens" in again.messages[2].content
    assert '"enum": ["low", "high"]' in again.messages[2].content
    assert request.messages[-1].role == "user", "the original request is untouched"
