"""Managed API keys (``/admin/keys``): the admin token is checked by middleware for all of them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from gateway.exceptions import AdminDisabled, Conflict, InvalidRequest, NotFound, Unauthorized
from gateway.http import BoundedRoute, error_responses
from gateway.keys.protocol import (
    ApiKeyList,
    ApiKeyRecord,
    CreatedApiKey,
    CreateKeyRequest,
    KeyUsage,
)
from gateway.keys.serving import KeyService

router = APIRouter(prefix="/admin", tags=["keys"], route_class=BoundedRoute)
_COMMON = (Unauthorized, AdminDisabled)


async def get_keys(request: Request) -> KeyService:
    return request.app.state.keys


KeysDep = Annotated[KeyService, Depends(get_keys)]


@router.post(
    "/keys",
    status_code=201,
    responses=error_responses(*_COMMON, InvalidRequest, Conflict),
    summary="Create an API key; the key itself is in this response only",
)
async def create_key(body: CreateKeyRequest, keys: KeysDep) -> CreatedApiKey:
    return await keys.create(body)


@router.get(
    "/keys",
    responses=error_responses(*_COMMON),
    summary="List API keys (no secrets) with their usage totals",
)
async def list_keys(keys: KeysDep) -> ApiKeyList:
    return await keys.list_keys()


@router.get("/keys/{key}", responses=error_responses(*_COMMON, NotFound), summary="One API key")
async def get_key(key: str, keys: KeysDep) -> ApiKeyRecord:
    return await keys.get_key(key)


@router.get(
    "/keys/{key}/usage",
    responses=error_responses(*_COMMON, InvalidRequest, NotFound),
    summary="A key's requests and tokens per hour",
)
async def key_usage(
    key: str,
    keys: KeysDep,
    hours: Annotated[int, Query(ge=1, le=24 * 366, description="Hours back from now.")] = 24,
) -> KeyUsage:
    return await keys.usage(key, hours=hours)


@router.delete(
    "/keys/{key}",
    responses=error_responses(*_COMMON, NotFound),
    summary="Revoke an API key (by id or name); kept for the audit",
)
async def revoke_key(key: str, keys: KeysDep) -> ApiKeyRecord:
    return await keys.revoke(key)
