"""Per-key requests- and tokens-per-minute limits: a fixed 60-second window per key, in memory.

Everything here runs on the event loop (the auth middleware admits, the usage observer adds
tokens), so no lock is needed. A request is admitted while its key has used fewer requests
than its requests-per-minute and fewer tokens than its tokens-per-minute in the current
window; tokens are known only when a request ends, so one request may take a key past its
tokens-per-minute, and the next one is refused until the window turns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.keys.principal import ApiKeyPrincipal

WINDOW_SECONDS = 60.0


@dataclass(slots=True)
class _Window:
    start: float
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a key was refused: ``limit`` is "requests" or "tokens" (OpenAI's error type)."""

    limit: str
    allowed: int
    used: int
    retry_after: int  # whole seconds until the window turns (at least 1)


class RateLimiter:
    def __init__(
        self, *, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = window
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def _current(self, key_id: str, now: float) -> _Window:
        window = self._windows.get(key_id)
        if window is None or now - window.start >= self._window:
            window = self._windows[key_id] = _Window(now)
        return window

    def admit(self, key: ApiKeyPrincipal) -> Refusal | None:
        """Count one request against ``key``, or say which limit refuses it."""
        rpm, tpm = key.requests_per_minute, key.tokens_per_minute
        if rpm is None and tpm is None:
            return None
        now = self._clock()
        window = self._current(key.id, now)
        retry_after = max(1, math.ceil(window.start + self._window - now))
        if tpm is not None and window.tokens >= tpm:
            return Refusal("tokens", tpm, window.tokens, retry_after)
        if rpm is not None and window.requests >= rpm:
            return Refusal("requests", rpm, window.requests, retry_after)
        window.requests += 1
        return None

    def add_tokens(self, key: ApiKeyPrincipal, tokens: int) -> None:
        """Tokens a finished request of ``key`` used (only keys with a tokens limit count)."""
        if key.tokens_per_minute is not None and tokens > 0:
            self._current(key.id, self._clock()).tokens += tokens

    def retain(self, key_ids: Iterable[str]) -> None:
        """Forget the windows of keys no longer valid (revoked, expired, gone)."""
        keep = set(key_ids)
        for key_id in [k for k in self._windows if k not in keep]:
            del self._windows[key_id]
