"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming).

- ``RequestContextMiddleware`` gives every request an id and, on the response, the headers
  ``x-request-id`` and ``x-tuneloop-overhead-ms`` (time in the gateway itself before the
  response started).
- ``ApiKeyMiddleware`` guards every ``/v1/`` route with the inference keys. It is middleware
  rather than a FastAPI dependency because it must cover every route under ``/v1`` (present
  and future) and because dependency solving was a fifth of the gateway's time per request.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import RequestContext, new_request_id
from gateway.exceptions import Unauthorized
from gateway.http import error_response
from gateway.metrics import GatewayMetrics

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


class ApiKeyMiddleware:
    """When keys are configured, ``/v1/*`` needs ``Authorization: Bearer <key>`` holding one.

    Every configured key is compared in constant time, so timing tells nothing about which key
    or how much of it matched.
    """

    def __init__(self, app: ASGIApp, *, keys: tuple[bytes, ...], prefix: str = "/v1/") -> None:
        self.app = app
        self.keys = keys
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"].startswith(self.prefix):
            error = self.check(_header(scope, b"authorization"))
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
