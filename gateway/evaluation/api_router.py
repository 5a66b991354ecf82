"""Continuous evaluation's routes: rubrics and the read API under /admin (admin token, checked
by middleware), feedback under /v1 (inference key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
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
from gateway.http import BoundedRoute, RowId, error_responses, read_body

admin_router = APIRouter(prefix="/admin", tags=["evaluation"])
feedback_router = APIRouter(prefix="/v1", tags=["evaluation"], route_class=BoundedRoute)
_COMMON = (Unauthorized, AdminDisabled)


async def get_eval(request: Request) -> EvalServing:
    return request.app.state.eval


EvalDep = Annotated[EvalServing, Depends(get_eval)]

# A rubric is a few checks, perhaps a JSON schema and a judge prompt. Parsing and validating
# 64 KiB of hostile YAML already takes most of a second, so a larger body is refused unread.
MAX_RUBRIC_BYTES = 64 * 1024
# What a rubric is set for: an alias or a base model's name, never a path, a control character
# or a page of text (any string used to be stored as a rubric's alias).
ModelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")]
# A report's file name (eval-2026-11-29.json): no separators, NUL or control characters.
ReportName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
_RUBRIC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


async def _rubric_source(request: Request) -> str:
    """The rubric as YAML or JSON text (JSON is YAML: ``parse_rubric`` reads both)."""
    raw = await read_body(request, MAX_RUBRIC_BYTES)
    if not raw.strip():
        raise InvalidRequest("the rubric body is empty", param="body")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the rubric must be UTF-8 text", param="body") from exc


@admin_router.put(
    "/rubrics/{alias}",
    responses=error_responses(*_COMMON, InvalidRequest),
    openapi_extra=_RUBRIC_BODY,
    summary="Set the rubric of an alias (YAML or JSON); a new version, a new epoch if changed",
)
async def put_rubric(alias: ModelName, request: Request, evals: EvalDep) -> RubricRecord:
    return await evals.put_rubric(alias, await _rubric_source(request))


@admin_router.get("/rubrics/{alias}", responses=error_responses(*_COMMON, NotFound))
async def get_rubric(alias: str, evals: EvalDep) -> RubricRecord:
    return evals.get_rubric(alias)


@admin_router.get(
    "/eval/summary",
    responses=error_responses(*_COMMON),
    summary="Per alias: drift state and baseline; per version: samples, mean, pass rates",
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
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="next_before of the last page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SamplePage:
    query = SampleQuery(
        alias=alias, version=version, request_id=request_id, score_below=score_below,
        has_feedback=has_feedback, before=before, limit=limit,
    )  # fmt: skip
    return await evals.samples(query)


@admin_router.get("/eval/samples/{sample_id}", responses=error_responses(*_COMMON, NotFound))
async def sample(sample_id: RowId, evals: EvalDep) -> SampleRecord:
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
async def report_file(name: ReportName, evals: EvalDep) -> FileResponse:
    return FileResponse(await evals.report_file(name))


@feedback_router.post(
    "/feedback",
    status_code=201,
    responses=error_responses(Unauthorized, InvalidRequest, NotFound),
    summary="Feedback on an answer, by its x-request-id (stored scrubbed beside its sample)",
)
async def feedback(body: Annotated[FeedbackRequest, Body()], evals: EvalDep) -> FeedbackRecord:
    return await evals.feedback(body)
