"""The managed-key store on SQLite and PostgreSQL: names never reused, usage upserted per hour
bucket (each dialect's ON CONFLICT), revocation kept once, times handed back in UTC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.db import create_db_engine, upgrade
from gateway.keys.store import KeyStore, NameTaken, Usage


@pytest.fixture
def store(database_url: str) -> Iterator[KeyStore]:
    engine = create_db_engine(database_url)
    upgrade(engine)  # as the gateway does at start
    yield KeyStore(engine)
    engine.dispose()


def new_key(store: KeyStore, name: str, **fields: object) -> object:
    values = {"models": [], "requests_per_minute": None, "tokens_per_minute": None,
              "expires_at": None, **fields}  # fmt: skip
    return store.create(id=f"id-{name}", name=name, key_hash=f"hash-{name}",
                        prefix=name[:8], **values)  # fmt: skip


def test_keys_usage_and_revocation(store: KeyStore) -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    new_key(store, "ops", models=["extract"], requests_per_minute=60, expires_at=expires)
    new_key(store, "batch")
    with pytest.raises(NameTaken):
        new_key(store, "ops")

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    earlier = hour - timedelta(hours=1)
    store.add_usage({("id-ops", hour): (2, 30, 10), ("id-ops", earlier): (1, 5, 5)})
    store.add_usage({("id-ops", hour): (3, 70, 20), ("id-batch", hour): (1, 1, 1)})  # adds up

    ops = store.get("ops")
    assert ops is not None and ops.usage == Usage(6, 105, 35)
    assert ops.expires_at == expires and ops.created_at.tzinfo is not None
    assert store.usage("id-ops", since=earlier) == [(earlier, Usage(1, 5, 5)),
                                                   (hour, Usage(5, 100, 30))]  # fmt: skip
    assert store.usage("id-ops", since=hour) == [(hour, Usage(5, 100, 30))]
    listed = store.keys(with_usage=True)
    assert [(k.name, k.usage.requests) for k in listed] == [("ops", 6), ("batch", 1)]

    first = store.revoke("id-ops")
    assert first is not None and first.revoked_at is not None
    again = store.revoke("id-ops")
    assert again is not None and again.revoked_at == first.revoked_at, "the first time is kept"
    assert store.get("id-batch").revoked_at is None
