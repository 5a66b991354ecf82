"""Operations routes: liveness, readiness and Prometheus metrics (no auth, no /v1 prefix)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gateway.deps import PoolDep
from gateway.ops.protocol import Readiness, UpstreamStatus

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The gateway process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="At least one upstream is ready (503 otherwise)",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
)
async def readyz(pool: PoolDep) -> JSONResponse:
    ready = pool.any_ready
    body = Readiness(
        status="ready" if ready else "unavailable",
        upstreams=[UpstreamStatus.of(r) for r in pool.replicas],
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus exposition")
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)
