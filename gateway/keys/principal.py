"""What an authenticated managed key may do, as the request path sees it (immutable, cheap)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

KEY_PREFIX = "tl-"


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256. Keys are 256-bit random, so no salt or KDF is
    needed to make a leaked table useless, and lookups stay one dict access."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeyPrincipal:
    """A managed key in the in-memory cache; ``models`` None means every model."""

    id: str
    name: str
    models: frozenset[str] | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    expires_at: float | None = None  # Unix seconds
    revoked: bool = False

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at
