"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming).

Gives every request an id and, on the response, the headers ``x-request-id`` and
``x-tuneloop-overhead-ms`` (time in the gateway itself before the response started).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import RequestContext, new_request_id
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
