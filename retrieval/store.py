"""Tables of the retrieval store (SQLAlchemy 2), in the same database as the registry.

The chunk rows are the source of truth, vectors included: a FAISS index is a cache of them
that can always be rebuilt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class CollectionRow(Base):
    __tablename__ = "retrieval_collections"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    index_kind: Mapped[str] = mapped_column(String(16), default="flat")
    dimension: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_overlap: Mapped[int] = mapped_column(Integer)
    # Bumped by every committed change; the index file records the generation it holds.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChunkRow(Base):
    __tablename__ = "retrieval_chunks"
    __table_args__ = (UniqueConstraint("collection", "doc_id", "chunk_no"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # FAISS id
    collection: Mapped[str] = mapped_column(String(64), index=True)
    doc_id: Mapped[str] = mapped_column(String(256), index=True)
    chunk_no: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
