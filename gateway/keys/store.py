"""Managed keys and their hourly usage in the database (blocking: call it from a worker thread)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.keys.tables import ApiKeyRow, ApiKeyUsageRow, Base


class NameTaken(ValueError):
    """A key with this name exists (revoked keys keep their names, for the audit)."""


@dataclass(frozen=True, slots=True)
class Usage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str
    name: str
    key_hash: str
    prefix: str
    models: list[str]
    requests_per_minute: int | None
    tokens_per_minute: int | None
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None
    usage: Usage = field(default_factory=Usage)


# (key id, hour bucket) -> requests, prompt tokens, completion tokens
UsageDeltas = dict[tuple[str, datetime], tuple[int, int, int]]


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _stored(row: ApiKeyRow, usage: Usage | None = None) -> StoredKey:
    return StoredKey(
        id=row.id,
        name=row.name,
        key_hash=row.key_hash,
        prefix=row.prefix,
        models=list(row.models or []),
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        expires_at=as_utc(row.expires_at),
        created_at=as_utc(row.created_at) or row.created_at,
        revoked_at=as_utc(row.revoked_at),
        usage=usage or Usage(),
    )


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        Base.metadata.create_all(engine)
        self._engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)

    def create(
        self,
        *,
        id: str,
        name: str,
        key_hash: str,
        prefix: str,
        models: list[str],
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        expires_at: datetime | None,
    ) -> StoredKey:
        row = ApiKeyRow(
            id=id, name=name, key_hash=key_hash, prefix=prefix, models=models,
            requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
            expires_at=expires_at, created_at=datetime.now(UTC),
        )  # fmt: skip
        try:
            with self._session.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            raise NameTaken(f"a key named {name!r} exists (names are never reused)") from exc
        return _stored(row)

    def keys(self, *, with_usage: bool = False) -> list[StoredKey]:
        """Every key, oldest first; with ``with_usage``, each with its usage totals."""
        with self._session() as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)).all()
            totals = self._totals(session) if with_usage else {}
        return [_stored(row, totals.get(row.id)) for row in rows]

    def get(self, id_or_name: str) -> StoredKey | None:
        """A key by id, else by name, with its usage totals."""
        with self._session() as session:
            row = (
                session.get(ApiKeyRow, id_or_name)
                or session.scalars(select(ApiKeyRow).where(ApiKeyRow.name == id_or_name)).first()
            )
            if row is None:
                return None
            return _stored(row, self._totals(session, row.id).get(row.id))

    def revoke(self, key_id: str) -> StoredKey | None:
        """Mark the key revoked (once: the first revocation's time is kept)."""
        with self._session.begin() as session:
            session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return self.get(key_id)

    def usage(self, key_id: str, *, since: datetime) -> list[tuple[datetime, Usage]]:
        """The key's hourly buckets from ``since`` on, oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(ApiKeyUsageRow)
                .where(ApiKeyUsageRow.key_id == key_id, ApiKeyUsageRow.bucket >= since)
                .order_by(ApiKeyUsageRow.bucket)
            ).all()
        return [
            (as_utc(r.bucket) or r.bucket, Usage(r.requests, r.prompt_tokens, r.completion_tokens))
            for r in rows
        ]

    def add_usage(self, deltas: UsageDeltas) -> None:
        """Add ``deltas`` to their buckets in one transaction (an upsert per bucket)."""
        if not deltas:
            return
        values = [
            {"key_id": key_id, "bucket": bucket, "requests": r, "prompt_tokens": p,
             "completion_tokens": c}
            for (key_id, bucket), (r, p, c) in deltas.items()
        ]  # fmt: skip
        dialect = self._engine.dialect.name
        with self._engine.begin() as connection:
            if dialect in ("sqlite", "postgresql"):
                insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(
                    ApiKeyUsageRow
                )
                table = ApiKeyUsageRow.__table__.c
                statement = insert.on_conflict_do_update(
                    index_elements=[table.key_id, table.bucket],
                    set_={
                        name: table[name] + insert.excluded[name]
                        for name in ("requests", "prompt_tokens", "completion_tokens")
                    },
                )
                for value in values:
                    connection.execute(statement, value)
                return
            for value in values:  # other databases: read, then update or insert
                found = connection.execute(
                    update(ApiKeyUsageRow)
                    .where(
                        ApiKeyUsageRow.key_id == value["key_id"],
                        ApiKeyUsageRow.bucket == value["bucket"],
                    )
                    .values(
                        requests=ApiKeyUsageRow.requests + value["requests"],
                        prompt_tokens=ApiKeyUsageRow.prompt_tokens + value["prompt_tokens"],
                        completion_tokens=ApiKeyUsageRow.completion_tokens
                        + value["completion_tokens"],
                    )
                ).rowcount
                if not found:
                    connection.execute(ApiKeyUsageRow.__table__.insert().values(**value))

    @staticmethod
    def _totals(session: Session, key_id: str | None = None) -> dict[str, Usage]:
        query = select(
            ApiKeyUsageRow.key_id,
            func.sum(ApiKeyUsageRow.requests),
            func.sum(ApiKeyUsageRow.prompt_tokens),
            func.sum(ApiKeyUsageRow.completion_tokens),
        ).group_by(ApiKeyUsageRow.key_id)
        if key_id is not None:
            query = query.where(ApiKeyUsageRow.key_id == key_id)
        return {
            row[0]: Usage(int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))
            for row in session.execute(query)
        }
