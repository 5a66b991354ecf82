"""Gateway errors, each rendered as an OpenAI-shaped error body with its HTTP status.

Hierarchy::

    GatewayError (500, internal_error)
    ├── InvalidRequest (400, invalid_request_error)
    │   └── BodyTooLarge (413)
    ├── Unauthorized (401, authentication_error)
    ├── ModelNotFound (404, model_not_found)
    ├── NotFound (404, not_found) · AdminDisabled (404, admin_disabled)
    ├── Conflict (409, conflict)
    ├── RateLimited (429, requests | tokens, rate_limit_exceeded; with Retry-After)
    ├── ClientClosedRequest (499: the client left before its body arrived; nginx's code)
    └── UpstreamError (502, upstream_error)
        ├── NoReadyUpstream (503, service_unavailable)
        └── UpstreamTimeout (504, timeout)

Two tables turn other errors into these, so every call site maps them the same way:

    aiohttp transport errors ──from_transport──▶ UpstreamError and its subclasses
    library refusals         ──from_library────▶ InvalidRequest · NotFound · Conflict
      adapters: AdapterInvalid, RegistryError (registry, datasets, jobs: InUse, JobConflict)
      retrieval: RetrievalError          eval: RubricError

``from_library`` is the app-wide handler for ``LibraryError``, so serving code lets library
errors propagate; code whose callers catch ``GatewayError`` wraps the call in
``library_errors()``.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp

from adapters.jobs import JobConflict
from adapters.registry import InUse, RegistryError
from adapters.validation import AdapterInvalid
from eval.rubrics import RubricError
from retrieval.collections import RetrievalError


class GatewayError(Exception):
    """Base of every error the gateway answers with."""

    status_code: int = 500
    error_type: str = "internal_error"
    code: str | None = None
    headers: dict[str, str] | None = None  # extra response headers (Retry-After on a 429)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class BodyTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class Unauthorized(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str):
        super().__init__(f"The model '{model}' does not exist.", param="model")


class AdminDisabled(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "admin_disabled"

    def __init__(self) -> None:
        super().__init__("The admin API is disabled: set TUNELOOP_ADMIN_TOKEN to enable it.")


class NotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class Conflict(GatewayError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class RateLimited(GatewayError):
    """A managed key is over its requests- or tokens-per-minute (OpenAI's 429 shape)."""

    status_code = 429
    error_type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after: int) -> None:
        super().__init__(message)
        self.error_type = limit  # "requests" or "tokens", as OpenAI types it
        self.retry_after = retry_after
        self.headers = {"retry-after": str(retry_after)}


class ClientClosedRequest(GatewayError):
    status_code = 499
    error_type = "client_closed_request"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    code = "bad_gateway"


class NoReadyUpstream(UpstreamError):
    status_code = 503
    error_type = "service_unavailable"
    code = "no_ready_upstream"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    error_type = "timeout"
    code = "upstream_timeout"


# Transport error -> (gateway error class, message). First match wins, so the more specific
# aiohttp classes come first (ConnectionTimeoutError is also a TimeoutError, for instance).
TransportError = (aiohttp.ClientError, asyncio.TimeoutError)  # for `except`
_TRANSPORT_TABLE: tuple[tuple[type[BaseException], type[UpstreamError], str], ...] = (
    (aiohttp.ConnectionTimeoutError, NoReadyUpstream, "timed out connecting to the model server"),
    (aiohttp.ClientConnectorError, NoReadyUpstream, "could not connect to the model server"),
    (asyncio.TimeoutError, UpstreamTimeout, "the model server did not answer in time"),
    (aiohttp.ServerDisconnectedError, UpstreamError, "the model server closed the connection"),
    (aiohttp.ClientPayloadError, UpstreamError, "the model server closed the connection"),
    (aiohttp.ClientError, UpstreamError, "network error talking to the model server"),
)


def from_transport(exc: BaseException) -> UpstreamError:
    """Map an aiohttp transport failure to the gateway error a client should see."""
    for transport_cls, gateway_cls, message in _TRANSPORT_TABLE:
        if isinstance(exc, transport_cls):
            return gateway_cls(message)
    return UpstreamError(f"upstream transport error: {type(exc).__name__}")


def is_connect_failure(exc: BaseException) -> bool:
    """True when no byte can have reached the upstream, so another replica may be tried."""
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def is_disconnect(exc: BaseException) -> bool:
    """True when the upstream closed or reset the connection (raised before its response
    began, this is a replica that just died, or a kept-alive connection it had closed)."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and exc.errno in _RESET_ERRNOS


# Library error -> gateway error. A row matches an instance of its class whose ``reason`` (the
# libraries' stable code) is in its set, or any reason when the set is None. First match wins,
# so subclasses come before their bases and reason rows before their class's catch-all.
LibraryError = (AdapterInvalid, RegistryError, RetrievalError, RubricError)  # for `except`
_NOT_NOW = frozenset({"job_active", "frozen_exists"})  # "not now, something else holds it"
_LIBRARY_TABLE: tuple[
    tuple[type[Exception], frozenset[str] | None, Callable[[Any], GatewayError]], ...
] = (
    (AdapterInvalid, None, lambda e: InvalidRequest(str(e), param="path", code=e.reason)),
    (JobConflict, None, lambda e: Conflict(str(e), param="alias", code="job_active")),
    (InUse, None, lambda e: Conflict(str(e), code=e.reason)),
    (RegistryError, _NOT_NOW, lambda e: Conflict(str(e), code=e.reason)),
    (RegistryError, frozenset({"not_found"}), lambda e: NotFound(str(e))),
    (RegistryError, None, lambda e: InvalidRequest(str(e), code=e.reason)),
    (RetrievalError, frozenset({"not_found"}), lambda e: NotFound(str(e))),
    (RetrievalError, frozenset({"exists"}), lambda e: Conflict(str(e), code="exists")),
    (RetrievalError, None, lambda e: InvalidRequest(str(e), code=e.reason)),
    (RubricError, None, lambda e: InvalidRequest(str(e), param=e.path, code="invalid_rubric")),
)


def from_library(exc: Exception) -> GatewayError:
    """Map a refusal from ``adapters``, ``retrieval`` or ``eval`` to the error a client sees."""
    reason = getattr(exc, "reason", None)
    for library_cls, reasons, build in _LIBRARY_TABLE:
        if isinstance(exc, library_cls) and (reasons is None or reason in reasons):
            return build(exc)
    return GatewayError(f"unexpected library error: {type(exc).__name__}: {exc}")


@contextmanager
def library_errors() -> Iterator[None]:
    """Raise the block's library refusals as gateway errors (``from_library``), for code whose
    callers catch ``GatewayError`` rather than leave it to the app's handler."""
    try:
        yield
    except LibraryError as exc:
        raise from_library(exc) from exc
