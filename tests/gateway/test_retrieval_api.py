"""Retrieval through the gateway: fresh facts, cited, updated, deleted, surviving restarts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, MODEL, ROOT, running_gateway

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
QUESTION = [{"role": "user", "content": "What is the support hotline number?"}]


@pytest.fixture(scope="module")
def settings(engine_url: str, adapter_root: Path, tmp_path_factory) -> Settings:
    data = tmp_path_factory.mktemp("rag")
    return Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=adapter_root,
        data_dir=data, model_path=Path("/unused"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def gateway(settings: Settings) -> Iterator[str]:
    with running_gateway(settings) as url:
        created = httpx.post(f"{url}/admin/collections", headers=ADMIN, json={"name": "kb"})
        assert created.status_code == 201, created.text
        yield url


def ingest(url: str, *documents: dict) -> httpx.Response:
    return httpx.post(f"{url}/admin/collections/kb/documents", headers=ADMIN, timeout=60,
                      json={"documents": list(documents)})  # fmt: skip


def search(url: str, query: str, **extra: object) -> list[dict]:
    response = httpx.post(f"{url}/v1/collections/kb/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def test_a_pushed_fact_is_used_and_cited_by_the_next_answer(gateway: str) -> None:
    done = ingest(
        gateway,
        {
            "id": "hotline",
            "source": "kb/support.md",
            "text": "The support hotline number is 555-0142.",
        },
        {"id": "hours", "text": "Our office is open 9 to 5, Monday to Friday."},
    )
    assert done.status_code == 200 and done.json()["documents"] == 2
    reply = client(gateway).chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=24, temperature=0,
        extra_body={"retrieval": {"collection": "kb", "top_k": 2}},
    )  # fmt: skip
    citations = reply.model_extra["citations"]
    assert citations[0]["doc_id"] == "hotline" and citations[0]["index"] == 1
    assert citations[0]["source"] == "kb/support.md" and citations[0]["chunk_id"] == "hotline#0"
    assert "555-0142" in reply.choices[0].message.content


def test_an_update_replaces_the_fact_everywhere(gateway: str) -> None:
    ingest(gateway, {"id": "hotline", "text": "The support hotline number is 555-0199."})
    texts = [hit["text"] for hit in search(gateway, "support hotline number", top_k=5)]
    assert any("555-0199" in t for t in texts)
    assert not any("555-0142" in t for t in texts), "the old chunk must never come back"


def test_streamed_answers_carry_citations_in_the_first_chunk(gateway: str) -> None:
    chunks = list(client(gateway).chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=8, temperature=0, stream=True,
        extra_body={"retrieval": {"collection": "kb", "top_k": 1}},
    ))  # fmt: skip
    assert chunks[0].model_extra["citations"][0]["doc_id"] == "hotline"
    assert all("citations" not in (c.model_extra or {}) for c in chunks[1:])


def test_adapter_retrieval_and_system_prompt_in_one_request(
    gateway: str, trained_adapters: dict[str, Path]
) -> None:
    registered = httpx.post(
        f"{gateway}/admin/adapters",
        headers=ADMIN,
        timeout=120,
        json={"name": "ragger", "path": trained_adapters["v1"].name},
    )
    assert registered.status_code == 201, registered.text
    messages = [
        {"role": "system", "content": "Extract the person's name, age and city from the text. "
         "Answer with JSON only."},
        {"role": "user", "content": "Who answers the hotline? Sam, 30, from Oslo."},
    ]  # fmt: skip
    reply = client(gateway).chat.completions.create(
        model="ragger@v1", messages=messages, max_tokens=24, temperature=0,
        extra_body={"retrieval": {"collection": "kb", "top_k": 1}},
    )  # fmt: skip
    assert reply.model == "ragger@v1"
    assert reply.model_extra["citations"][0]["doc_id"] == "hotline"
    assert "Oslo" in reply.choices[0].message.content

    # The same, with retrieval bound to an alias: the client sends nothing extra.
    bound = httpx.put(
        f"{gateway}/admin/aliases/helpdesk", headers=ADMIN, timeout=120,
        json={"targets": {"ragger@v1": 100}, "retrieval": {"collection": "kb", "top_k": 1}},
    )  # fmt: skip
    assert bound.status_code == 200 and bound.json()["retrieval"]["collection"] == "kb"
    via_alias = client(gateway).chat.completions.create(
        model="helpdesk", messages=messages, max_tokens=24, temperature=0
    )
    assert via_alias.model == "ragger@v1"
    assert via_alias.model_extra["citations"][0]["doc_id"] == "hotline"


def test_delete_then_restart_then_corruption(gateway: str, settings: Settings) -> None:
    gone = httpx.delete(f"{gateway}/admin/collections/kb/documents/hotline", headers=ADMIN)
    assert gone.status_code == 204
    assert all(hit["doc_id"] != "hotline" for hit in search(gateway, "hotline number", top_k=5))
    missing = httpx.delete(f"{gateway}/admin/collections/kb/documents/hotline", headers=ADMIN)
    assert missing.status_code == 404

    with running_gateway(settings) as again:  # same data dir and database
        assert search(again, "When is the office open?", top_k=1)[0]["doc_id"] == "hours"
    (settings.data_dir / "indexes" / "kb.faiss").write_bytes(b"not an index")
    with running_gateway(settings) as rebuilt:
        assert search(rebuilt, "When is the office open?", top_k=1)[0]["doc_id"] == "hours"
        listing = httpx.get(f"{rebuilt}/admin/collections", headers=ADMIN).json()["data"]
        assert listing[0]["name"] == "kb" and listing[0]["documents"] == 1


def test_bad_input_is_refused_and_nothing_is_written(gateway: str) -> None:
    before = httpx.get(f"{gateway}/admin/collections", headers=ADMIN).json()
    assert ingest(gateway, {"id": "x"}).status_code == 400  # no text
    absent = httpx.post(f"{gateway}/admin/collections/nope/documents", headers=ADMIN,
                        json={"documents": [{"id": "a", "text": "b"}]})  # fmt: skip
    assert absent.status_code == 404
    dup = httpx.post(f"{gateway}/admin/collections", headers=ADMIN, json={"name": "kb"})
    assert dup.status_code == 409
    bad = client(gateway)
    with pytest.raises(openai.NotFoundError):
        bad.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=2,
            extra_body={"retrieval": {"collection": "nope"}},
        )
    with pytest.raises(openai.BadRequestError):
        bad.completions.create(
            model=MODEL, prompt="x", max_tokens=2, extra_body={"retrieval": {"collection": "kb"}}
        )
    assert httpx.get(f"{gateway}/admin/collections", headers=ADMIN).json() == before


def test_ingest_command_reads_files_and_creates_the_collection(
    gateway: str, tmp_path: Path
) -> None:
    (tmp_path / "faq.md").write_text("Refunds are processed within 14 days of the request.")
    (tmp_path / "more.jsonl").write_text(
        '{"id": "parking", "text": "Visitor parking is on level 2.", "source": "wiki"}\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "ingest", "handbook", str(tmp_path / "faq.md"),
         str(tmp_path / "more.jsonl"), "--url", gateway],
        cwd=ROOT, env={**os.environ, "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 documents" in result.stdout
    found = httpx.post(
        f"{gateway}/v1/collections/handbook/search",
        json={"query": "where can visitors park?", "top_k": 1},
    ).json()["data"]
    assert found[0]["doc_id"] == "parking" and found[0]["source"] == "wiki"
