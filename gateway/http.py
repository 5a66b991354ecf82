"""HTTP helpers shared by the routers: bounded body reading and error rendering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Path, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from gateway.exceptions import BodyTooLarge, ClientClosedRequest, GatewayError
from gateway.protocol import ErrorInfo, ErrorResponse


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


class BoundedRoute(APIRoute):
    """A route whose JSON body FastAPI parses, bounded like the generation routes.

    FastAPI reads such a body whole, at any size, before the route runs; here ``read_body``
    reads it first: 413 as soon as it exceeds ``max_body_bytes``, before any parsing. Routes
    that read their body themselves (no ``body_field``) are left as they are.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def bounded(request: Request) -> Response:
            limit = request.app.state.settings.max_body_bytes
            # Starlette keeps a body it has read in ``_body``, where FastAPI's handler finds it.
            request._body = await read_body(request, limit)
            return await handler(request)

        return bounded


# A row id in a path. Database integers are 64-bit: a larger one is a 400 here rather than an
# OverflowError (500) from the driver.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def openai_error(
    status: int,
    message: str,
    *,
    type: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def error_response(error: GatewayError) -> JSONResponse:
    return openai_error(
        error.status_code,
        error.message,
        type=error.error_type,
        code=error.code,
        param=error.param,
        headers=error.headers,
    )


def error_responses(*errors: type[GatewayError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route that can fail with ``errors``."""
    return {
        cls.status_code: {"model": ErrorResponse, "description": cls.__doc__ or cls.__name__}
        for cls in errors
    }


T = TypeVar("T")


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise a 499.

    For answers that are not streamed: once the body has been read, the server's ``receive``
    only returns when the client goes away, so a watcher task waits on it and cancels the
    request's own task. Cancelling drops the upstream connection, and vLLM aborts the request
    (a stream is watched by its response instead).
    """
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise
        task.uncancel()
        raise ClientClosedRequest("the client closed the connection before the answer") from None
    finally:
        watcher.cancel()
