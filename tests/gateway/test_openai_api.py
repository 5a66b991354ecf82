"""The OpenAI surface through the real gateway, real vLLM and the real model, with the SDK."""

from __future__ import annotations

import re

import httpx
import openai

from tests.helpers import MODEL, scrape

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_completion_answers_from_the_real_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=16, temperature=0
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.model == MODEL
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert "Paris" in reply.choices[0].text
    assert reply.usage.prompt_tokens > 0


def test_chat_stream_passes_chunks_and_hides_usage_unless_asked(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=16, temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert len(chunks) > 2, "the answer should arrive in several chunks"
    assert all(c.usage is None for c in chunks), "usage was not asked for"


def test_chat_stream_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].choices == []


def test_completion_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="The capital of France is",
            max_tokens=4,
            temperature=0,
            stream=True,
        )
    )
    assert "Paris" in "".join(c.choices[0].text for c in chunks if c.choices)


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert models.data[0].id == MODEL, "the base model comes first"
    assert models.data[0].object == "model" and models.data[0].parent is None
    # Anything else listed is an adapter version or alias on top of the base model.
    assert all(m.parent == MODEL for m in models.data[1:])


def test_request_id_echoed_and_overhead_reported(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION, max_tokens=2, extra_headers={"x-request-id": "abc-123"}
    )
    assert raw.headers["x-request-id"] == "abc-123"
    overhead = float(raw.headers["x-tuneloop-overhead-ms"])
    assert 0 <= overhead < 1000
    fresh = client.models.with_raw_response.list()
    assert re.fullmatch(r"req-[0-9a-f]{32}", fresh.headers["x-request-id"])


def test_metrics_count_requests_tokens_and_stream_timing(client: openai.OpenAI, serve) -> None:
    client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3)
    list(client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3, stream=True))
    samples = scrape(f"{serve.gateway_url}/metrics")
    chat = {"model": MODEL, "endpoint": "chat"}
    served = {"model": MODEL, "version": MODEL}
    ok = frozenset({**served, "endpoint": "chat", "status": "200"}.items())
    assert samples[("tuneloop_requests_total", ok)] >= 2
    assert samples[("tuneloop_completion_tokens_total", frozenset(served.items()))] >= 6
    assert samples[("tuneloop_prompt_tokens_total", frozenset(served.items()))] > 0
    assert samples[("tuneloop_time_to_first_token_seconds_count", frozenset(chat.items()))] >= 1
    assert samples[("tuneloop_gateway_overhead_seconds_count", frozenset())] >= 2
    ready = ("tuneloop_upstream_ready", frozenset({"upstream": serve.engine_url}.items()))
    assert samples[ready] == 1
    assert samples[("tuneloop_requests_in_flight", frozenset({"endpoint": "chat"}.items()))] == 0


def test_health_and_readiness(serve) -> None:
    assert httpx.get(f"{serve.gateway_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{serve.gateway_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["upstreams"][0]["ready"] is True
