"""The HTTP response for a streamed generation: SSE that always releases its upstream."""

from __future__ import annotations

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.openai.streaming import StreamRelay

__all__ = ["RelayResponse"]


class RelayResponse(StreamingResponse):
    """An SSE response that releases its upstream even if the client left before the body."""

    def __init__(self, relay: StreamRelay) -> None:
        super().__init__(
            relay,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._relay.aclose()
