"""After the last byte: what happens once a request is done hangs off one hook as observers.

``OpenAIServing`` calls ``Observers.finish`` exactly once per request (buffered answers from
``_serve``'s ``finally``, streams from the relay's ``on_close``). Each observer gets the same
``FinishedRequest`` and must return at once: anything slow is queued by the observer itself.
An observer that raises is logged and skipped; it never reaches the request.

A ``Capture`` exists only for requests the eval sampler chose right after routing; it holds what
the sampler stores (the client's messages before grounding, the retrieved chunks, the final
text), so an unsampled request pays nothing for it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.context import RequestContext
from gateway.metrics import GatewayMetrics

logger = logging.getLogger("tuneloop.access")
_errors = logging.getLogger("tuneloop.observers")


@dataclass(slots=True)
class Capture:
    """What a sampled request keeps for evaluation (raw; scrubbed off the request path)."""

    alias: str
    version: str
    request: dict[str, Any]  # messages or prompt, as the client sent them
    retrieved: list[dict[str, Any]] = field(default_factory=list)  # id, text, collection
    texts: dict[int, list[str]] = field(default_factory=dict)  # choice index -> text parts
    body: bytes | None = None  # a buffered answer, parsed off the request path

    def feed_chunk(self, chunk: dict[str, Any]) -> None:
        """Collect streamed text, choice by choice."""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                self.texts.setdefault(choice.get("index", 0), []).append(text)

    def feed_body(self, body: bytes) -> None:
        """Keep a buffered response's bytes; ``answer`` parses them (in a worker thread)."""
        self.body = body

    @property
    def answer(self) -> str:
        """The first choice's text (what the rubric scores)."""
        if self.body is not None:
            try:
                choices = json.loads(self.body).get("choices") or []
            except (ValueError, AttributeError):
                choices = []
            for choice in choices:
                message = choice.get("message")
                text = message.get("content") if isinstance(message, dict) else choice.get("text")
                if text:
                    self.texts[choice.get("index", 0)] = [text]
            self.body = None
        parts = self.texts.get(0) or next(iter(self.texts.values()), [])
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    endpoint: str
    ctx: RequestContext
    capture: Capture | None


class Observer(Protocol):
    def __call__(self, done: FinishedRequest) -> None: ...


class Observers:
    """An ordered list of observers, each isolated from the others and from the request."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = list(observers)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def finish(self, done: FinishedRequest) -> None:
        for observer in self._observers:
            try:
                observer(done)
            except Exception:  # an observer's bug must not fail a request that already ended
                _errors.exception(
                    "event=observer_failed observer=%r request_id=%s",
                    observer,
                    done.ctx.request_id,
                )


class AccessObserver:
    """Client metrics and the one access-log line per request."""

    def __init__(self, metrics: GatewayMetrics, *, access_log: bool = True) -> None:
        self._metrics = metrics
        self._access_log = access_log

    def __call__(self, done: FinishedRequest) -> None:
        ctx = done.ctx
        duration = ctx.elapsed()
        self._metrics.record_request(
            model=ctx.model,
            version=ctx.version,
            endpoint=done.endpoint,
            status=ctx.status,
            duration=duration,
            ttft=ctx.ttft if ctx.stream else None,
            prompt_tokens=ctx.prompt_tokens,
            completion_tokens=ctx.completion_tokens,
            json_result=ctx.json_result,
            json_repairs=ctx.json_repairs,
        )
        if not self._access_log:
            return
        overhead = ctx.response_overhead if ctx.response_overhead is not None else ctx.overhead()
        logger.info(
            "request_id=%s endpoint=%s model=%s version=%s stream=%s status=%d upstream=%s "
            "duration_ms=%.1f overhead_ms=%.3f prompt_tokens=%s completion_tokens=%s "
            "sampled=%s",
            ctx.request_id,
            done.endpoint,
            ctx.model,
            ctx.version,
            ctx.stream,
            ctx.status,
            ctx.upstream,
            duration * 1000,
            overhead * 1000,
            ctx.prompt_tokens,
            ctx.completion_tokens,
            done.capture is not None,
        )
