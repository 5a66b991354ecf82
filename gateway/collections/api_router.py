"""Collections routes: management under /admin (admin token), search under /v1 (inference)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from gateway.collections.protocol import (
    CollectionList,
    CollectionView,
    CreateCollectionRequest,
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
)
from gateway.collections.serving import CollectionsServing
from gateway.exceptions import AdminDisabled, Conflict, InvalidRequest, NotFound, Unauthorized
from gateway.http import BoundedRoute, error_responses

admin_router = APIRouter(
    prefix="/admin/collections", tags=["collections"], route_class=BoundedRoute
)
search_router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=BoundedRoute)


async def get_collections(request: Request) -> CollectionsServing:
    return request.app.state.collections


CollectionsDep = Annotated[CollectionsServing, Depends(get_collections)]
_ADMIN = (Unauthorized, AdminDisabled)


@admin_router.post(
    "", status_code=201, responses=error_responses(*_ADMIN, InvalidRequest, Conflict)
)
async def create_collection(body: CreateCollectionRequest, c: CollectionsDep) -> CollectionView:
    return await c.create(body)


@admin_router.get("", responses=error_responses(*_ADMIN))
async def list_collections(c: CollectionsDep) -> CollectionList:
    return await c.list()


@admin_router.post(
    "/{name}/documents",
    responses=error_responses(*_ADMIN, InvalidRequest, NotFound),
    summary="Upsert documents by id (old chunks of each id are replaced); durable on return",
)
async def ingest(name: str, body: IngestRequest, c: CollectionsDep) -> IngestResponse:
    return await c.ingest(name, body)


@admin_router.delete(
    "/{name}/documents/{doc_id}", status_code=204, responses=error_responses(*_ADMIN, NotFound)
)
async def delete_document(name: str, doc_id: str, c: CollectionsDep) -> Response:
    await c.delete_document(name, doc_id)
    return Response(status_code=204)


@search_router.post(
    "/{name}/search",
    responses=error_responses(Unauthorized, InvalidRequest, NotFound),
    summary="The chunks most similar to a query",
)
async def search(name: str, body: SearchRequest, c: CollectionsDep) -> SearchResponse:
    return await c.search(name, body)
