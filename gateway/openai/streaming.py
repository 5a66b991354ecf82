"""Relay of an upstream server-sent-event stream to the client, event by event.

Events are passed through as they arrive. The relay only looks inside an event to time the
first one, to count the usage chunk (and drop it when the client did not ask for usage), and
to notice the end. A transport failure mid-stream, or an upstream that stops without
``[DONE]``, becomes an OpenAI-shaped error event followed by ``[DONE]``: the OpenAI SDK raises
``APIError`` on it instead of returning a silently cut answer. With a JSON response_format
the relay also collects each choice's text and, in strict mode, sends a
``json_validation_failed`` error event before ``[DONE]`` when the whole is invalid.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.context import RequestContext
from gateway.exceptions import GatewayError, UpstreamError
from gateway.observers import Capture
from gateway.openai.json_guard import JsonSpec, JsonValidationFailed, violations
from gateway.protocol import ErrorInfo, ErrorResponse
from gateway.upstream.call import UpstreamCall

DONE = b"data: [DONE]\n\n"
_SEPARATOR = b"\n\n"


def _parse(event: bytes) -> dict[str, Any] | None:
    """The JSON object of a ``data:`` event, or ``None`` when it is not one."""
    try:
        chunk = json.loads(event.removeprefix(b"data:"))
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


def sse_error(error: GatewayError) -> bytes:
    body = ErrorResponse(
        error=ErrorInfo(message=error.message, type=error.error_type, code=error.code)
    )
    return b"data: " + body.model_dump_json().encode() + _SEPARATOR


class JsonStreamCheck:
    """Collects each choice's streamed text and validates it once the stream is complete."""

    def __init__(self, spec: JsonSpec, *, strict: bool) -> None:
        self._spec = spec
        self._strict = strict
        self._texts: defaultdict[int, list[str]] = defaultdict(list)
        self._finish: dict[int, str | None] = {}

    def feed(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                self._texts[index].append(text)
            if choice.get("finish_reason"):
                self._finish[index] = choice["finish_reason"]

    def verdict(self, ctx: RequestContext) -> GatewayError | None:
        """Record the result on ``ctx``; in strict mode, the error to send before ``[DONE]``."""
        errors: list[str] = []
        for index in sorted(set(self._texts) | set(self._finish)) or [0]:
            text = "".join(self._texts.get(index, []))
            errors += violations(self._spec, text, truncated=self._finish.get(index) == "length")
        ctx.json_result = "failed" if errors else "valid"
        if errors and self._strict:
            return JsonValidationFailed(
                "The streamed output failed JSON validation: " + "; ".join(errors)
            )
        return None


class StreamRelay:
    """Async-iterable over the client's SSE bytes; ``aclose`` is safe to call more than once."""

    def __init__(
        self,
        call: UpstreamCall,
        ctx: RequestContext,
        *,
        strip_usage: bool,
        on_close: Callable[[RequestContext], Awaitable[None] | None],
        json_check: JsonStreamCheck | None = None,
        first_chunk_extra: dict[str, Any] | None = None,
        capture: Capture | None = None,
    ) -> None:
        self._call = call
        self._ctx = ctx
        self._strip_usage = strip_usage
        self._json_check = json_check
        self._first_extra = first_chunk_extra
        self._capture = capture
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
            if self._json_check is not None:
                error = self._json_check.verdict(ctx)
                if error is not None:
                    ctx.status = error.status_code
                    return sse_error(error) + event
            return event
        if self._first_extra is not None and event.startswith(b"data:"):
            event = self._decorate(event)
        if b'"usage"' not in event and self._json_check is None and self._capture is None:
            return event
        chunk = _parse(event)
        if chunk is None:
            return event
        if self._json_check is not None:
            self._json_check.feed(chunk)
        if self._capture is not None:
            self._capture.feed_chunk(chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            ctx.prompt_tokens = usage.get("prompt_tokens")
            ctx.completion_tokens = usage.get("completion_tokens")
            if self._strip_usage and not chunk.get("choices"):
                return None
        return event

    def _decorate(self, event: bytes) -> bytes:
        """Add the extension fields (citations) to the first data chunk, once."""
        extra, self._first_extra = self._first_extra, None
        chunk = _parse(event)
        if chunk is None:
            return event
        chunk.update(extra or {})
        return b"data: " + json.dumps(chunk).encode() + _SEPARATOR

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._call.aclose()
        result = self._on_close(self._ctx)
        if result is not None:
            await result
