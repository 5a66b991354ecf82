"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming).

- ``RequestContextMiddleware`` gives every request an id and, on the response, the headers
  ``x-request-id`` and ``x-tuneloop-overhead-ms`` (time in the gateway itself before the
  response started).
- ``BearerAuthMiddleware`` guards every ``/v1/`` route with the inference keys (static ones
  from the settings, then managed ones from the key service, which also applies their rate
  limits and puts the key on the request context) and every ``/admin/`` route with the admin
  token. It is middleware rather than a FastAPI dependency
  because it must cover every route under its prefix (present and future) and because
  dependency solving was a fifth of the gateway's time per request.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import RequestContext, new_request_id
from gateway.exceptions import AdminDisabled, GatewayError, Unauthorized
from gateway.http import error_response
from gateway.metrics import GatewayMetrics

if TYPE_CHECKING:
    from gateway.keys.principal import ApiKeyPrincipal

REQUEST_ID_HEADER = "x-request-id"
OVERHEAD_HEADER = "x-tuneloop-overhead-ms"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext(request_id=new_request_id(_header(scope, b"x-request-id")))
        scope.setdefault("state", {})["ctx"] = ctx

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                overhead = ctx.response_overhead = ctx.overhead()
                if ctx.proxied:
                    self.metrics.overhead.observe(overhead)
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER.encode(), ctx.request_id.encode()))
                headers.append((OVERHEAD_HEADER.encode(), f"{overhead * 1000:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ManagedKeys(Protocol):
    """Keys created at run time (``gateway.keys.serving.KeyService``)."""

    @property
    def active(self) -> bool: ...

    def admit(self, token: str, request_id: str = "-") -> ApiKeyPrincipal | GatewayError: ...


class BearerAuthMiddleware:
    """Routes under ``prefix`` need ``Authorization: Bearer <key>`` holding one of ``keys``
    or, through ``managed``, a managed key that is valid and within its limits.

    With no keys of either kind: open when ``closed_without_keys`` is false (inference on a
    laptop), or answered 404 when it is true (the admin API is off until a token is set). Every
    static key is compared in constant time, so timing tells nothing about which key or how
    much of it matched; a managed key is found by its SHA-256 in one dict access. ``managed``
    is called per request because the key service is opened by the lifespan, after the
    middleware is built.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: tuple[bytes, ...],
        prefix: str,
        closed_without_keys: bool = False,
        managed: Callable[[], ManagedKeys | None] | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.prefix = prefix
        self.closed_without_keys = closed_without_keys
        self.managed = managed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            error: GatewayError | None
            managed = self.managed() if self.managed is not None else None
            if managed is not None and managed.active:
                error = self._check_managed(scope, managed)
            elif self.keys:
                error = self.check(_header(scope, b"authorization"))
            elif self.closed_without_keys:
                error = AdminDisabled()
            else:
                error = None
            if error is not None:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, authorization: str | None) -> Unauthorized | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
        presented = token.strip().encode()
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(presented, key)
        return None if matched else Unauthorized("Incorrect API key provided.")

    def _check_managed(self, scope: Scope, managed: ManagedKeys) -> GatewayError | None:
        """A static key as before; else a managed key, put on the request context."""
        authorization = _header(scope, b"authorization")
        error = self.check(authorization) if self.keys else None
        if self.keys and error is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
        ctx = scope.get("state", {}).get("ctx")
        admitted = managed.admit(token.strip(), ctx.request_id if ctx is not None else "-")
        if isinstance(admitted, GatewayError):
            return admitted
        if ctx is not None:
            ctx.key = admitted
        return None
