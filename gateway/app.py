"""The composition root: builds the FastAPI app and owns every live object through its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.registry import Registry
from gateway.adapter_service import AdapterService
from gateway.admin import api_router as admin_router
from gateway.admin.serving import AdminServing
from gateway.admission import InternalLane, RequestLimits
from gateway.collections import api_router as collections_router
from gateway.collections.serving import CollectionsServing
from gateway.dashboard import DashboardPages
from gateway.dashboard import api_router as dashboard_router
from gateway.db import create_db_engine, upgrade
from gateway.engine import EmbeddedEngine
from gateway.evaluation import api_router as eval_router
from gateway.evaluation.jobs import EvalJobs
from gateway.evaluation.scheduler import LeasedScheduler
from gateway.evaluation.serving import EvalServing
from gateway.exceptions import GatewayError, InvalidRequest, LibraryError, from_library
from gateway.http import error_response, openai_error
from gateway.keys import api_router as keys_router
from gateway.keys.serving import KeyService
from gateway.keys.store import KeyStore
from gateway.lifespan import admission_gate, mirror, start_eval, start_loop, start_supervisor
from gateway.loop import api_router as loop_router
from gateway.loop.shadow import ShadowMirror
from gateway.metrics import GatewayMetrics
from gateway.middleware import BearerAuthMiddleware, RequestContextMiddleware
from gateway.observers import AccessObserver, Observers
from gateway.openai import api_router as openai_router
from gateway.openai.serving import JsonOptions, OpenAIServing
from gateway.ops import api_router as ops_router
from gateway.presence import Presence, ProcessTable
from gateway.routing import ModelRouter
from gateway.settings import Settings
from gateway.traffic import TrafficWindow
from gateway.upstream.pool import UpstreamPool
from retrieval.collections import Collections
from retrieval.embedder import DIMENSION as EMBEDDING_DIMENSION
from retrieval.embedder import Embedder

logger = logging.getLogger("tuneloop.gateway")
UPSTREAM_KEEPALIVE_S = 4.0  # below vLLM's 5 s keep-alive (see _start)


def create_app(
    settings: Settings,
    *,
    engine: EmbeddedEngine | None = None,
    on_engine_lost: Callable[[str], None] | None = None,
) -> FastAPI:
    """A gateway app in front of ``settings.upstreams`` (which must not be empty).

    With ``engine`` (the embedded vLLM child, already running at one of the upstreams) the app
    supervises it: restarts it when it exits or hangs and, when restarts are exhausted, calls
    ``on_engine_lost`` with the reason (``tuneloop serve`` then exits non-zero).
    """
    if not settings.upstreams:
        raise ValueError("create_app needs at least one upstream URL (TUNELOOP_UPSTREAMS)")
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything opened here is closed in reverse order, also when a later step fails.
        async with AsyncExitStack() as stack:
            await _start(app, settings, metrics, stack, engine)
            if engine is not None:
                await start_supervisor(app, settings, metrics, stack, engine, on_engine_lost)
            logger.info(
                "event=gateway_started upstreams=%s ready=%d auth=%s",
                ",".join(settings.upstreams),
                sum(r.ready for r in app.state.pool.replicas),
                "on" if settings.api_keys or app.state.keys.active else "off",
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
    app.state.dashboard = DashboardPages()
    keys = tuple(key.get_secret_value().encode() for key in settings.api_keys)
    admin = (settings.admin_token.get_secret_value().encode(),) if settings.admin_token else ()
    app.add_middleware(
        BearerAuthMiddleware,
        keys=keys,
        prefix="/v1/",
        managed=lambda: getattr(app.state, "keys", None),  # opened by the lifespan
    )
    app.add_middleware(BearerAuthMiddleware, keys=admin, prefix="/admin/", closed_without_keys=True)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # outermost: ids on 401s too
    app.include_router(openai_router.router)
    app.include_router(admin_router.router)
    app.include_router(collections_router.admin_router)
    app.include_router(collections_router.search_router)
    app.include_router(ops_router.router)
    app.include_router(keys_router.router)
    app.include_router(eval_router.admin_router)
    app.include_router(eval_router.feedback_router)
    app.include_router(dashboard_router.router)
    app.include_router(loop_router.router)
    _install_error_handlers(app)
    return app


async def _start(
    app: FastAPI,
    settings: Settings,
    metrics: GatewayMetrics,
    stack: AsyncExitStack,
    engine: EmbeddedEngine | None = None,
) -> None:
    """Open every live object in order, registering its close on ``stack`` as it opens."""
    client = aiohttp.ClientSession(
        # Idle connections are dropped before vLLM's server drops them (its keep-alive is
        # VLLM_HTTP_TIMEOUT_KEEP_ALIVE, 5 s): reusing one it is closing resets the request.
        connector=aiohttp.TCPConnector(
            limit=settings.upstream_max_connections, keepalive_timeout=UPSTREAM_KEEPALIVE_S
        ),
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
        max_in_flight_per_replica=settings.max_in_flight_per_replica,
        capacity_wait=settings.queue_timeout,
        policy=settings.routing,
    )
    await pool.start()
    stack.push_async_callback(pool.close)
    db = create_db_engine(settings.resolved_database_url)
    stack.callback(db.dispose)
    schema = await asyncio.to_thread(upgrade, db)  # Alembic, under a lock (gateway.db)
    if schema.changed:
        logger.info(
            "event=schema_upgraded from=%s to=%s stamped=%s columns=%s", schema.before,
            schema.after, schema.stamped, ",".join(schema.added_columns) or "-",
        )  # fmt: skip
    # This process among the live ones on the database (its heartbeat: the registry poll's
    # interval). Its snapshot (applied registry event, requests in flight) is set later.
    presence = Presence(
        await asyncio.to_thread(ProcessTable, db), interval=settings.registry_poll_interval
    )
    await presence.start()
    stack.push_async_callback(presence.close)
    app.state.presence = presence
    app.state.keys = KeyService(
        await asyncio.to_thread(KeyStore, db), metrics, sync_interval=settings.key_sync_interval
    )
    await app.state.keys.start()
    stack.push_async_callback(app.state.keys.close)
    registry = await asyncio.to_thread(Registry, db)
    adapters = AdapterService(
        registry=registry,
        pool=pool,
        router=ModelRouter(),
        session=client,
        settings=settings,
        metrics=metrics,
        presence=presence,
    )
    await adapters.start()
    stack.push_async_callback(adapters.close)
    adapters.watch(settings.registry_poll_interval)  # other processes on this database
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
    evaluation = await start_eval(app, settings, metrics, stack, db, registry, embedder)
    traffic = TrafficWindow()
    shadow = ShadowMirror(
        lambda alias, challenger, messages: mirror(app, settings, evaluation, alias, challenger,
                                                   messages),
        count=lambda alias, result: metrics.child(metrics.shadow_requests, alias, result).inc(),
    )  # fmt: skip
    gate = admission_gate(settings, metrics)
    app.state.serving = OpenAIServing(
        pool,
        metrics,
        resolver=adapters,
        retriever=app.state.collections,
        json_options=JsonOptions(
            max_retries=settings.json_max_retries,
            max_schema_bytes=settings.json_max_schema_bytes,
        ),
        observers=Observers(
            AccessObserver(metrics, access_log=settings.access_log),
            traffic,
            evaluation,
            shadow,
            app.state.keys,
        ),
        sample=evaluation.decide,
        limits=RequestLimits(
            max_n=settings.max_n,
            default_max_tokens=settings.default_max_tokens,
            max_tokens=settings.max_tokens_limit,
            max_messages=settings.max_messages,
            max_stop=settings.max_stop_sequences,
        ),
        gate=gate,
        internal=InternalLane(
            max_in_flight=settings.internal_max_in_flight,
            priority=settings.internal_priority_value(embedded=False),
            clients_queued=gate.wait_unqueued,
        ),
    )
    jobs = EvalJobs(
        evaluation, reports_dir=settings.reports_dir, retention_days=settings.eval_retention_days
    )
    app.state.eval = EvalServing(
        evaluation,
        jobs,
        traffic,
        lambda limit: registry.events(limit=limit),
        reports_dir=settings.reports_dir,
    )
    app.state.loop = await start_loop(
        app, settings, stack, db, adapters=adapters, evaluation=evaluation, eval_jobs=jobs,
        shadow=shadow, presence=presence, engine=engine,
    )  # fmt: skip
    jobs.on_drift = app.state.loop.on_drift
    app.state.eval.retrain_jobs = lambda limit: app.state.loop.jobs.jobs(limit=limit)
    scheduler = LeasedScheduler(evaluation.store)
    scheduler.add("eval_drift_check", jobs.drift_check, every=settings.eval_drift_interval)
    scheduler.add("eval_retention", jobs.retention, every=3600)
    scheduler.add("eval_report", app.state.eval.write_report, hour=settings.eval_report_hour)
    if settings.loop_retrain_every_hours:
        scheduler.add(
            "loop_retrain",
            app.state.loop.retrain_all,
            every=settings.loop_retrain_every_hours * 3600,
        )
    scheduler.start()
    stack.callback(scheduler.shutdown)
    app.state.admin = AdminServing(adapters)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as an OpenAI-shaped body."""

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    async def library_error(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(from_library(exc))

    for library_cls in LibraryError:  # adapters, retrieval, eval: one table in exceptions.py
        app.add_exception_handler(library_cls, library_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(InvalidRequest(f"{where}: {first['msg']}", param=where or None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "internal_error"
        return openai_error(exc.status_code, str(exc.detail), type=kind)
