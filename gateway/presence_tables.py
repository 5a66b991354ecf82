"""The table of live gateway processes (SQLAlchemy 2). The gateway owns the engine.

Each gateway process (a ``--workers`` worker, or another gateway on the same database) keeps
one row, written at start and refreshed every heartbeat; the row goes when the process stops,
and a row whose heartbeat has long stopped is pruned by the others (``gateway.presence``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ProcessRow(Base):
    """One gateway process: who it is, when it started and last beat, what it has applied."""

    __tablename__ = "gateway_processes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4 hex, chosen by it
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    # The newest adapter registry event this process has applied to its routing table.
    applied_event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # served_name -> requests this process has in flight to it.
    in_flight: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


__all__ = ["Base", "ProcessRow", "utcnow"]


class SecretRow(Base):
    """A per-deployment secret the gateway makes on first start and every process shares
    (e.g. ``sampling_salt``); first writer wins, so all processes agree."""

    __tablename__ = "gateway_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
