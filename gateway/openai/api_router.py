"""The OpenAI-compatible routes: one call into serving, then the response.

The two generation routes take only the ``Request`` and read the app's live objects from
``app.state`` themselves: FastAPI's dependency solving was the largest single cost of the
gateway's own time per request (about a sixth, measured with bench/overhead.py and cProfile).
The other routes use the ``Annotated`` dependencies of ``gateway.deps``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gateway.deps import ServingDep
from gateway.exceptions import (
    BodyTooLarge,
    InvalidRequest,
    ModelNotFound,
    NoReadyUpstream,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.http import cancel_on_disconnect, error_responses, read_body
from gateway.openai.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from gateway.openai.responses import RelayResponse
from gateway.openai.serving import JSONResult, ServingResult

# Inference keys are checked by ApiKeyMiddleware for everything under /v1.
router = APIRouter(prefix="/v1", tags=["openai"])

_GENERATION_ERRORS = error_responses(
    InvalidRequest,
    Unauthorized,
    ModelNotFound,
    RateLimited,
    BodyTooLarge,
    UpstreamError,
    NoReadyUpstream,
    UpstreamTimeout,
)


def _body_schema(model: type) -> dict:
    """Document the request body, which the route reads raw to bound and validate it itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _respond(result: ServingResult) -> Response:
    if isinstance(result, JSONResult):
        return Response(result.body, status_code=result.status, media_type="application/json")
    return RelayResponse(result.relay)


@router.post(
    "/chat/completions",
    responses=_GENERATION_ERRORS,
    openapi_extra=_body_schema(ChatCompletionRequest),
    summary="Create a chat completion (streaming with stream=true)",
)
async def create_chat_completion(request: Request) -> Response:
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    work = state.serving.create_chat_completion(body, request.state.ctx)
    return _respond(await cancel_on_disconnect(request, work))


@router.post(
    "/completions",
    responses=_GENERATION_ERRORS,
    openapi_extra=_body_schema(CompletionRequest),
    summary="Create a text completion (streaming with stream=true)",
)
async def create_completion(request: Request) -> Response:
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    work = state.serving.create_completion(body, request.state.ctx)
    return _respond(await cancel_on_disconnect(request, work))


@router.get("/models", response_model=ModelList, responses=error_responses(NoReadyUpstream))
async def list_models(request: Request, serving: ServingDep) -> ModelList:
    return serving.list_models(key=request.state.ctx.key)  # a managed key sees what it may call
