"""Operations routes: liveness, readiness and Prometheus metrics (no auth, no /v1 prefix)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gateway.deps import PoolDep

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The gateway process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="At least one upstream is ready (503 otherwise)")
async def readyz(pool: PoolDep) -> JSONResponse:
    upstreams = [
        {"url": r.url, "ready": r.ready, "in_flight": r.in_flight, "error": r.last_error}
        for r in pool.replicas
    ]
    ready = pool.any_ready
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "upstreams": upstreams},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus exposition")
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)
