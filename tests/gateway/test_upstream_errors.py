"""A model server that answers an error: the client gets the same status with an OpenAI-shaped
body, whatever the server (or a proxy in front of it) wrote. The sick replica is a stub process
(a real vLLM server cannot be told to answer HTML on cue)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from gateway.openai.upstream_errors import QUOTED_CHARS, upstream_error_body
from gateway.settings import Settings
from tests.helpers import MODEL, running_gateway, stub_upstream

HI = [{"role": "user", "content": "Say hello."}]


def error_of(body: bytes) -> dict[str, object]:
    parsed = json.loads(body)
    assert set(parsed) == {"error"}, parsed
    error = parsed["error"]
    assert isinstance(error, dict) and isinstance(error["message"], str)
    return error


def test_an_openai_shaped_error_passes_through_untouched() -> None:
    body = json.dumps(
        {"error": {"message": "max_tokens is too large", "type": "BadRequestError", "code": 400}}
    ).encode()
    assert upstream_error_body(400, body) is body


@pytest.mark.parametrize(
    ("status", "content", "message", "error_type"),
    [
        (
            502,
            b"<html><body><h1>Bad Gateway</h1>\n</body></html>",
            "the model server answered 502: <html><body><h1>Bad Gateway</h1> </body></html>",
            "upstream_error",
        ),
        (500, b"Internal Server Error", "the model server answered 500: Internal Server Error",
         "upstream_error"),
        (503, b"", "the model server answered 503 with no body", "upstream_error"),
        (404, b"\xff\xfenot utf-8", "the model server answered 404: \ufffd\ufffdnot utf-8",
         "invalid_request_error"),
        (400, b'{"object": "error", "message": "bad prompt", "type": "BadRequestError", '
              b'"param": "messages"}', "bad prompt", "BadRequestError"),
        (500, b'["a", "list"]', 'the model server answered 500: ["a", "list"]', "upstream_error"),
        (500, b'{"error": "a string"}', 'the model server answered 500: {"error": "a string"}',
         "upstream_error"),
    ],
)  # fmt: skip
def test_anything_else_is_rewrapped_with_the_servers_words(
    status: int, content: bytes, message: str, error_type: str
) -> None:
    error = error_of(upstream_error_body(status, content))
    assert (error["message"], error["type"]) == (message, error_type)


def test_a_long_page_is_quoted_in_part() -> None:
    error = error_of(upstream_error_body(502, b"x" * 10_000))
    assert error["message"] == "the model server answered 502: " + "x" * QUOTED_CHARS + "…"


@pytest.mark.parametrize("status", [500, 502])
def test_a_replica_answering_html_gives_the_client_an_openai_error(status: int) -> None:
    with (
        stub_upstream(error_status=status) as stub,
        running_gateway(Settings(upstreams=[stub.url])) as url,
    ):
        response = httpx.post(
            f"{url}/v1/chat/completions", json={"model": MODEL, "messages": HI}, timeout=30
        )
        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/json")
        assert "Bad Gateway" in str(error_of(response.content)["message"])

        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for extra in ({}, {"stream": True}, {"response_format": {"type": "json_object"}}):
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model=MODEL, messages=HI, max_tokens=4, **extra)
            assert caught.value.status_code == status, extra
            assert isinstance(caught.value.body, dict), "the SDK parsed an OpenAI error"
            assert caught.value.body["type"] == "upstream_error", extra
            assert caught.value.body["message"].startswith(f"the model server answered {status}: ")
