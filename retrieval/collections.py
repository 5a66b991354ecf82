"""Collections of documents: upsert and delete by id, search with filters, rebuild on start.

Every method is synchronous and may block on embedding or FAISS: the gateway calls them from
worker threads. A collection's writes and index changes are serialized by its own lock.

Durability: an upsert commits its chunks (text, metadata and vectors) to the database before it
returns, then updates the in-memory index and writes the index file atomically. If the process
dies between the two, the index file's generation no longer matches the database's, and the
index is rebuilt from the stored vectors on the next start: nothing acknowledged is lost.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import sessionmaker

from retrieval import index as vector_index
from retrieval.chunking import chunk_text
from retrieval.index import INDEX_KINDS, IndexUnusable
from retrieval.store import Base, ChunkRow, CollectionRow, utcnow

logger = logging.getLogger("tuneloop.retrieval")

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class RetrievalError(ValueError):
    """A refused operation; ``reason`` is a stable code (``not_found``, ``exists``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TextEmbedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    index_kind: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    documents: int
    chunks: int


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk_id: str
    score: float
    text: str
    source: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class UpsertResult:
    documents: int
    chunks: int
    replaced_chunks: int


class Collections:
    """All collections of one database and one index folder."""

    def __init__(self, engine: Engine, index_dir: Path, embedder: TextEmbedder, *, dimension: int):
        Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._index_dir = index_dir
        self._embedder = embedder
        self._dimension = dimension
        self._indexes: dict[str, faiss.Index] = {}
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    # --- lifecycle ---------------------------------------------------------------------------
    def open_all(self) -> list[str]:
        """Load every collection's index; rebuild the missing, corrupt or stale ones."""
        rebuilt = []
        with self._sessions() as session:
            rows = list(session.scalars(select(CollectionRow)))
        for row in rows:
            with self._locks[row.name]:
                try:
                    self._indexes[row.name] = vector_index.load(
                        self._path(row.name), row.generation
                    )
                except IndexUnusable as exc:
                    logger.warning(
                        "event=index_rebuild collection=%s reason=%r", row.name, str(exc)
                    )
                    self._rebuild(row)
                    rebuilt.append(row.name)
        return rebuilt

    def _path(self, name: str) -> Path:
        return self._index_dir / f"{name}.faiss"

    def _rebuild(self, row: CollectionRow) -> None:
        with self._sessions() as session:
            pairs = session.execute(
                select(ChunkRow.id, ChunkRow.vector).where(ChunkRow.collection == row.name)
            ).all()
        ids = np.array([p[0] for p in pairs], dtype=np.int64)
        vectors = (
            np.frombuffer(b"".join(p[1] for p in pairs), dtype=np.float32).reshape(
                -1, row.dimension
            )
            if pairs
            else np.zeros((0, row.dimension), dtype=np.float32)
        )
        index = vector_index.build(row.index_kind, row.dimension, ids, vectors)
        vector_index.save(index, self._path(row.name), row.generation)
        self._indexes[row.name] = index

    # --- collections -------------------------------------------------------------------------
    def create(
        self, name: str, *, index_kind: str = "flat", chunk_size: int = 200, chunk_overlap: int = 40
    ) -> CollectionInfo:
        if not NAME_PATTERN.fullmatch(name):  # match() would let a trailing newline through
            raise RetrievalError(
                "bad_name", f"collection name {name!r}: 1-64 lowercase letters, digits, . _ -"
            )
        if index_kind not in INDEX_KINDS:
            raise RetrievalError("bad_index", f"index_kind must be one of {', '.join(INDEX_KINDS)}")
        if chunk_size < 1 or not 0 <= chunk_overlap < chunk_size:
            raise RetrievalError("bad_chunking", "need chunk_size >= 1 and 0 <= overlap < size")
        with self._locks[name], self._sessions.begin() as session:
            if session.get(CollectionRow, name) is not None:
                raise RetrievalError("exists", f"collection {name} already exists")
            row = CollectionRow(
                name=name, index_kind=index_kind, dimension=self._dimension,
                chunk_size=chunk_size, chunk_overlap=chunk_overlap, generation=0,
            )  # fmt: skip
            session.add(row)
            session.flush()
            index = vector_index.new_index(index_kind, self._dimension)
            vector_index.save(index, self._path(name), 0)  # before commit: no row without file
            self._indexes[name] = index
        logger.info("event=collection_created collection=%s index=%s", name, index_kind)
        return self.info(name)

    def info(self, name: str) -> CollectionInfo:
        with self._sessions() as session:
            row = self._row(session, name)
            documents, chunks = session.execute(
                select(func.count(func.distinct(ChunkRow.doc_id)), func.count(ChunkRow.id)).where(
                    ChunkRow.collection == name
                )
            ).one()
        return CollectionInfo(
            name=row.name, index_kind=row.index_kind, dimension=row.dimension,
            chunk_size=row.chunk_size, chunk_overlap=row.chunk_overlap,
            documents=documents, chunks=chunks,
        )  # fmt: skip

    def names(self) -> list[str]:
        with self._sessions() as session:
            return list(session.scalars(select(CollectionRow.name).order_by(CollectionRow.name)))

    def list(self) -> list[CollectionInfo]:
        return [self.info(name) for name in self.names()]

    # --- documents ---------------------------------------------------------------------------
    def upsert(self, name: str, documents: list[Document]) -> UpsertResult:
        """Replace each document (by id) with its new chunks; durable once this returns."""
        row = self._collection(name)
        ids = [doc.id for doc in documents]
        if len(set(ids)) != len(ids):
            raise RetrievalError("duplicate_ids", "a batch may hold each document id once")
        pieces = [
            (doc, number, text)
            for doc in documents
            for number, text in enumerate(
                chunk_text(doc.text, size=row.chunk_size, overlap=row.chunk_overlap)
            )
        ]
        vectors = self._embedder.embed([text for _, _, text in pieces])  # outside the lock
        with self._locks[name]:
            with self._sessions.begin() as session:
                old = list(
                    session.scalars(
                        select(ChunkRow.id).where(
                            ChunkRow.collection == name, ChunkRow.doc_id.in_(ids)
                        )
                    )
                )
                session.execute(
                    delete(ChunkRow).where(ChunkRow.collection == name, ChunkRow.doc_id.in_(ids))
                )
                now = utcnow()
                rows = [
                    ChunkRow(
                        collection=name,
                        doc_id=doc.id,
                        chunk_no=number,
                        text=text,
                        source=doc.source,
                        meta=doc.metadata,
                        vector=vectors[i].tobytes(),
                        updated_at=now,
                    )  # fmt: skip
                    for i, (doc, number, text) in enumerate(pieces)
                ]
                session.add_all(rows)
                session.flush()
                new_ids = np.array([r.id for r in rows], dtype=np.int64)
                generation = self._bump(session, name)
            self._apply(row, generation, remove=old, add_ids=new_ids, add_vectors=vectors)
        logger.info(
            "event=documents_upserted collection=%s documents=%d chunks=%d replaced=%d",
            name, len(documents), len(pieces), len(old),
        )  # fmt: skip
        return UpsertResult(documents=len(documents), chunks=len(pieces), replaced_chunks=len(old))

    def delete_document(self, name: str, doc_id: str) -> int:
        """Remove every chunk of ``doc_id``; returns how many there were (0: unknown id)."""
        row = self._collection(name)
        with self._locks[name]:
            with self._sessions.begin() as session:
                old = list(
                    session.scalars(
                        select(ChunkRow.id).where(
                            ChunkRow.collection == name, ChunkRow.doc_id == doc_id
                        )
                    )
                )
                if not old:
                    return 0
                session.execute(delete(ChunkRow).where(ChunkRow.id.in_(old)))
                generation = self._bump(session, name)
            self._apply(row, generation, remove=old)
        logger.info("event=document_deleted collection=%s doc_id=%s chunks=%d",
                    name, doc_id, len(old))  # fmt: skip
        return len(old)

    def _bump(self, session: Any, name: str) -> int:
        collection = session.get(CollectionRow, name)
        collection.generation += 1
        return collection.generation

    def _apply(
        self,
        row: CollectionRow,
        generation: int,
        *,
        remove: list[int],
        add_ids: np.ndarray | None = None,
        add_vectors: np.ndarray | None = None,
    ) -> None:
        """Bring the in-memory index and its file to ``generation`` (caller holds the lock)."""
        row.generation = generation
        if remove and row.index_kind == "hnsw":
            self._rebuild(row)  # HNSW cannot remove: rebuild from the committed store
            return
        index = self._indexes[row.name]
        if remove:
            index.remove_ids(np.array(remove, dtype=np.int64))
        if add_ids is not None and len(add_ids):
            index.add_with_ids(add_vectors, add_ids)
        vector_index.save(index, self._path(row.name), generation)

    # --- search ------------------------------------------------------------------------------
    def search(
        self, name: str, query: str, *, top_k: int = 4, filter: dict[str, Any] | None = None
    ) -> list[Hit]:
        """The ``top_k`` chunks most similar to ``query`` that match ``filter``.

        ``filter`` keys ``source`` and ``doc_id`` match those fields; any other key matches
        the document's metadata value. Every hit is read back from the store, so a chunk that
        was replaced or deleted is never returned.
        """
        self._collection(name)
        vector = self._embedder.embed([query])
        return self.search_vector(name, vector, top_k=top_k, filter=filter)

    def search_vector(
        self, name: str, vector: np.ndarray, *, top_k: int, filter: dict[str, Any] | None = None
    ) -> list[Hit]:
        with self._locks[name]:
            index = self._indexes[name]
            wanted = min(index.ntotal, top_k * (8 if filter else 1))
            if wanted == 0:
                return []
            scores, ids = index.search(vector.reshape(1, -1), wanted)
        ranked = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]
        with self._sessions() as session:
            rows = {
                r.id: r
                for r in session.scalars(
                    select(ChunkRow).where(ChunkRow.id.in_([i for i, _ in ranked]))
                )
            }
        hits = []
        for chunk_id, score in ranked:
            row = rows.get(chunk_id)
            if row is None or not _matches(row, filter):
                continue
            hits.append(
                Hit(doc_id=row.doc_id, chunk_id=f"{row.doc_id}#{row.chunk_no}", score=score,
                    text=row.text, source=row.source, metadata=row.meta)
            )  # fmt: skip
            if len(hits) == top_k:
                break
        return hits

    # --- helpers -----------------------------------------------------------------------------
    def _collection(self, name: str) -> CollectionRow:
        with self._sessions() as session:
            return self._row(session, name)

    @staticmethod
    def _row(session: Any, name: str) -> CollectionRow:
        row = session.get(CollectionRow, name)
        if row is None:
            raise RetrievalError("not_found", f"collection {name} does not exist")
        return row


def _matches(row: ChunkRow, filter: dict[str, Any] | None) -> bool:
    if not filter:
        return True
    for key, value in filter.items():
        actual = (
            row.source if key == "source" else row.doc_id if key == "doc_id" else row.meta.get(key)
        )
        if actual != value:
            return False
    return True
