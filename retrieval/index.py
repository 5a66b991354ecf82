"""FAISS indexes with ids, written atomically with the generation they hold.

``flat``: exact inner product over unit vectors (cosine), ``IndexIDMap2(IndexFlatIP)``.
``hnsw``: approximate, for large collections; HNSW cannot remove vectors, so a collection of
that kind rebuilds its index from the store when documents are replaced or deleted.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

INDEX_KINDS = ("flat", "hnsw")


class IndexUnusable(RuntimeError):
    """The file is missing, unreadable, or not the generation the store expects."""


def new_index(kind: str, dimension: int) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    if kind == "hnsw":
        return faiss.IndexIDMap2(faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT))
    raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")


def build(kind: str, dimension: int, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    index = new_index(kind, dimension)
    if len(ids):
        index.add_with_ids(vectors, ids.astype(np.int64))
    return index


def save(index: faiss.Index, path: Path, generation: int) -> None:
    """Write the index and its generation so a crash leaves the old pair or the new pair."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    meta = path.with_suffix(".json")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{meta.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump({"generation": generation, "count": int(index.ntotal)}, handle)
    os.replace(tmp, meta)


def load(path: Path, generation: int) -> faiss.Index:
    """The index at ``path`` if it holds exactly ``generation``; else ``IndexUnusable``."""
    meta = path.with_suffix(".json")
    try:
        recorded = json.loads(meta.read_text())
        index = faiss.read_index(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise IndexUnusable(f"{path}: {exc}") from exc
    if recorded.get("generation") != generation or recorded.get("count") != index.ntotal:
        raise IndexUnusable(
            f"{path} holds generation {recorded.get('generation')}, the store is at {generation}"
        )
    return index
