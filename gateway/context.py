"""Per-request bookkeeping shared by the middleware (headers) and serving (metrics, logs)."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.metrics import UNKNOWN_MODEL

if TYPE_CHECKING:
    from gateway.keys.principal import ApiKeyPrincipal

# A client's request id is echoed back in a header: keep it printable and short.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id(client_value: str | None) -> str:
    """The client's ``x-request-id`` when it is sane, else a fresh one."""
    if client_value and _CLIENT_ID.match(client_value):
        return client_value
    return f"req-{uuid.uuid4().hex}"


@dataclass(slots=True)
class RequestContext:
    """What one request did: its id, where its time went, how it ended."""

    request_id: str
    start: float = field(default_factory=time.perf_counter)
    upstream_seconds: float = 0.0
    proxied: bool = False
    model: str = UNKNOWN_MODEL  # what the client called (base model, alias or version)
    version: str = UNKNOWN_MODEL  # the served name that answered
    status: int = 500
    stream: bool = False
    upstream: str | None = None
    ttft: float | None = None
    response_overhead: float | None = None
    json_result: str | None = None  # valid | repaired | failed, when a JSON format applied
    json_repairs: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    internal: bool = False  # made by the gateway itself (a judge call): not a client's request
    admitted: bool = False  # holds an admission slot until its last byte
    key: ApiKeyPrincipal | None = None  # the managed API key that authenticated it, if any

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def overhead(self) -> float:
        """Seconds spent in the gateway so far, upstream time excluded."""
        return max(0.0, self.elapsed() - self.upstream_seconds)
