"""Retrieval figures: search at 100k chunks, ingest throughput, time to searchable.

1. Search (embedding excluded): ``--chunks`` random unit vectors are upserted through
   ``Collections`` (the real store: SQLite rows with vectors, FAISS index file), then
   ``--queries`` searches run through ``Collections.search_vector`` (FAISS plus reading the hits
   back from the store). Baseline, same run: the bare FAISS search on the same index.
   Done for the flat index and for HNSW.
2. Ingest with the real embedder (all-MiniLM-L6-v2): chunks per second.
3. Time from an upsert call returning to its chunk being the top search hit.

Prints ``name: value`` lines; the last is our flat search p50 over bare FAISS p50.
Target (issue #5): flat search p50 < 2 ms at 100k chunks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.db import create_db_engine  # noqa: E402
from retrieval.collections import Collections, Document  # noqa: E402
from retrieval.embedder import DIMENSION, Embedder  # noqa: E402


class RandomEmbedder:
    """Unit vectors without a model: isolates the store and the index."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = self._rng.standard_normal((len(texts), DIMENSION)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def search_figures(kind: str, chunks: int, queries: int, tmp: Path) -> tuple[float, float, float]:
    engine = create_db_engine(f"sqlite:///{tmp / f'{kind}.db'}")
    collections = Collections(engine, tmp / "indexes", RandomEmbedder(), dimension=DIMENSION)
    collections.create(kind, index_kind=kind)
    started = time.perf_counter()
    batch = 5000
    for start in range(0, chunks, batch):
        docs = [Document(id=str(i), text=f"chunk {i}") for i in range(start, start + batch)]
        collections.upsert(kind, docs)
    store_rate = chunks / (time.perf_counter() - started)
    probes = RandomEmbedder(seed=1).embed(["q"] * queries)
    ours, bare = [], []
    index = collections._indexes[kind]  # noqa: SLF001 - the baseline needs the bare index
    for vector in probes:
        t = time.perf_counter()
        collections.search_vector(kind, vector, top_k=4)
        ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        index.search(vector.reshape(1, -1), 4)
        bare.append((time.perf_counter() - t) * 1000)
    print(f"{kind}_store_ingest_chunks_per_s (embedding excluded): {store_rate:.0f}")
    print(f"{kind}_search_p50_ms: {percentile(ours, 50):.3f}")
    print(f"{kind}_search_p99_ms: {percentile(ours, 99):.3f}")
    print(f"{kind}_bare_faiss_p50_ms: {percentile(bare, 50):.3f}")
    return percentile(ours, 50), percentile(ours, 99), percentile(bare, 50)


def embed_figures(tmp: Path, documents: int) -> None:
    embedder = Embedder()
    engine = create_db_engine(f"sqlite:///{tmp / 'real.db'}")
    collections = Collections(engine, tmp / "indexes", embedder, dimension=DIMENSION)
    collections.create("real")
    embedder.embed(["warm up"])
    text = "Our support team answers questions about billing, refunds and accounts. " * 12
    docs = [Document(id=f"d{i}", text=f"{text} Document {i}.") for i in range(documents)]
    started = time.perf_counter()
    result = collections.upsert("real", docs)
    rate = result.chunks / (time.perf_counter() - started)
    print(f"ingest_chunks_per_s (real embeddings): {rate:.1f}")

    delays = []
    for n in range(10):
        fact = Document(id=f"fact{n}", text=f"The hotline for region {n} is 555-01{n:02d}.")
        collections.upsert("real", [fact])
        returned = time.perf_counter()
        while collections.search("real", f"hotline region {n}", top_k=1)[0].doc_id != fact.id:
            pass
        delays.append((time.perf_counter() - returned) * 1000)
    print(f"ingest_to_searchable_p50_ms (one search, embedding included): "
          f"{statistics.median(delays):.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--documents", type=int, default=200, help="for the real-embedding part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        flat_p50, _, bare_p50 = search_figures("flat", args.chunks, args.queries, Path(tmp))
        search_figures("hnsw", args.chunks, args.queries, Path(tmp))
        embed_figures(Path(tmp), args.documents)
    print(f"flat_search_p50_vs_bare_faiss: {flat_p50 / bare_p50:.2f}  (target p50 < 2 ms)")


if __name__ == "__main__":
    main()
