"""Admin routes (``/admin``): the Bearer admin token is checked by middleware for all of them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from gateway.adapter_service import AdapterLoadFailed
from gateway.admin.protocol import (
    AdapterList,
    AdapterRecord,
    AliasList,
    AliasRecord,
    AliasRequest,
    EventList,
    RegisterAdapterRequest,
)
from gateway.admin.serving import AdminServing
from gateway.exceptions import (
    AdminDisabled,
    Conflict,
    InvalidRequest,
    NoReadyUpstream,
    NotFound,
    Unauthorized,
)
from gateway.http import BoundedRoute, error_responses

router = APIRouter(prefix="/admin", tags=["admin"], route_class=BoundedRoute)


async def get_admin(request: Request) -> AdminServing:
    return request.app.state.admin


AdminDep = Annotated[AdminServing, Depends(get_admin)]
_COMMON = (Unauthorized, AdminDisabled)


@router.post(
    "/adapters",
    status_code=201,
    responses=error_responses(*_COMMON, InvalidRequest, AdapterLoadFailed, NoReadyUpstream),
    summary="Register the next version of an adapter and load it on every replica",
)
async def register_adapter(body: RegisterAdapterRequest, admin: AdminDep) -> AdapterRecord:
    return await admin.register_adapter(body)


@router.get("/adapters", responses=error_responses(*_COMMON))
async def list_adapters(admin: AdminDep) -> AdapterList:
    return await admin.list_adapters()


@router.delete(
    "/adapters/{served_name}",
    responses=error_responses(*_COMMON, NotFound, Conflict),
    summary="Retire a version (409 while an alias points at it); unloaded once drained",
)
async def delete_adapter(served_name: str, admin: AdminDep) -> AdapterRecord:
    return await admin.delete_adapter(served_name)


@router.put(
    "/aliases/{alias}",
    responses=error_responses(*_COMMON, InvalidRequest, NotFound, AdapterLoadFailed),
    summary="Point an alias at versions (hot swap; canary with several weighted targets)",
)
async def set_alias(alias: str, body: AliasRequest, admin: AdminDep) -> AliasRecord:
    return await admin.set_alias(alias, body)


@router.get("/aliases", responses=error_responses(*_COMMON))
async def list_aliases(admin: AdminDep) -> AliasList:
    return await admin.list_aliases()


@router.post(
    "/aliases/{alias}/rollback",
    responses=error_responses(*_COMMON, InvalidRequest, NotFound),
    summary="Point the alias back at its previous targets",
)
async def rollback_alias(alias: str, admin: AdminDep) -> AliasRecord:
    return await admin.rollback_alias(alias)


@router.delete("/aliases/{alias}", status_code=204, responses=error_responses(*_COMMON, NotFound))
async def delete_alias(alias: str, admin: AdminDep) -> Response:
    await admin.delete_alias(alias)
    return Response(status_code=204)


@router.get("/events", responses=error_responses(*_COMMON), summary="The audit log, newest first")
async def events(
    admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    subject: str | None = None,
) -> EventList:
    return await admin.events(limit=limit, subject=subject)
