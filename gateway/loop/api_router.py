"""The loop's admin routes: datasets, retrain jobs (admin token, checked by middleware)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from adapters.curation import Candidate
from adapters.dataset_registry import DatasetVersion
from adapters.jobs import JobRecord
from gateway.exceptions import AdminDisabled, Conflict, InvalidRequest, NotFound, Unauthorized
from gateway.http import BoundedRoute, RowId, error_responses, read_body
from gateway.loop.protocol import DatasetImport, DatasetList, JobList, RetrainRequest
from gateway.loop.service import LoopService, RetrainOptions

router = APIRouter(prefix="/admin", tags=["loop"], route_class=BoundedRoute)
_COMMON = (Unauthorized, AdminDisabled)
MAX_DATASET_BYTES = 64 * 1024 * 1024


async def get_loop(request: Request) -> LoopService:
    return request.app.state.loop


LoopDep = Annotated[LoopService, Depends(get_loop)]


def parse_jsonl(raw: bytes, *, source: str) -> list[Candidate]:
    """Chat-format JSONL into candidates; the first bad line is a 400 naming it."""
    candidates = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"line {number}: not JSON ({exc.msg})", param="body") from exc
        except RecursionError as exc:  # json's decoder recurses once per nesting level
            raise InvalidRequest(f"line {number}: nested too deeply", param="body") from exc
        messages = record.get("messages") if isinstance(record, dict) else None
        valid = isinstance(messages, list) and all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str) for m in messages
        )  # fmt: skip
        if not valid or not any(m["role"] == "assistant" for m in messages):
            raise InvalidRequest(
                f"line {number}: needs 'messages' with roles system/user/assistant, string "
                "content and an assistant turn",
                param="body",
            )
        candidates.append(Candidate(conversation=messages, source=f"{source}:{number}"))
    if not candidates:
        raise InvalidRequest("the dataset has no examples", param="body")
    return candidates


@router.post(
    "/datasets/{alias}",
    status_code=201,
    responses=error_responses(*_COMMON, InvalidRequest),
    summary="Import chat-format JSONL as the alias's next dataset version (scrubbed, deduped; "
    "the first import also freezes the alias's test set)",
)
async def import_dataset(
    alias: str, request: Request, loop: LoopDep, source: str = "import"
) -> DatasetImport:
    raw = await read_body(request, MAX_DATASET_BYTES)
    candidates = parse_jsonl(raw, source=source)
    registry = loop.datasets
    latest = await asyncio.to_thread(registry.latest, alias)
    version, removals = await asyncio.to_thread(
        registry.import_examples, alias, candidates,
        parents=[latest.hash] if latest else [], scrub=loop.scrub,
    )  # fmt: skip
    frozen = await asyncio.to_thread(registry.frozen, alias)
    return DatasetImport(
        version=version, removals=[asdict(r) for r in removals], frozen=len(frozen)
    )


@router.get("/datasets", responses=error_responses(*_COMMON))
async def list_datasets(loop: LoopDep, alias: str | None = None) -> DatasetList:
    return DatasetList(data=await asyncio.to_thread(loop.datasets.versions, alias))


@router.get("/datasets/{alias}/{version}", responses=error_responses(*_COMMON, NotFound))
async def show_dataset(alias: str, version: RowId, loop: LoopDep) -> DatasetVersion:
    return await asyncio.to_thread(loop.datasets.get, alias, version)


@router.get("/datasets/{alias}/{a}/diff/{b}", responses=error_responses(*_COMMON, NotFound))
async def diff_datasets(alias: str, a: RowId, b: RowId, loop: LoopDep) -> dict[str, Any]:
    return await asyncio.to_thread(loop.datasets.diff, alias, a, b)


@router.post(
    "/retrain",
    status_code=202,
    responses=error_responses(*_COMMON, InvalidRequest, NotFound, Conflict),
    summary="Retrain an alias now: dataset, challenger, gate, canary (409 while a job runs)",
)
async def retrain(body: RetrainRequest, loop: LoopDep) -> JobRecord:
    options = RetrainOptions(max_steps=body.max_steps, lr=body.lr)
    return await loop.retrain(body.alias, trigger="manual", options=options)


@router.get("/jobs", responses=error_responses(*_COMMON), summary="Retrain jobs, newest first")
async def jobs(
    loop: LoopDep,
    alias: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    return JobList(data=await asyncio.to_thread(loop.jobs.jobs, alias=alias, limit=limit))


@router.get("/jobs/{job_id}", responses=error_responses(*_COMMON, NotFound))
async def job(job_id: RowId, loop: LoopDep) -> JobRecord:
    return await asyncio.to_thread(loop.jobs.get, job_id)


@router.post(
    "/jobs/{job_id}/cancel",
    responses=error_responses(*_COMMON, NotFound, Conflict),
    summary="Cancel an active job: its trainer, gate or canary stops (409 when it has ended)",
)
async def cancel_job(job_id: RowId, loop: LoopDep) -> JobRecord:
    return await loop.cancel(job_id)
