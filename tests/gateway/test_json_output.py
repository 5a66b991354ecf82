"""Guaranteed JSON through the gateway with the real model and the openai client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, MODEL, running_gateway, scrape

TICKET = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "priority": {"enum": ["low", "medium", "high"]},
        "owner": {
            "type": "object",
            "properties": {"team": {"enum": ["billing", "support"]}},
            "required": ["team"],
        },
    },
    "required": ["title", "priority", "owner"],
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET}}
ASK = [{"role": "user", "content": "File a ticket: the invoice page is down, billing team."}]


@pytest.fixture(scope="module")
def gateway(engine_url: str, adapter_root: Path, tmp_path_factory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("json") / "t.db"
    settings = Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=adapter_root,
        database_url=f"sqlite:///{db}",
    )  # fmt: skip
    with running_gateway(settings) as url:
        yield url


@pytest.fixture(scope="module")
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0)


def test_nested_schema_with_enums_gives_valid_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=80, temperature=0, response_format=FORMAT
    )
    ticket = json.loads(reply.choices[0].message.content)
    jsonschema.validate(ticket, TICKET)
    assert reply.model_extra["tuneloop_validation"]["valid"] is True


def test_truncation_is_repaired_or_refused_with_422(client: openai.OpenAI, gateway: str) -> None:
    try:
        reply = client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=4, temperature=0, response_format=FORMAT
        )
    except openai.UnprocessableEntityError as exc:
        assert exc.code == "json_validation_failed"
        assert "cut off by max_tokens" in exc.message and "3 attempt(s)" in exc.message
    else:
        jsonschema.validate(json.loads(reply.choices[0].message.content), TICKET)
        assert reply.model_extra["tuneloop_validation"]["attempts"] > 1
    samples = scrape(f"{gateway}/metrics")
    repairs = samples[("tuneloop_json_repair_attempts_total", frozenset({"model": MODEL}.items()))]
    assert repairs >= 2


def test_report_mode_returns_the_invalid_output_marked(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=3, temperature=0, response_format=FORMAT,
        extra_body={"json_validation": "report"},
    )  # fmt: skip
    verdict = reply.model_extra["tuneloop_validation"]
    if verdict["valid"]:
        jsonschema.validate(json.loads(reply.choices[0].message.content), TICKET)
    else:
        assert verdict["errors"] and verdict["attempts"] == 3


def test_malformed_schema_is_400(client: openai.OpenAI) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, response_format=bad)
    assert "invalid JSON schema" in caught.value.message
    assert caught.value.param == "response_format.json_schema.schema"


def test_text_completions_honour_the_schema_too(client: openai.OpenAI) -> None:
    pet = {
        "type": "object",
        "properties": {"animal": {"enum": ["cat", "dog"]}},
        "required": ["animal"],
        "additionalProperties": False,
    }
    reply = client.completions.create(
        model=MODEL, prompt="Which animal says meow? Answer in JSON:", max_tokens=24,
        temperature=0,
        extra_body={"response_format": {"type": "json_schema",
                                         "json_schema": {"name": "pet", "schema": pet}}},
    )  # fmt: skip
    assert json.loads(reply.choices[0].text)["animal"] in ("cat", "dog")
    assert reply.model_extra["tuneloop_validation"]["valid"] is True


def test_alias_with_a_bound_schema_validates_without_the_client_sending_one(
    gateway: str, client: openai.OpenAI, trained_adapters: dict[str, Path]
) -> None:
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    registered = httpx.post(
        f"{gateway}/admin/adapters", headers=admin, timeout=120,
        json={"name": "ticketer", "path": trained_adapters["v1"].name},
    )  # fmt: skip
    assert registered.status_code == 201, registered.text
    bind = httpx.put(
        f"{gateway}/admin/aliases/tickets", headers=admin, timeout=120,
        json={"targets": {"ticketer@v1": 100}, "response_format": FORMAT},
    )  # fmt: skip
    assert bind.status_code == 200 and bind.json()["response_format"] == FORMAT
    reply = client.chat.completions.create(
        model="tickets", messages=ASK, max_tokens=80, temperature=0
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), TICKET)
    assert reply.model_extra["tuneloop_validation"]["valid"] is True
    broken = httpx.put(
        f"{gateway}/admin/aliases/tickets", headers=admin,
        json={"targets": {"ticketer@v1": 100},
              "response_format": {"type": "json_schema", "json_schema": {"schema": []}}},
    )  # fmt: skip
    assert broken.status_code == 400


def test_stream_with_schema_ends_valid_or_with_an_error_event(client: openai.OpenAI) -> None:
    text = ""
    for chunk in client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=80, temperature=0, response_format=FORMAT,
        stream=True,
    ):  # fmt: skip
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    jsonschema.validate(json.loads(text), TICKET)

    with pytest.raises(openai.APIError) as caught:
        for _ in client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=4, temperature=0, response_format=FORMAT,
            stream=True,
        ):  # fmt: skip
            pass
    assert "failed JSON validation" in caught.value.message
