"""The composition root: builds the FastAPI app and owns every live object through its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.registry import Registry
from adapters.store import Base as AdapterTables
from gateway.adapter_service import AdapterService
from gateway.admin import api_router as admin_router
from gateway.admin.serving import AdminServing
from gateway.collections import api_router as collections_router
from gateway.collections.serving import CollectionsServing
from gateway.db import add_missing_columns, create_db_engine
from gateway.exceptions import GatewayError, InvalidRequest
from gateway.http import error_response, openai_error
from gateway.metrics import GatewayMetrics
from gateway.middleware import BearerAuthMiddleware, RequestContextMiddleware
from gateway.observers import AccessObserver, Observers
from gateway.openai import api_router as openai_router
from gateway.openai.serving import JsonOptions, OpenAIServing
from gateway.ops import api_router as ops_router
from gateway.routing import ModelRouter
from gateway.settings import Settings
from gateway.upstream.pool import UpstreamPool
from retrieval.collections import Collections
from retrieval.embedder import DIMENSION as EMBEDDING_DIMENSION
from retrieval.embedder import Embedder
from retrieval.store import Base as RetrievalTables

logger = logging.getLogger("tuneloop.gateway")


def create_app(settings: Settings) -> FastAPI:
    """A gateway app in front of ``settings.upstreams`` (which must not be empty)."""
    if not settings.upstreams:
        raise ValueError("create_app needs at least one upstream URL (TUNELOOP_UPSTREAMS)")
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything opened here is closed in reverse order, also when a later step fails.
        async with AsyncExitStack() as stack:
            await _start(app, settings, metrics, stack)
            logger.info(
                "event=gateway_started upstreams=%s ready=%d auth=%s",
                ",".join(settings.upstreams),
                sum(r.ready for r in app.state.pool.replicas),
                "on" if settings.api_keys else "off",
            )
            yield
        logger.info("event=gateway_stopped")

    app = FastAPI(
        title="tuneloop",
        summary="OpenAI-compatible gateway for vLLM with LoRA adapters and continuous evaluation",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    keys = tuple(key.get_secret_value().encode() for key in settings.api_keys)
    admin = (settings.admin_token.get_secret_value().encode(),) if settings.admin_token else ()
    app.add_middleware(BearerAuthMiddleware, keys=keys, prefix="/v1/")
    app.add_middleware(BearerAuthMiddleware, keys=admin, prefix="/admin/", closed_without_keys=True)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # outermost: ids on 401s too
    app.include_router(openai_router.router)
    app.include_router(admin_router.router)
    app.include_router(collections_router.admin_router)
    app.include_router(collections_router.search_router)
    app.include_router(ops_router.router)
    _install_error_handlers(app)
    return app


async def _start(
    app: FastAPI, settings: Settings, metrics: GatewayMetrics, stack: AsyncExitStack
) -> None:
    """Open every live object in order, registering its close on ``stack`` as it opens."""
    client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.upstream_max_connections),
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=settings.upstream_connect_timeout,
            sock_read=settings.upstream_read_timeout,
        ),
        auto_decompress=False,
    )
    stack.push_async_callback(client.close)
    pool = UpstreamPool(
        settings.upstreams,
        client,
        metrics=metrics,
        health_interval=settings.health_interval,
        health_timeout=settings.health_timeout,
    )
    await pool.start()
    stack.push_async_callback(pool.close)
    db = create_db_engine(settings.resolved_database_url)
    stack.callback(db.dispose)
    for metadata in (AdapterTables.metadata, RetrievalTables.metadata):
        if added := await asyncio.to_thread(add_missing_columns, db, metadata):
            logger.info("event=schema_upgraded columns=%s", ",".join(added))
    registry = await asyncio.to_thread(Registry, db)
    adapters = AdapterService(
        registry=registry,
        pool=pool,
        router=ModelRouter(),
        session=client,
        settings=settings,
        metrics=metrics,
    )
    await adapters.start()
    stack.push_async_callback(adapters.close)
    embedder = Embedder()  # one model in memory, shared by retrieval and the rubric checks
    collections = Collections(
        db, settings.data_dir / "indexes", embedder, dimension=EMBEDDING_DIMENSION
    )
    rebuilt = await asyncio.to_thread(collections.open_all)
    if rebuilt:
        logger.warning("event=indexes_rebuilt collections=%s", ",".join(rebuilt))
    app.state.collections = CollectionsServing(collections, metrics)
    await app.state.collections.refresh_sizes()
    app.state.pool = pool
    app.state.serving = OpenAIServing(
        pool,
        metrics,
        resolver=adapters,
        retriever=app.state.collections,
        json_options=JsonOptions(
            max_retries=settings.json_max_retries,
            max_schema_bytes=settings.json_max_schema_bytes,
        ),
        observers=Observers(AccessObserver(metrics, access_log=settings.access_log)),
    )
    app.state.admin = AdminServing(adapters)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as an OpenAI-shaped body."""

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(InvalidRequest(f"{where}: {first['msg']}", param=where or None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "internal_error"
        return openai_error(exc.status_code, str(exc.detail), type=kind)
