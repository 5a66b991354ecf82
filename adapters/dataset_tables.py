"""Tables of the dataset registry, on the adapter registry's ``Base`` (one ``create_all``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from adapters.store import Base, utcnow


class DatasetVersionRow(Base):
    """One immutable dataset version of an alias; its examples are the JSONL file at ``path``
    and ``hash`` is the hash of their normalised content (order-independent)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("alias", "version"), UniqueConstraint("alias", "hash"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(80))
    parents: Mapped[list[str]] = mapped_column(JSON, default=list)
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FrozenSetRow(Base):
    """An alias's frozen test set: written once, never changed; the gate scores on it."""

    __tablename__ = "dataset_frozen_sets"

    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash: Mapped[str] = mapped_column(String(80))
    origin: Mapped[str] = mapped_column(String(16))  # "split" (first import) or "explicit"
    conversations: Mapped[list[list[dict[str, Any]]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
