"""Continuous evaluation's routes: rubrics and the read API under /admin (admin token, checked
by middleware), feedback under /v1 (inference key)."""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import FileResponse

from eval.store import SampleQuery
from gateway.evaluation.protocol import (
    EvalSummary,
    FeedbackRecord,
    FeedbackRequest,
    RubricRecord,
    SamplePage,
    SampleRecord,
)
from gateway.evaluation.serving import EvalServing
from gateway.exceptions import AdminDisabled, InvalidRequest, NotFound, Unauthorized
from gateway.http import error_responses

admin_router = APIRouter(prefix="/admin", tags=["evaluation"])
feedback_router = APIRouter(prefix="/v1", tags=["evaluation"])
_COMMON = (Unauthorized, AdminDisabled)


async def get_eval(request: Request) -> EvalServing:
    return request.app.state.eval


EvalDep = Annotated[EvalServing, Depends(get_eval)]

_RUBRIC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


async def _rubric_source(request: Request) -> str | dict[str, Any]:
    """The rubric as YAML text (any text body) or as a JSON object."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("the rubric body is empty", param="body")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the rubric must be UTF-8 text", param="body") from exc
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            value = yaml.safe_load(text)  # JSON is YAML; errors are reported by the parser
        except yaml.YAMLError:
            return text
        return value if isinstance(value, dict) else text
    return text


@admin_router.put(
    "/rubrics/{alias}",
    responses=error_responses(*_COMMON, InvalidRequest),
    openapi_extra=_RUBRIC_BODY,
    summary="Set the rubric of an alias (YAML or JSON); a new version, a new epoch if changed",
)
async def put_rubric(alias: str, request: Request, evals: EvalDep) -> RubricRecord:
    return await evals.put_rubric(alias, await _rubric_source(request))


@admin_router.get("/rubrics/{alias}", responses=error_responses(*_COMMON, NotFound))
async def get_rubric(alias: str, evals: EvalDep) -> RubricRecord:
    return evals.get_rubric(alias)


@admin_router.get(
    "/eval/summary",
    responses=error_responses(*_COMMON),
    summary="Per alias and version: samples, mean score and baseline, pass rates, drift state",
)
async def summary(evals: EvalDep) -> EvalSummary:
    return await evals.summary()


@admin_router.get(
    "/eval/samples",
    responses=error_responses(*_COMMON),
    summary="Scrubbed samples, newest first, with scores and feedback",
)
async def samples(
    evals: EvalDep,
    alias: str | None = None,
    version: str | None = None,
    request_id: str | None = None,
    score_below: Annotated[float | None, Query(ge=0, le=1)] = None,
    has_feedback: bool | None = None,
    before: Annotated[int | None, Query(ge=1, description="next_before of the last page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SamplePage:
    query = SampleQuery(
        alias=alias, version=version, request_id=request_id, score_below=score_below,
        has_feedback=has_feedback, before=before, limit=limit,
    )  # fmt: skip
    return await evals.samples(query)


@admin_router.get("/eval/samples/{sample_id}", responses=error_responses(*_COMMON, NotFound))
async def sample(sample_id: int, evals: EvalDep) -> SampleRecord:
    return await evals.sample(sample_id)


@admin_router.post(
    "/eval/ack/{alias}",
    responses=error_responses(*_COMMON, NotFound),
    summary="Acknowledge drift: restart the alias's baseline from the next samples",
)
async def acknowledge(alias: str, evals: EvalDep) -> dict[str, str]:
    return await evals.acknowledge(alias)


@admin_router.post(
    "/eval/drift-check",
    responses=error_responses(*_COMMON),
    summary="Run the drift check now (the scheduler runs it every TUNELOOP_EVAL_DRIFT_INTERVAL)",
)
async def drift_check(evals: EvalDep) -> dict[str, Any]:
    return {"object": "list", "data": await evals.drift_check()}


@admin_router.get("/eval/reports", responses=error_responses(*_COMMON))
async def reports(evals: EvalDep) -> dict[str, Any]:
    return {"object": "list", "data": await evals.reports()}


@admin_router.post(
    "/eval/reports", responses=error_responses(*_COMMON), summary="Write today's report now"
)
async def write_report(evals: EvalDep) -> dict[str, Any]:
    return await evals.write_report()


@admin_router.get("/eval/reports/{name}", responses=error_responses(*_COMMON, NotFound))
async def report_file(name: str, evals: EvalDep) -> FileResponse:
    return FileResponse(await evals.report_file(name))


@feedback_router.post(
    "/feedback",
    status_code=201,
    responses=error_responses(Unauthorized, InvalidRequest, NotFound),
    summary="Feedback on an answer, by its x-request-id (stored scrubbed beside its sample)",
)
async def feedback(body: Annotated[FeedbackRequest, Body()], evals: EvalDep) -> FeedbackRecord:
    return await evals.feedback(body)
