"""Collections on real embeddings, real FAISS and a real database (SQLite, PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.db import create_db_engine
from retrieval.chunking import chunk_text
from retrieval.collections import Collections, Document, RetrievalError
from retrieval.embedder import DIMENSION, Embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def open_collections(tmp_path: Path, embedder: Embedder, database_url: str) -> Collections:
    engine = create_db_engine(database_url)
    collections = Collections(engine, tmp_path / "indexes", embedder, dimension=DIMENSION)
    collections.open_all()
    return collections


def test_embeddings_are_unit_vectors_that_rank_by_meaning(embedder: Embedder) -> None:
    vectors = embedder.embed(["The cat sleeps on the sofa.", "A kitten naps on the couch.",
                              "Quarterly revenue grew by 4%."])  # fmt: skip
    assert vectors.shape == (3, DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_chunks_overlap_and_cover_the_text() -> None:
    words = [f"w{i}" for i in range(25)]
    chunks = chunk_text(" ".join(words), size=10, overlap=3)
    assert [c.split()[0] for c in chunks] == ["w0", "w7", "w14", "w21"]
    assert chunks[0].split()[-3:] == chunks[1].split()[:3]
    assert chunks[-1].split()[-1] == "w24"
    assert chunk_text("   ", size=10, overlap=3) == []


def test_upsert_replaces_old_chunks_and_delete_removes_them(
    tmp_path: Path, embedder: Embedder, database_url: str
) -> None:
    c = open_collections(tmp_path, embedder, database_url)
    c.create("facts", chunk_size=50, chunk_overlap=10)
    c.upsert("facts", [
        Document(id="hotline", text="The support hotline number is 555-0142.", source="kb/1"),
        Document(id="hours", text="The office is open from 9 to 5 on weekdays.", source="kb/2"),
    ])  # fmt: skip
    hits = c.search("facts", "What number do I call for support?", top_k=1)
    assert hits[0].doc_id == "hotline" and "555-0142" in hits[0].text
    assert hits[0].chunk_id == "hotline#0" and hits[0].source == "kb/1"

    result = c.upsert("facts", [Document(id="hotline", text="Call support on 555-0199 now.")])
    assert result.replaced_chunks == 1
    texts = [h.text for h in c.search("facts", "support hotline number", top_k=5)]
    assert any("555-0199" in t for t in texts) and not any("555-0142" in t for t in texts)

    assert c.delete_document("facts", "hotline") == 1
    assert all(h.doc_id != "hotline" for h in c.search("facts", "support number", top_k=5))
    assert c.info("facts").documents == 1


def test_filters_and_errors(tmp_path: Path, embedder: Embedder, database_url: str) -> None:
    c = open_collections(tmp_path, embedder, database_url)
    c.create("docs")
    c.upsert("docs", [
        Document(id="a", text="Paris is the capital of France.", metadata={"lang": "en"}),
        Document(id="b", text="Paris est la capitale de la France.", metadata={"lang": "fr"}),
    ])  # fmt: skip
    hits = c.search("docs", "capital of France", top_k=2, filter={"lang": "fr"})
    assert [h.doc_id for h in hits] == ["b"]
    with pytest.raises(RetrievalError) as caught:
        c.search("nope", "x")
    assert caught.value.reason == "not_found"
    with pytest.raises(RetrievalError) as caught:
        c.create("docs")
    assert caught.value.reason == "exists"
    with pytest.raises(RetrievalError) as caught:
        c.upsert("docs", [Document(id="a", text="x"), Document(id="a", text="y")])
    assert caught.value.reason == "duplicate_ids"


def test_restart_and_a_corrupt_or_stale_index_are_rebuilt(
    tmp_path: Path, embedder: Embedder, database_url: str
) -> None:
    c = open_collections(tmp_path, embedder, database_url)
    c.create("facts")
    c.upsert("facts", [Document(id="hotline", text="The support hotline number is 555-0142.")])
    again = open_collections(tmp_path, embedder, database_url)
    assert again.search("facts", "support hotline", top_k=1)[0].doc_id == "hotline"

    (tmp_path / "indexes" / "facts.faiss").write_bytes(b"garbage")
    rebuilt = open_collections(tmp_path, embedder, database_url)
    assert rebuilt.search("facts", "support hotline", top_k=1)[0].doc_id == "hotline"

    # A crash after the database commit but before the index write: the file is stale.
    (tmp_path / "indexes" / "facts.json").write_text('{"generation": 0, "count": 0}')
    stale = open_collections(tmp_path, embedder, database_url)
    assert stale.open_all() == []  # the first open already rebuilt it
    assert stale.search("facts", "support hotline", top_k=1)[0].doc_id == "hotline"


def test_hnsw_collections_rebuild_on_replace(
    tmp_path: Path, embedder: Embedder, database_url: str
) -> None:
    c = open_collections(tmp_path, embedder, database_url)
    c.create("big", index_kind="hnsw")
    c.upsert("big", [Document(id=str(i), text=f"fact number {i} about topic {i % 3}")
                     for i in range(20)])  # fmt: skip
    c.upsert("big", [Document(id="7", text="The hotline is 555-0142.")])
    assert c.search("big", "hotline phone", top_k=1)[0].doc_id == "7"
    assert c.info("big").chunks == 20
