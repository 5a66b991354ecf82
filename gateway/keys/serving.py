"""Managed API keys: the admin operations, the request path's O(1) check, usage accounting.

``KeyService`` keeps every key it knows in a dict keyed by the key's SHA-256, so the auth
middleware checks a managed key with one hash and one dict access. The dict is rebuilt after
every create and revoke made through this gateway and re-read from the database every
``sync_interval`` seconds, so gateways sharing a database converge within that time.

It is also an observer: when a request made with a managed key ends, its requests and tokens
are added to the key's rate window, the Prometheus counters (labelled by the key's *name*) and
an in-memory hourly tally, which the same background task adds to the database. No request
ever waits on the database. No FastAPI here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError

from gateway.exceptions import (
    Conflict,
    GatewayError,
    NotFound,
    RateLimited,
    Unauthorized,
)
from gateway.keys.limits import RateLimiter, Refusal
from gateway.keys.principal import KEY_PREFIX, ApiKeyPrincipal, hash_key
from gateway.keys.protocol import (
    ApiKeyList,
    ApiKeyRecord,
    CreatedApiKey,
    CreateKeyRequest,
    KeyUsage,
    KeyUsageBucket,
    KeyUsageTotals,
)
from gateway.keys.store import KeyStore, NameTaken, StoredKey, Usage, UsageDeltas
from gateway.metrics import GatewayMetrics
from gateway.observers import FinishedRequest

logger = logging.getLogger("tuneloop.keys")

_SHOWN_PREFIX = 8  # "tl-" and five random characters: enough to tell keys apart in a list
_HOUR = 3600
KeyStatus = Literal["active", "expired", "revoked"]


def _principal(key: StoredKey) -> ApiKeyPrincipal:
    return ApiKeyPrincipal(
        id=key.id,
        name=key.name,
        models=frozenset(key.models) if key.models else None,
        requests_per_minute=key.requests_per_minute,
        tokens_per_minute=key.tokens_per_minute,
        expires_at=key.expires_at.timestamp() if key.expires_at is not None else None,
        revoked=key.revoked_at is not None,
    )


def _status(key: StoredKey, now: datetime) -> KeyStatus:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and now >= key.expires_at:
        return "expired"
    return "active"


def _totals(usage: Usage) -> KeyUsageTotals:
    return KeyUsageTotals(
        requests=usage.requests,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )


def _record(key: StoredKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        models=key.models,
        requests_per_minute=key.requests_per_minute,
        tokens_per_minute=key.tokens_per_minute,
        expires_at=key.expires_at,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        status=_status(key, datetime.now(UTC)),
        usage=_totals(key.usage),
    )


def _refusal_message(key: ApiKeyPrincipal, refusal: Refusal) -> str:
    unit = "requests per min (RPM)" if refusal.limit == "requests" else "tokens per min (TPM)"
    requested = ", Requested 1" if refusal.limit == "requests" else ""
    return (
        f"Rate limit reached for key '{key.name}' on {unit}: Limit {refusal.allowed}, "
        f"Used {refusal.used}{requested}. Please try again in {refusal.retry_after}s."
    )


class KeyService:
    """Managed keys: cache, limiter, usage tally and its flush task (``start``/``close``)."""

    def __init__(
        self,
        store: KeyStore,
        metrics: GatewayMetrics,
        *,
        sync_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._sync_interval = sync_interval
        self._clock = clock
        self._by_hash: dict[str, ApiKeyPrincipal] = {}
        self._any = False  # any key ever created (revoked ones included): /v1 needs a key
        self._limiter = RateLimiter()
        self._pending: dict[tuple[str, int], list[int]] = {}  # (id, hour) -> [req, prompt, compl]
        self._flush_lock = asyncio.Lock()
        self._reads = 0  # refreshes started; the newest read applied wins, never an older one
        self._applied = 0
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._sync_forever(), name="keys-sync")

    async def close(self) -> None:
        """Stop the background sync, then write what usage is still in memory."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush()
        except SQLAlchemyError:
            logger.exception("event=key_usage_lost reason=flush_failed_at_shutdown")

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval)
            try:
                await self.flush()
                await self.refresh()
            except SQLAlchemyError as exc:  # the database may be back next time: keep going
                logger.warning("event=key_sync_failed error=%s", type(exc).__name__)

    async def refresh(self) -> None:
        """Re-read every key from the database and swap the lookup dict in one step."""
        self._reads += 1
        read = self._reads
        keys = await asyncio.to_thread(self._store.keys)
        if read < self._applied:
            return  # a later read (after a create or revoke) already landed: this one is older
        self._applied = read
        by_hash = {key.key_hash: _principal(key) for key in keys}
        self._by_hash = by_hash
        self._any = self._any or bool(keys)
        self._limiter.retain(p.id for p in by_hash.values() if not p.revoked)

    async def flush(self) -> None:
        """Add the usage tallied since the last flush to the database (kept if that fails)."""
        async with self._flush_lock:
            pending, self._pending = self._pending, {}
            if not pending:
                return
            deltas: UsageDeltas = {
                (key_id, datetime.fromtimestamp(hour, UTC)): (r, p, c)
                for (key_id, hour), (r, p, c) in pending.items()
            }
            try:
                await asyncio.to_thread(self._store.add_usage, deltas)
            except BaseException:
                for slot, counts in pending.items():  # put it back for the next flush
                    tally = self._pending.setdefault(slot, [0, 0, 0])
                    for i, value in enumerate(counts):
                        tally[i] += value
                raise

    # --- the request path (event loop, O(1)) ---------------------------------------------------
    @property
    def active(self) -> bool:
        """True once any managed key exists: /v1 then needs a key (revoking all keeps it so)."""
        return self._any

    def admit(self, token: str, request_id: str = "-") -> ApiKeyPrincipal | GatewayError:
        """The principal for a presented key, or why it is refused (401 or 429)."""
        key = self._by_hash.get(hash_key(token))
        if key is None:
            return Unauthorized("Incorrect API key provided.")
        if key.revoked:
            return Unauthorized("This API key has been revoked.")
        if key.expired(self._clock()):
            return Unauthorized("This API key has expired.")
        refusal = self._limiter.admit(key)
        if refusal is None:
            return key
        self._metrics.child(self._metrics.key_rate_limited, key.name, refusal.limit).inc()
        self._metrics.child(self._metrics.key_requests, key.name, "429").inc()
        logger.info(
            "event=key_rate_limited request_id=%s key=%s limit=%s allowed=%d used=%d "
            "retry_after=%d",
            request_id, key.name, refusal.limit, refusal.allowed, refusal.used,
            refusal.retry_after,
        )  # fmt: skip
        return RateLimited(
            _refusal_message(key, refusal), limit=refusal.limit, retry_after=refusal.retry_after
        )

    def __call__(self, done: FinishedRequest) -> None:
        """Observer: count a finished request of a managed key (never blocks)."""
        key = done.ctx.key
        if key is None:
            return
        prompt = done.ctx.prompt_tokens or 0
        completion = done.ctx.completion_tokens or 0
        hour = int(self._clock() // _HOUR * _HOUR)
        tally = self._pending.setdefault((key.id, hour), [0, 0, 0])
        tally[0] += 1
        tally[1] += prompt
        tally[2] += completion
        self._limiter.add_tokens(key, prompt + completion)
        m = self._metrics
        m.child(m.key_requests, key.name, str(done.ctx.status)).inc()
        if prompt:
            m.child(m.key_tokens, key.name, "prompt").inc(prompt)
        if completion:
            m.child(m.key_tokens, key.name, "completion").inc(completion)

    # --- admin ---------------------------------------------------------------------------------
    async def create(self, request: CreateKeyRequest) -> CreatedApiKey:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        expires_at = request.expires_at
        if request.expires_in is not None:
            expires_at = datetime.fromtimestamp(self._clock(), UTC) + timedelta(
                seconds=request.expires_in
            )
        try:
            stored = await asyncio.to_thread(
                self._store.create,
                id=f"key_{secrets.token_hex(8)}",
                name=request.name,
                key_hash=hash_key(secret),
                prefix=secret[:_SHOWN_PREFIX],
                models=sorted(set(request.models or [])),
                requests_per_minute=request.requests_per_minute,
                tokens_per_minute=request.tokens_per_minute,
                expires_at=expires_at.astimezone(UTC) if expires_at is not None else None,
            )
        except NameTaken as exc:
            raise Conflict(str(exc), param="name", code="exists") from exc
        self._any = True
        await self.refresh()
        logger.info(
            "event=key_created id=%s key=%s models=%s rpm=%s tpm=%s expires_at=%s",
            stored.id, stored.name, ",".join(stored.models) or "*",
            stored.requests_per_minute, stored.tokens_per_minute,
            stored.expires_at.isoformat() if stored.expires_at else None,
        )  # fmt: skip
        return CreatedApiKey(**_record(stored).model_dump(), key=secret)

    async def list_keys(self) -> ApiKeyList:
        """Every key with its usage totals (what is still in memory written first)."""
        await self.flush()
        keys = await asyncio.to_thread(self._store.keys, with_usage=True)
        return ApiKeyList(data=[_record(key) for key in keys])

    async def get_key(self, id_or_name: str) -> ApiKeyRecord:
        await self.flush()
        return _record(await self._get(id_or_name))

    async def revoke(self, id_or_name: str) -> ApiKeyRecord:
        """Revoke a key (by id or name): kept for the audit, refused from now on."""
        key = await self._get(id_or_name)
        if key.revoked_at is None:
            key = await asyncio.to_thread(self._store.revoke, key.id) or key
            logger.info("event=key_revoked id=%s key=%s", key.id, key.name)
        await self.refresh()
        return _record(key)

    async def usage(self, id_or_name: str, *, hours: int) -> KeyUsage:
        """The key's hourly usage over the last ``hours`` hours, and its totals."""
        await self.flush()
        key = await self._get(id_or_name)
        now = self._clock()
        since = datetime.fromtimestamp(int(now // _HOUR * _HOUR) - (hours - 1) * _HOUR, UTC)
        buckets = await asyncio.to_thread(self._store.usage, key.id, since=since)
        return KeyUsage(
            key_id=key.id,
            name=key.name,
            totals=_totals(key.usage),
            data=[KeyUsageBucket(start=start, **_totals(u).model_dump()) for start, u in buckets],
        )

    async def _get(self, id_or_name: str) -> StoredKey:
        key = await asyncio.to_thread(self._store.get, id_or_name)
        if key is None:
            raise NotFound(f"no API key {id_or_name!r}", param="key")
        return key
