"""Gateway errors, each rendered as an OpenAI-shaped error body with its HTTP status.

Hierarchy::

    GatewayError (500, internal_error)
    ├── InvalidRequest (400, invalid_request_error)
    │   └── BodyTooLarge (413)
    ├── Unauthorized (401, authentication_error)
    ├── ModelNotFound (404, model_not_found)
    ├── NotFound (404, not_found) · AdminDisabled (404, admin_disabled)
    ├── Conflict (409, conflict)
    ├── ClientClosedRequest (499: the client left before its body arrived; nginx's code)
    └── UpstreamError (502, upstream_error)
        ├── NoReadyUpstream (503, service_unavailable)
        └── UpstreamTimeout (504, timeout)

Transport failures from aiohttp are turned into gateway errors by ``from_transport`` through
one table, so every call site maps them the same way; registry refusals from the libraries
(adapters, datasets, jobs) by ``from_registry``, also installed as an app-wide handler.
"""

from __future__ import annotations

import asyncio

import aiohttp

from adapters.registry import InUse, RegistryError


class GatewayError(Exception):
    """Base of every error the gateway answers with."""

    status_code: int = 500
    error_type: str = "internal_error"
    code: str | None = None

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


# Library refusals (a stable ``reason`` code) that mean "not now, something else holds it".
_CONFLICT_REASONS = frozenset({"job_active", "frozen_exists"})


def from_registry(exc: RegistryError) -> GatewayError:
    """Map a registry refusal (adapters, datasets, jobs) to the error a client should see."""
    if isinstance(exc, InUse) or exc.reason in _CONFLICT_REASONS:
        return Conflict(str(exc), code=exc.reason)
    if exc.reason == "not_found":
        return NotFound(str(exc))
    return InvalidRequest(str(exc), code=exc.reason)
