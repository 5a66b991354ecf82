"""OpenAI-compatible serving: validate, pick an upstream, forward, account. No FastAPI here."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from gateway.admission import AdmissionGate, InternalLane, RequestLimits
from gateway.context import RequestContext
from gateway.exceptions import (
    GatewayError,
    InvalidRequest,
    LibraryError,
    ModelNotFound,
    NoReadyUpstream,
    from_library,
)
from gateway.keys.principal import ApiKeyPrincipal
from gateway.metrics import GatewayMetrics
from gateway.observers import AccessObserver, Capture, FinishedRequest, Observers
from gateway.openai.grounding import Retriever, attach_citations, citations, ground, query_of
from gateway.openai.json_guard import JsonSpec, parse_response_format
from gateway.openai.json_retry import complete_json
from gateway.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
    ModelCard,
    ModelList,
    StreamOptions,
)
from gateway.openai.streaming import JsonStreamCheck, StreamRelay
from gateway.openai.upstream_errors import upstream_error_body
from gateway.protocol import RetrievalOptions
from gateway.routing import Resolver, Route
from gateway.upstream.pool import UpstreamPool
from retrieval.collections import Hit

RequestT = TypeVar("RequestT", bound=GenerationRequest)
_FORWARD_HEADERS = {"content-type": "application/json"}

# Sample this request? Decided right after routing (ctx.model and ctx.version are set).
SampleDecision = Callable[[RequestContext], bool]


@dataclass(slots=True)
class JSONResult:
    """A complete upstream answer, passed through byte for byte."""

    status: int
    body: bytes


@dataclass(slots=True)
class StreamResult:
    relay: StreamRelay


ServingResult = JSONResult | StreamResult


@dataclass(frozen=True, slots=True)
class JsonOptions:
    max_retries: int = 2
    max_schema_bytes: int = 65536


def parse_request(model_cls: type[RequestT], body: bytes) -> RequestT:
    """Validate a JSON body, turning pydantic's errors into one clear 400."""
    try:
        return model_cls.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or None
        if first.get("type") == "json_invalid":
            raise InvalidRequest(f"Request body is not valid JSON: {first['msg']}") from exc
        message = f"{where}: {first['msg']}" if where else first["msg"]
        if exc.error_count() > 1:
            message += f" (and {exc.error_count() - 1} more problems)"
        raise InvalidRequest(message, param=where) from exc


class OpenAIServing:
    """Chat and text completions, and the model list, in front of an ``UpstreamPool``."""

    def __init__(
        self,
        pool: UpstreamPool,
        metrics: GatewayMetrics,
        *,
        resolver: Resolver | None = None,
        retriever: Retriever | None = None,
        json_options: JsonOptions | None = None,
        observers: Observers | None = None,
        sample: SampleDecision | None = None,
        limits: RequestLimits | None = None,
        gate: AdmissionGate | None = None,
        internal: InternalLane | None = None,
    ):
        self._pool = pool
        self._metrics = metrics
        self._resolver = resolver
        self._retriever = retriever
        self._json = json_options or JsonOptions()
        self._observers = observers or Observers(AccessObserver(metrics))
        self._sample = sample
        self._limits = limits or RequestLimits()
        self._gate = gate
        self._internal = internal

    # --- public ------------------------------------------------------------------------------
    async def create_chat_completion(self, body: bytes, ctx: RequestContext) -> ServingResult:
        return await self._serve("chat", body, ctx, ChatCompletionRequest, "/v1/chat/completions")

    async def create_completion(self, body: bytes, ctx: RequestContext) -> ServingResult:
        return await self._serve("completions", body, ctx, CompletionRequest, "/v1/completions")

    def list_models(self, key: ApiKeyPrincipal | None = None) -> ModelList:
        """Base models and adapter versions the replicas serve, then aliases; with a managed
        ``key``, only those it may call."""
        if not self._pool.any_ready:
            raise NoReadyUpstream("no model server is ready")
        cards = self._pool.known_models()
        data = [ModelCard(**card) for card in cards.values()]
        base = next((m for m, card in cards.items() if not card.get("parent")), None)
        if self._resolver is not None:
            data += [
                ModelCard(id=alias, root=alias, parent=base)
                for alias in self._resolver.alias_names()
            ]
        if key is not None:
            data = [card for card in data if key.allows(card.id)]
        return ModelList(data=data)

    # --- the one request path ----------------------------------------------------------------
    async def _serve(
        self,
        endpoint: str,
        body: bytes,
        ctx: RequestContext,
        model_cls: type[GenerationRequest],
        path: str,
    ) -> ServingResult:
        self._metrics.in_flight_for(endpoint).inc()
        handed_to_stream = False
        route: Route | None = None
        capture: Capture | None = None
        laned = False
        try:
            request = parse_request(model_cls, body)
            self._limits.check(request)
            set_priority(request, ctx, self._internal)
            route = await self._route(request, ctx)
            if ctx.internal and self._internal is not None:
                await self._internal.acquire()
                laned = True
            if self._gate is not None:
                await self._gate.acquire()
                ctx.admitted = True
            capture = self._capture(request, ctx)
            hits = await self._ground(request, route)
            if capture is not None and hits:
                capture.retrieved = [
                    {"id": h.chunk_id, "doc_id": h.doc_id, "text": h.text} for h in hits
                ]
            cited = citations(hits) if hits is not None else None
            result = await self._forward(endpoint, request, ctx, path, route, cited, capture)
            handed_to_stream = isinstance(result, StreamResult)
            if capture is not None and isinstance(result, JSONResult) and result.status == 200:
                capture.feed_body(result.body)
            return result
        except GatewayError as exc:
            ctx.status = exc.status_code
            raise
        except LibraryError as exc:  # e.g. an adapter version deleted while being routed to
            error = from_library(exc)
            ctx.status = error.status_code
            raise error from exc
        except asyncio.CancelledError:
            ctx.status = 499  # the client left: the upstream call was dropped with it
            raise
        finally:
            if laned:
                self._internal.release()
            if not handed_to_stream:
                self._finish(endpoint, ctx, route, capture)

    def _capture(self, request: GenerationRequest, ctx: RequestContext) -> Capture | None:
        """For a sampled request, what the client asked, kept before grounding changes it."""
        if ctx.internal or self._sample is None or not self._sample(ctx):
            return None
        if isinstance(request, ChatCompletionRequest):
            asked = {"messages": [m.model_dump(exclude_none=True) for m in request.messages]}
        else:
            asked = {"prompt": getattr(request, "prompt", None)}
        return Capture(alias=ctx.model, version=ctx.version, request=asked)

    async def _route(self, request: GenerationRequest, ctx: RequestContext) -> Route | None:
        """Point the request at the served name that answers it, holding adapter versions."""
        if ctx.key is not None and not ctx.key.allows(request.model):
            raise ModelNotFound(request.model)  # exactly as unknown: reveal nothing
        route = (
            await self._resolver.route(request.model, request.user)
            if self._resolver is not None
            else None
        )
        if route is None:
            self._resolve_model(request.model)
            ctx.model = ctx.version = request.model
            return None
        ctx.model = route.alias or route.served_name
        ctx.version = route.served_name
        request.model = route.served_name
        return route

    async def _ground(self, request: GenerationRequest, route: Route | None) -> list[Hit] | None:
        """With ``retrieval`` in a chat request (or bound to its alias): search, add the
        sources, return the hits."""
        if request.retrieval is None and route is not None and route.defaults.retrieval:
            if not isinstance(request, ChatCompletionRequest):
                return None  # an alias's retrieval applies to chat only
            request.retrieval = RetrievalOptions.model_validate(route.defaults.retrieval)
        if request.retrieval is None:
            return None
        if not isinstance(request, ChatCompletionRequest):
            raise InvalidRequest("retrieval works with chat completions", param="retrieval")
        if self._retriever is None:
            raise InvalidRequest("retrieval is not enabled on this gateway", param="retrieval")
        hits = await self._retriever.retrieve(request.retrieval, query_of(request.messages))
        request.messages = ground(request.messages, hits)
        return hits

    def _json_spec(self, request: GenerationRequest, route: Route | None) -> JsonSpec | None:
        """The request's JSON response_format, else the alias's bound one, else none."""
        value = request.response_format
        if value is None and route is not None:
            value = route.defaults.response_format
        return parse_response_format(value, max_schema_bytes=self._json.max_schema_bytes)

    @staticmethod
    def _payload(request: GenerationRequest, spec: JsonSpec | None, *, guided: bool) -> bytes:
        """The body vLLM gets: our extensions dropped, the JSON format guided or not."""
        exclude = {"json_validation", "retrieval"}
        if spec is not None and guided:
            request = request.model_copy(update={"response_format": spec.response_format})
        elif spec is not None:
            exclude.add("response_format")
        return request.model_dump_json(exclude_unset=True, exclude=exclude).encode()

    async def _forward(
        self,
        endpoint: str,
        request: GenerationRequest,
        ctx: RequestContext,
        path: str,
        route: Route | None,
        cited: list[dict[str, object]] | None,
        capture: Capture | None,
    ) -> ServingResult:
        ctx.stream = request.stream
        ctx.proxied = True
        spec = self._json_spec(request, route)
        if spec is not None and not request.stream:

            async def send(attempt: GenerationRequest, guided: bool) -> tuple[int, bytes]:
                payload = self._payload(attempt, spec, guided=guided)
                return await self._complete(path, payload, attempt.model, ctx)

            status, content = await complete_json(
                send, request, spec, ctx, max_retries=self._json.max_retries
            )
        elif not request.stream:
            payload = self._payload(request, spec, guided=True)
            status, content = await self._complete(path, payload, request.model, ctx)
        if not request.stream:
            if cited is not None and status == 200:
                content = attach_citations(content, cited)
            return JSONResult(status, content)

        strip_usage = not request.wants_usage_in_stream
        if strip_usage:
            # Ask for usage anyway so tokens are counted; the relay drops it for the client.
            request.stream_options = StreamOptions(include_usage=True)
        payload = self._payload(request, spec, guided=True)
        started = time.perf_counter()
        call = await self._pool.open(path, payload, model=request.model, headers=_FORWARD_HEADERS)
        ctx.upstream = call.replica.url
        ctx.status = call.status
        ctx.upstream_seconds += time.perf_counter() - started
        if ctx.status != 200:
            try:
                return JSONResult(ctx.status, upstream_error_body(ctx.status, await call.read()))
            finally:
                await call.aclose()
        relay = StreamRelay(
            call,
            ctx,
            strip_usage=strip_usage,
            on_close=lambda done: self._finish(endpoint, done, route, capture),
            json_check=JsonStreamCheck(spec, strict=request.json_validation == "strict")
            if spec is not None
            else None,
            first_chunk_extra={"citations": cited} if cited is not None else None,
            capture=capture,
        )
        return StreamResult(relay)

    async def _complete(
        self, path: str, payload: bytes, model: str, ctx: RequestContext
    ) -> tuple[int, bytes]:
        """One non-streaming upstream call: status and body, usage counted."""
        started = time.perf_counter()
        call = await self._pool.open(path, payload, model=model, headers=_FORWARD_HEADERS)
        ctx.upstream = call.replica.url
        try:
            ctx.status = call.status
            content = await call.read()
        finally:
            ctx.upstream_seconds += time.perf_counter() - started
            await call.aclose()
        if ctx.status == 200:
            self._count_usage(ctx, content)
        else:
            content = upstream_error_body(ctx.status, content)
        return ctx.status, content

    def _resolve_model(self, model: str) -> None:
        if not self._pool.any_ready:
            raise NoReadyUpstream("no model server is ready")
        if model not in self._pool.known_models():
            raise ModelNotFound(model)

    @staticmethod
    def _count_usage(ctx: RequestContext, content: bytes) -> None:
        try:
            usage = json.loads(content).get("usage")
        except (ValueError, AttributeError):
            return
        if isinstance(usage, dict):  # summed: a JSON repair makes several calls
            ctx.prompt_tokens = (ctx.prompt_tokens or 0) + (usage.get("prompt_tokens") or 0)
            ctx.completion_tokens = (ctx.completion_tokens or 0) + (
                usage.get("completion_tokens") or 0
            )

    def _finish(
        self, endpoint: str, ctx: RequestContext, route: Route | None, capture: Capture | None
    ) -> None:
        """Release the route, then tell the observers, once per request.

        Internal requests (a judge call, a shadow request) are not a client's: no client
        metrics, no access-log line, never sampled.
        """
        if route is not None and self._resolver is not None:
            self._resolver.release(route)
        if ctx.admitted and self._gate is not None:
            ctx.admitted = False
            self._gate.release()
        self._metrics.in_flight_for(endpoint).dec()
        if not ctx.internal:
            self._observers.finish(FinishedRequest(endpoint, ctx, capture))


def set_priority(
    request: GenerationRequest, ctx: RequestContext, lane: InternalLane | None
) -> None:
    """vLLM's ``priority`` is the gateway's to set: a client's is dropped (it could jump every
    queue, or be refused by a replica that schedules first come first served); an internal
    request gets the lane's."""
    extra = request.__pydantic_extra__
    if extra is None:
        return
    extra.pop("priority", None)
    if ctx.internal and lane is not None and lane.priority is not None:
        extra["priority"] = lane.priority
