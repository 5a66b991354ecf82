"""Tables of continuous evaluation (SQLAlchemy 2). The gateway owns the engine and passes it in.

Samples and their scores are written in one transaction, so a ``kill -9`` never leaves half a
sample; feedback joins samples by ``request_id`` (it may arrive first, or for a request that
was not sampled).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SampleRow(Base):
    """One sampled request, already scrubbed."""

    __tablename__ = "eval_samples"
    __table_args__ = (Index("ix_eval_samples_alias_at", "alias", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), index=True)  # made by the gateway
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    alias: Mapped[str] = mapped_column(String(80))
    version: Mapped[str] = mapped_column(String(80))
    # The managed key that made the request (None: a static key or no auth), and the client's
    # own x-request-id, kept as its correlation id (never trusted as identity).
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    client_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    retrieved: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ScoreRow(Base):
    """A sample's score under one evaluator epoch, with the per-check breakdown."""

    __tablename__ = "eval_scores"
    __table_args__ = (Index("ix_eval_scores_alias_epoch_id", "alias", "epoch", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sample_id: Mapped[int] = mapped_column(
        ForeignKey("eval_samples.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    alias: Mapped[str] = mapped_column(String(80))
    version: Mapped[str] = mapped_column(String(80))
    epoch: Mapped[str] = mapped_column(String(32))
    total: Mapped[float | None] = mapped_column(Float, nullable=True)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class FeedbackRow(Base):
    __tablename__ = "eval_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # who posted it
    alias: Mapped[str | None] = mapped_column(String(80), nullable=True)
    version: Mapped[str | None] = mapped_column(String(80), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    sampled: Mapped[bool] = mapped_column(default=False)


class RubricRow(Base):
    """A rubric version of an alias; the newest is in force."""

    __tablename__ = "eval_rubrics"
    __table_args__ = (UniqueConstraint("alias", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(80), index=True)
    version: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BaselineRow(Base):
    """A drift baseline of an alias under an epoch: scores with ``id > after_score_id`` count.

    ``stats`` is filled once the baseline window is complete and then frozen; a new row
    restarts the baseline (promotion, acknowledgement).
    """

    __tablename__ = "eval_baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(80), index=True)
    epoch: Mapped[str] = mapped_column(String(32))
    after_score_id: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(32))
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="baseline")
    statistic: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LeaseRow(Base):
    """Which process runs a scheduled job now, when several gateways share the database."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
