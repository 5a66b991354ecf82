"""The lifespan's subsystems: each helper builds one from the settings, starts it and pushes
its close onto the app's exit stack (``gateway.app._start`` calls them in order)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

from fastapi import FastAPI
from sqlalchemy import Engine

from adapters.cores import CorePartition, parse_cpus
from adapters.dataset_registry import DatasetRegistry
from adapters.executors import LocalExecutor, TrainExecutor
from adapters.gate import GateConfig
from adapters.jobs import JobStore
from adapters.ray_executor import RayExecutor, RayResources
from adapters.registry import Registry
from adapters.trainer_process import TrainerProcess
from eval.drift import DriftConfig
from eval.pii import Scrubber, ScrubberConfig
from eval.rubrics import Scorer
from eval.sampling import SamplingPolicy
from eval.store import EvalStore
from gateway.adapter_service import AdapterService
from gateway.admission import AdmissionGate
from gateway.engine import EmbeddedEngine
from gateway.evaluation.jobs import EvalJobs
from gateway.evaluation.judge import InternalJudge
from gateway.evaluation.service import EvalConfig, EvalService
from gateway.internal import internal_chat
from gateway.loop.service import LoopConfig, LoopParts, LoopService
from gateway.loop.shadow import ShadowMirror
from gateway.metrics import GatewayMetrics
from gateway.presence import Presence
from gateway.settings import Settings
from gateway.supervisor import EngineSupervisor, SupervisorConfig
from gateway.upstream.pool import UpstreamPool
from retrieval.embedder import Embedder

# max_tokens of a shadow request. Shadow answers are only scored, never returned to a client:
# a short cap bounds the engine time each mirrored request costs. Not a setting (yet).
SHADOW_MAX_TOKENS = 64


def admission_gate(settings: Settings, metrics: GatewayMetrics) -> AdmissionGate:
    """The admission gate in front of the upstreams, its rejections and queue on ``metrics``."""
    gate = AdmissionGate(
        max_in_flight=settings.max_in_flight,
        max_queue=settings.max_queue,
        queue_timeout=settings.queue_timeout,
        on_reject=lambda reason: metrics.admission_rejected.labels(reason).inc(),
    )
    metrics.admission_waiting.set_function(lambda: gate.waiting)
    return gate


async def start_supervisor(
    app: FastAPI,
    settings: Settings,
    metrics: GatewayMetrics,
    stack: AsyncExitStack,
    engine: EmbeddedEngine,
    on_engine_lost: Callable[[str], None] | None,
) -> None:
    """Watch the embedded engine; after a restart, check the pool at once (adapters reload)."""
    pool: UpstreamPool = app.state.pool
    supervisor = EngineSupervisor(
        engine,
        pool.client,
        metrics=metrics,
        on_ready=pool.check_all,
        on_give_up=on_engine_lost or (lambda reason: None),
        config=SupervisorConfig.from_settings(
            settings, check_interval=min(settings.health_interval, 5.0)
        ),
    )
    await supervisor.start()
    stack.push_async_callback(supervisor.close)
    app.state.supervisor = supervisor


async def start_eval(
    app: FastAPI,
    settings: Settings,
    metrics: GatewayMetrics,
    stack: AsyncExitStack,
    db: Engine,
    registry: Registry,
    embedder: Embedder,
) -> EvalService:
    """The evaluation service: store, scrubber, scorer (its judge goes through serving)."""
    store = await asyncio.to_thread(EvalStore, db)
    key = settings.pii_hmac_key
    scrubber = Scrubber(
        ScrubberConfig(
            phone_regions=tuple(settings.pii_phone_regions),
            hmac_key=key.get_secret_value().encode() if key else None,
        )
    )
    judge = InternalJudge(
        lambda: app.state.serving,
        default_model=lambda: settings.model_name,
        metrics=metrics,
        spend=lambda model, tokens: service.spend_judge_tokens(model, tokens),
    )
    service = EvalService(
        store=store,
        scrubber=scrubber,
        scorer=Scorer(embed=embedder.embed, judge=judge),
        metrics=metrics,
        config=EvalConfig(
            policy=SamplingPolicy(
                default_rate=settings.eval_sample_rate, rates=settings.eval_alias_rates
            ),
            drift=DriftConfig(
                baseline_samples=settings.eval_drift_baseline_samples,
                batch_size=settings.eval_drift_batch_size,
                k=settings.eval_drift_k,
                h=settings.eval_drift_h,
            ),
            queue_size=settings.eval_queue_size,
            max_samples_per_second=settings.eval_max_samples_per_second,
            judge_tokens_per_hour=settings.eval_judge_tokens_per_hour,
            default_judge_model=settings.model_name,
        ),
        record_event=registry.record,
    )
    await service.start()
    stack.push_async_callback(service.close)
    return service


def train_executor(settings: Settings, engine: EmbeddedEngine | None) -> TrainExecutor:
    """The executor ``TUNELOOP_TRAIN_EXECUTOR`` names: a Ray cluster's, or a local process (on
    the embedded engine's host, with the engine's and the trainer's cores split while a job
    trains, ``TUNELOOP_TRAIN_CPUS``)."""
    if settings.train_executor == "ray":
        assert settings.ray_address is not None  # the settings refuse ray without one
        memory = settings.ray_memory_mb * 1024**2 if settings.ray_memory_mb else None
        resources = RayResources(settings.ray_num_cpus, settings.ray_num_gpus, memory)
        return RayExecutor(settings.ray_address, resources=resources, nice=settings.train_nice)
    trainer = TrainerProcess(env={"TUNELOOP_MODEL_PATH": str(settings.base_model_path)})
    partition = None
    if engine is not None and settings.train_cpus != "off":
        cpus = None if settings.train_cpus == "auto" else parse_cpus(settings.train_cpus)
        partition = CorePartition(
            lambda: [engine.pid] if engine.pid is not None else [], trainer_cpus=cpus
        )
    return LocalExecutor(trainer, partition=partition, nice=settings.train_nice)


async def start_loop(
    app: FastAPI,
    settings: Settings,
    stack: AsyncExitStack,
    db: Engine,
    *,
    adapters: AdapterService,
    evaluation: EvalService,
    eval_jobs: EvalJobs,
    shadow: ShadowMirror,
    presence: Presence,
    engine: EmbeddedEngine | None = None,
) -> LoopService:
    """The retraining loop: job store, dataset registry, trainer process, gate, canary."""
    parts = LoopParts(
        jobs=await asyncio.to_thread(JobStore, db),
        datasets=await asyncio.to_thread(DatasetRegistry, db, settings.data_dir / "datasets"),
        executor=train_executor(settings, engine),
        adapters=adapters,
        evaluation=evaluation,
        eval_jobs=eval_jobs,
        shadow=shadow,
        serving=lambda: app.state.serving,
    )
    loop = LoopService(
        parts,
        config=LoopConfig(
            train_steps=settings.loop_train_steps,
            train_eval_every=settings.loop_train_eval_every,
            train_lr=settings.loop_train_lr,
            train_timeout=settings.loop_train_timeout,
            candidate_min_score=settings.loop_candidate_min_score,
            gate=GateConfig(
                margin=settings.loop_gate_margin,
                check_tolerance=settings.loop_gate_check_tolerance,
            ),
            shadow_share=settings.loop_shadow_share,
            canary_share=settings.loop_canary_share,
            canary_samples=settings.loop_canary_samples,
            canary_timeout=settings.loop_canary_timeout,
            retrain_on_drift=settings.loop_retrain_on_drift,
        ),
        work_dir=settings.data_dir,
        metrics=app.state.metrics,
        presence=presence,  # jobs owned by live processes survive this start
    )
    await loop.start()
    stack.push_async_callback(loop.close)
    return loop


async def mirror(
    app: FastAPI,
    settings: Settings,
    evaluation: EvalService,
    alias: str,
    challenger: str,
    messages: list[dict],
) -> float | None:
    """One shadow request: the challenger's answer, scored with the alias's rubric."""
    body = {
        "model": challenger,
        "messages": messages,
        "temperature": 0,
        "max_tokens": SHADOW_MAX_TOKENS,
    }
    answer = await internal_chat(app.state.serving, body, purpose="shadow")
    result = await evaluation.score_answer(
        alias, sample_id=f"shadow-{challenger}", messages=messages, answer=answer.text
    )
    return result.total if result is not None else None
