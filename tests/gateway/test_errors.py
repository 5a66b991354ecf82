"""Every error a client can meet, in the OpenAI shape with the right status."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.engine import free_port
from gateway.settings import Settings
from tests.helpers import MODEL, running_gateway

HI = [{"role": "user", "content": "hi"}]


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture(scope="module")
def guarded(engine_url: str) -> Iterator[str]:
    """A gateway with inference keys, a small body limit and a short read timeout."""
    settings = Settings(
        upstreams=[engine_url],
        api_keys="key-one,key-two",
        max_body_bytes=2048,
        upstream_read_timeout=0.3,
    )
    with running_gateway(settings) as url:
        yield url


def sdk(url: str, key: str = "key-one") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HI, max_tokens=2)
    assert caught.value.code == "model_not_found"
    assert "no-such-model" in caught.value.message


def test_malformed_json_is_400(serve) -> None:
    response = httpx.post(
        f"{serve.gateway_url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert "JSON" in error["message"]


def test_invalid_fields_are_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[], max_tokens=2)
    assert caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HI, max_tokens=-1)
    assert caught.value.param == "max_tokens"


def test_upstream_refusal_passes_through_in_openai_shape(client: openai.OpenAI) -> None:
    # vLLM refuses a prompt longer than its context: its 400 reaches the client unchanged.
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="hello " * 3000, max_tokens=2)
    assert caught.value.status_code == 400


def test_api_keys_required_when_configured(guarded: str) -> None:
    missing = httpx.post(f"{guarded}/v1/chat/completions", json={"model": MODEL, "messages": HI})
    assert_openai_error(missing, 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        sdk(guarded, key="key-three").models.list()
    assert MODEL in [m.id for m in sdk(guarded, key="key-two").models.list().data]
    assert httpx.get(f"{guarded}/healthz").status_code == 200, "probes need no key"


def test_oversized_body_is_413(guarded: str) -> None:
    big = [{"role": "user", "content": "x" * 4096}]
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(guarded).chat.completions.create(model=MODEL, messages=big, max_tokens=2)
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"


def test_upstream_timeout_is_504(guarded: str) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(guarded).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a long story."}],
            max_tokens=200,
            extra_body={"ignore_eos": True},
        )
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


def test_no_ready_upstream_is_503() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with running_gateway(Settings(upstreams=[nobody], health_interval=60)) as url:
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["upstreams"][0]["ready"] is False
        chat = httpx.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": HI})
        assert_openai_error(chat, 503, "no_ready_upstream")
        assert_openai_error(httpx.get(f"{url}/v1/models"), 503)


def test_unknown_route_is_openai_shaped_404(serve) -> None:
    assert_openai_error(httpx.get(f"{serve.gateway_url}/v1/nothing-here"), 404)
