"""Replica faults: a replica that dies mid-stream, and failover to the live one.

The dying replica is a stub process (a real vLLM server cannot be told to die on cue); the
live one is the real vLLM server.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.helpers import MODEL, running_gateway, stub_upstream

HI = [{"role": "user", "content": "Say hello."}]


def test_replica_dying_mid_stream_gives_a_clean_error_then_failover(engine_url: str) -> None:
    # Health checks are slow on purpose: the gateway must notice the dead replica by itself.
    with (
        stub_upstream(die_after=2) as stub,
        running_gateway(Settings(upstreams=[stub.url, engine_url], health_interval=300)) as url,
    ):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        failures: list[tuple[str, openai.APIError]] = []
        for _ in range(2):  # two ready replicas, rotating: one of these lands on the stub
            received = ""
            try:
                for chunk in client.chat.completions.create(
                    model=MODEL, messages=HI, max_tokens=4, stream=True
                ):
                    if chunk.choices:
                        received += chunk.choices[0].delta.content or ""
            except openai.APIError as exc:
                failures.append((received, exc))
        assert len(failures) == 1, "exactly the request on the dying replica fails"
        partial, error = failures[0]
        assert partial == "part0 part1 ", "chunks sent before the death reached the client"
        assert "closed the connection" in error.message

        # The stub is dead but still looks healthy; every next request must land on vLLM.
        for _ in range(3):
            reply = client.chat.completions.create(
                model=MODEL, messages=HI, max_tokens=4, temperature=0
            )
            assert reply.choices[0].message.content
        status = httpx.get(f"{url}/readyz").json()["upstreams"]
        assert [u["ready"] for u in status] == [False, True]


def test_streams_spread_across_replicas(engine_url: str) -> None:
    with (
        stub_upstream() as stub,
        running_gateway(Settings(upstreams=[stub.url, engine_url])) as url,
    ):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        answers = [
            client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2)
            .choices[0]
            .message.content
            for _ in range(4)
        ]
    assert answers.count("stub") == 2, answers


@pytest.mark.parametrize("stream", [False, True])
def test_connect_failure_fails_over_before_any_byte(engine_url: str, stream: bool) -> None:
    with (
        stub_upstream() as stub,
        running_gateway(Settings(upstreams=[stub.url, engine_url], health_interval=300)) as url,
    ):
        stub.kill()  # healthy at the last check, refusing connections now
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for _ in range(3):
            if stream:
                chunks = list(
                    client.chat.completions.create(
                        model=MODEL, messages=HI, max_tokens=3, stream=True
                    )
                )
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                text = (
                    client.chat.completions.create(model=MODEL, messages=HI, max_tokens=3)
                    .choices[0]
                    .message.content
                )
            assert text and "part0" not in text and text != "stub"
        assert httpx.get(f"{url}/readyz").json()["upstreams"][0]["ready"] is False
