"""Tables of the adapter registry (SQLAlchemy 2). The gateway owns the engine and passes it in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class AdapterVersionRow(Base):
    """One immutable adapter version; ``served_name`` is what vLLM knows it as."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    served_name: Mapped[str] = mapped_column(String(80), unique=True)
    path: Mapped[str] = mapped_column(String(1024))
    base_model: Mapped[str] = mapped_column(String(1024))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target_modules: Mapped[list[str]] = mapped_column(JSON, default=list)
    dataset_hash: Mapped[str | None] = mapped_column(String(80), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="registered")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class AliasRow(Base):
    """A name clients call; ``targets`` maps served names to weights summing to 100."""

    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    targets: Mapped[dict[str, int]] = mapped_column(JSON)
    previous_targets: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    # An OpenAI response_format every request through the alias gets unless it sends its own.
    response_format: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Retrieval options (collection, top_k, filter) chat requests through the alias get.
    retrieval: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class EventRow(Base):
    """Append-only audit log: every registration, load, swap, rollback and deletion."""

    __tablename__ = "adapter_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(80))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
