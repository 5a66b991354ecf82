"""Relay of an upstream server-sent-event stream to the client, event by event.

Events are passed through as they arrive. The relay only looks inside an event to time the
first one, to count the usage chunk (and drop it when the client did not ask for usage), and
to notice the end. A transport failure mid-stream, or an upstream that stops without
``[DONE]``, becomes an OpenAI-shaped error event followed by ``[DONE]``: the OpenAI SDK raises
``APIError`` on it instead of returning a silently cut answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.context import RequestContext
from gateway.exceptions import GatewayError, UpstreamError
from gateway.openai.protocol import ErrorInfo, ErrorResponse
from gateway.upstream.pool import UpstreamCall

DONE = b"data: [DONE]\n\n"
_SEPARATOR = b"\n\n"


def sse_error(error: GatewayError) -> bytes:
    body = ErrorResponse(
        error=ErrorInfo(message=error.message, type=error.error_type, code=error.code)
    )
    return b"data: " + body.model_dump_json().encode() + _SEPARATOR


class StreamRelay:
    """Async-iterable over the client's SSE bytes; ``aclose`` is safe to call more than once."""

    def __init__(
        self,
        call: UpstreamCall,
        ctx: RequestContext,
        *,
        strip_usage: bool,
        on_close: Callable[[RequestContext], Awaitable[None] | None],
    ) -> None:
        self._call = call
        self._ctx = ctx
        self._strip_usage = strip_usage
        self._on_close = on_close
        self._closed = False
        self._saw_done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        buffer = b""
        try:
            async for chunk in self._call.chunks():
                buffer += chunk
                while (end := buffer.find(_SEPARATOR)) != -1:
                    event = buffer[: end + 2]
                    buffer = buffer[end + 2 :]
                    if (out := self._inspect(event)) is not None:
                        yield out
            if not self._saw_done:
                raise UpstreamError("the model server ended the stream before it was complete")
        except UpstreamError as error:
            self._ctx.status = error.status_code
            yield sse_error(error)
            yield DONE
        finally:
            await self.aclose()

    def _inspect(self, event: bytes) -> bytes | None:
        ctx = self._ctx
        if ctx.ttft is None:
            ctx.ttft = ctx.elapsed()
        if event.startswith(DONE[:12]):
            self._saw_done = True
            return event
        if b'"usage"' not in event:
            return event
        try:
            chunk = json.loads(event.removeprefix(b"data:"))
        except ValueError:
            return event
        usage = chunk.get("usage") if isinstance(chunk, dict) else None
        if isinstance(usage, dict):
            ctx.prompt_tokens = usage.get("prompt_tokens")
            ctx.completion_tokens = usage.get("completion_tokens")
            if self._strip_usage and not chunk.get("choices"):
                return None
        return event

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._call.aclose()
        result = self._on_close(self._ctx)
        if result is not None:
            await result
