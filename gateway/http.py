"""HTTP helpers shared by the routers: bounded body reading, error rendering, SSE response."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from gateway.exceptions import BodyTooLarge, ClientClosedRequest, GatewayError
from gateway.openai.protocol import ErrorInfo, ErrorResponse
from gateway.openai.streaming import StreamRelay


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body of {declared} bytes exceeds the {limit}-byte limit.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"Request body exceeds the {limit}-byte limit.")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ClientClosedRequest(
            "the client closed the connection before sending its body"
        ) from exc
    return b"".join(chunks)


def openai_error(
    status: int, message: str, *, type: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status)


def error_response(error: GatewayError) -> JSONResponse:
    return openai_error(
        error.status_code, error.message, type=error.error_type, code=error.code, param=error.param
    )


def error_responses(*errors: type[GatewayError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route that can fail with ``errors``."""
    return {
        cls.status_code: {"model": ErrorResponse, "description": cls.__doc__ or cls.__name__}
        for cls in errors
    }


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
