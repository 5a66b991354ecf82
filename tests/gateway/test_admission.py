"""Admission control and cancelled work, against the real engine.

- A client that gives up on a non-streaming answer (or closes a stream) stops the generation
  in vLLM at once (vLLM counts it as ``finished_reason="abort"``) and the gateway counts the
  request as 499 with nothing left in flight.
- Per-request caps refuse what would starve the engine (``n``, ``max_tokens``, stop
  sequences, messages, roles) with a 400 naming the parameter; a chat request without
  ``max_tokens`` gets the default.
- Past the gateway-wide or per-replica limit, requests wait in a bounded queue; a full queue
  or a spent wait is a 429 with ``Retry-After`` in OpenAI's rate-limit shape.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.conftest import ServeProcess
from tests.helpers import MODEL, running_gateway, scrape, wait_until

LONG = {"max_tokens": 1500, "ignore_eos": True, "temperature": 0}  # minutes on this CPU


def chat(content: str = "Count slowly.", **extra: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def metric(url: str, name: str, **labels: str) -> float:
    samples = scrape(f"{url}/metrics")
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def generated(engine_url: str) -> float:
    return metric(engine_url, "vllm:generation_tokens_total")


def engine_busy(engine_url: str) -> float:
    return metric(engine_url, "vllm:num_requests_running") + metric(
        engine_url, "vllm:num_requests_waiting"
    )


def assert_stopped(engine_url: str, before: float, *, tries: int = 1) -> float:
    """Seconds until vLLM holds no request; it had generated, then stopped far short of
    ``LONG``'s max_tokens for each try."""
    left = time.monotonic()
    wait_until(lambda: engine_busy(engine_url) == 0, timeout=30, what="vLLM to abort")
    seconds = time.monotonic() - left
    stopped = generated(engine_url)
    time.sleep(1.0)
    assert generated(engine_url) == stopped, "vLLM kept generating"
    assert 0 < stopped - before < tries * LONG["max_tokens"] / 4
    return seconds


def test_client_timeout_aborts_the_generation_in_vllm(serve: ServeProcess, engine_url: str) -> None:
    url = serve.gateway_url
    before, closed = generated(engine_url), metric(url, "tuneloop_requests_total", status="499")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=chat(**LONG), timeout=3)
    seconds = assert_stopped(engine_url, before)
    print(f"client disconnect to vLLM abort (non-streaming): {seconds:.2f} s")
    wait_until(
        lambda: metric(url, "tuneloop_requests_total", status="499") == closed + 1,
        timeout=10,
        what="the request counted as 499",
    )
    assert metric(url, "tuneloop_requests_in_flight") == 0


def test_closed_stream_aborts_the_generation_in_vllm(serve: ServeProcess, engine_url: str) -> None:
    url = serve.gateway_url
    before = generated(engine_url)
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=chat(stream=True, **LONG), timeout=60
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        while not next(lines).startswith("data: {"):
            pass  # the first token has arrived: the engine is generating
    seconds = assert_stopped(engine_url, before)
    print(f"client disconnect to vLLM abort (stream): {seconds:.2f} s")
    wait_until(lambda: metric(url, "tuneloop_requests_in_flight") == 0, 10, "nothing in flight")


def test_a_retrying_client_does_not_multiply_work(serve: ServeProcess, engine_url: str) -> None:
    """The OpenAI SDK retries a timed-out request twice: each try's work stops with it."""
    url = serve.gateway_url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=2.0)
    before, closed = generated(engine_url), metric(url, "tuneloop_requests_total", status="499")
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(**chat(max_tokens=1500, extra_body={"ignore_eos": True}))
    assert_stopped(engine_url, before, tries=3)
    wait_until(
        lambda: metric(url, "tuneloop_requests_total", status="499") == closed + 3,
        timeout=10,
        what="three tries counted as 499",
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(n=1000, max_tokens=1), "n"),
        (chat(best_of=9, max_tokens=1), "best_of"),
        (chat(max_tokens=1_000_000), "max_tokens"),
        (chat(max_completion_tokens=5000), "max_completion_tokens"),
        (chat(stop=[f"s{i}" for i in range(17)], max_tokens=1), "stop"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}] * 513},
            "messages",
        ),
        (
            {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}], "max_tokens": 1},
            "messages.0.role",
        ),
    ],
    ids=["n", "best_of", "max_tokens", "max_completion_tokens", "stop", "messages", "role"],
)
def test_requests_over_a_cap_are_refused(serve: ServeProcess, body: dict, param: str) -> None:
    response = httpx.post(f"{serve.gateway_url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def _post_later(url: str, body: dict, timeout: float = 300) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, timeout=timeout)
    pool.shutdown(wait=False)
    return future


def _when(predicate: Callable[[], bool], what: str) -> None:
    wait_until(predicate, timeout=60, what=what, interval=0.05)


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_full_queue_is_refused_with_retry_after(engine_url: str, tmp_path: Path) -> None:
    settings = Settings(
        upstreams=[engine_url], data_dir=tmp_path, max_in_flight=1, max_queue=1,
        queue_timeout=120, default_max_tokens=3, eval_sample_rate=0,
    )  # fmt: skip
    with running_gateway(settings) as url:
        # The first holds the only slot until its client gives up (which frees it at once).
        first = _post_later(url, chat(**LONG), timeout=10)
        _when(lambda: metric(url, "tuneloop_requests_in_flight") == 1, "first in flight")
        second = _post_later(url, chat(ignore_eos=True))  # no max_tokens: the default (3)
        _when(lambda: metric(url, "tuneloop_admission_waiting") == 1, "second queued")

        _assert_rate_limited(httpx.post(f"{url}/v1/chat/completions", json=chat(), timeout=10))
        assert metric(url, "tuneloop_admission_rejected_total", reason="queue_full") == 1

        with pytest.raises(httpx.ReadTimeout):
            first.result()
        answered = second.result()
        assert answered.status_code == 200, answered.text
        assert answered.json()["usage"]["completion_tokens"] == 3
        assert metric(url, "tuneloop_admission_waiting") == 0


def test_waits_end_with_429_at_the_deadline(engine_url: str, tmp_path: Path) -> None:
    """Gateway-wide (``max_in_flight``) and per replica (``max_in_flight_per_replica``)."""
    for limit, reason in (({"max_in_flight": 1}, "queue_timeout"),
                          ({"max_in_flight_per_replica": 1}, "replica_full")):  # fmt: skip
        settings = Settings(
            upstreams=[engine_url], data_dir=tmp_path / reason, queue_timeout=1,
            eval_sample_rate=0, **limit,
        )  # fmt: skip
        with running_gateway(settings) as url:
            long = _post_later(url, chat(max_tokens=40, ignore_eos=True))
            _when(lambda: metric(url, "tuneloop_requests_in_flight") == 1, "long in flight")
            began = time.monotonic()
            waited = httpx.post(f"{url}/v1/chat/completions", json=chat(max_tokens=1), timeout=30)
            _assert_rate_limited(waited)
            assert 0.9 <= time.monotonic() - began < 10
            assert metric(url, "tuneloop_admission_rejected_total", reason=reason) == 1
            assert long.result().status_code == 200
