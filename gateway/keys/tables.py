"""Tables of managed API keys (SQLAlchemy 2). The gateway owns the engine and passes it in.

Only a key's SHA-256 is stored; the key itself is shown once, in the creation response.
Usage is aggregated per key per hour by the gateway and added to the bucket's row, so a row
is written every few seconds per active key at most, never per request.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ApiKeyRow(Base):
    """One managed key; revoked keys stay for the audit."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, for recognition
    models: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every model
    # Collections the key may search or ground on; NULL: every collection.
    collections: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiKeyUsageRow(Base):
    """Requests and tokens of one key in one hour (``bucket`` is the hour's start, UTC)."""

    __tablename__ = "api_key_usage"

    key_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)


class DashboardSessionRow(Base):
    """One dashboard sign-in; only the session token's SHA-256 is stored. Logout sets
    ``revoked_at``; expired and revoked rows are pruned."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
