"""The loop: drift (or an operator, or the schedule) -> dataset -> challenger -> gate -> canary.

One retrain job per alias at a time (the job store enforces it in the database). Each step
writes an audit event and the job's state and timings; the trainer is a separate, niced
process with its own log. A challenger ships only when it beats the champion that serves now:
on the frozen test set (paired bootstrap), check by check, on mirrored live traffic, and then
as a canary on real traffic; otherwise it is recorded as rejected or rolled back, with the
numbers behind the decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.curation import Candidate
from adapters.dataset_registry import DatasetRegistry, DatasetVersion
from adapters.executors import TrainExecutor
from adapters.gate import GateConfig
from adapters.jobs import JobRecord, JobStore
from adapters.registry import RegistryError
from adapters.trainer_process import TrainRequest
from gateway.adapter_service import AdapterService
from gateway.evaluation.jobs import EvalJobs
from gateway.evaluation.service import EvalService
from gateway.exceptions import Conflict, InvalidRequest, NotFound, library_errors
from gateway.loop.canary import CanaryPlan, run_canary
from gateway.loop.candidates import from_confirmations, from_corrections, from_good_samples
from gateway.loop.gating import Gating
from gateway.loop.orphans import OrphanSweeper
from gateway.loop.progress import ProgressRecorder
from gateway.loop.shadow import ShadowMirror
from gateway.loop.tasks import JobTasks
from gateway.metrics import GatewayMetrics
from gateway.openai.serving import OpenAIServing
from gateway.presence import Presence

logger = logging.getLogger("tuneloop.loop")

Conversation = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class LoopConfig:
    train_steps: int = 8
    train_eval_every: int = 2
    train_lr: float = 1e-3
    train_timeout: float = 1800.0
    candidate_min_score: float = 0.9
    gate: GateConfig = field(default_factory=GateConfig)
    generate_max_tokens: int = 64
    shadow_share: float = 0.5
    canary_share: int = 20
    canary_samples: int = 10
    canary_timeout: float = 600.0
    canary_tolerance: float = 0.02
    retrain_on_drift: bool = True


@dataclass(frozen=True, slots=True)
class LoopParts:
    """The loop's collaborators, built by the app's lifespan (``gateway.lifespan.start_loop``)."""

    jobs: JobStore
    datasets: DatasetRegistry
    executor: TrainExecutor
    adapters: AdapterService
    evaluation: EvalService
    eval_jobs: EvalJobs
    shadow: ShadowMirror
    serving: Callable[[], OpenAIServing]


@dataclass(frozen=True, slots=True)
class RetrainOptions:
    """Per-job overrides (an operator's `POST /admin/retrain`)."""

    max_steps: int | None = None
    lr: float | None = None


class LoopService:
    def __init__(
        self,
        parts: LoopParts,
        *,
        config: LoopConfig,
        work_dir: Path,
        metrics: GatewayMetrics,
        presence: Presence | None = None,
    ) -> None:
        """``presence``: this process among the live gateway processes. Jobs are created with
        its id as their owner, and at start only jobs whose owner is no longer live are failed;
        without it every active job is failed at start (one process on the database)."""
        self.jobs = parts.jobs
        self.datasets = parts.datasets
        self._executor = parts.executor
        self._adapters = parts.adapters
        self._eval = parts.evaluation
        self._eval_jobs = parts.eval_jobs
        self._shadow = parts.shadow
        self._serving = parts.serving
        self.config = config
        self._work = work_dir
        self._metrics = metrics
        self._presence = presence
        self._tasks = JobTasks(parts.jobs)
        self._gating = Gating(
            parts.datasets, parts.evaluation, parts.shadow, parts.serving, config=config
        )
        self._orphans = OrphanSweeper(parts.jobs, presence)

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Fail the orphaned jobs (their owner process is gone), then sweep for them once per
        liveness window (``gateway.loop.orphans``)."""
        await self._orphans.start()

    async def close(self) -> None:
        await self._orphans.close()
        await self._tasks.close()
        await self._shadow.close()

    # --- starting a job ------------------------------------------------------------------------
    async def retrain(
        self, alias: str, *, trigger: str, options: RetrainOptions | None = None
    ) -> JobRecord:
        """Queue a retrain of ``alias`` (409 while one is active) and start it in the background."""
        if await asyncio.to_thread(self.datasets.latest, alias) is None:
            raise InvalidRequest(
                f"no dataset is imported for '{alias}': tuneloop datasets import {alias} FILE",
                param="alias",
            )
        self._champion(alias)  # 400 when the alias is not on exactly one version
        with library_errors():  # JobConflict -> 409 (param alias), caught by retrain_all too
            job = await asyncio.to_thread(
                self.jobs.create, alias, trigger=trigger, owner=self._owner
            )
        await self._event("loop_job_queued", alias, job=job.id, trigger=trigger)
        self._metrics.child(self._metrics.loop_jobs, alias, "queued").inc()
        self._tasks.start(job.id, self._run(job, options or RetrainOptions()))
        return job

    async def retrain_all(self) -> None:
        """The schedule: retrain every alias that has a dataset and no job running."""
        aliases = {v.alias for v in await asyncio.to_thread(self.datasets.versions)}
        for alias in sorted(aliases):
            try:
                await self.retrain(alias, trigger="schedule")
            except (Conflict, InvalidRequest, NotFound) as exc:
                logger.info("event=retrain_skipped alias=%s reason=%r", alias, exc.message)

    @property
    def _owner(self) -> str | None:
        return self._presence.process_id if self._presence is not None else None

    def scrub(self, text: str) -> str:
        """The eval scrubber: imported and production examples are scrubbed alike."""
        return self._eval.scrub(text)

    async def on_drift(self, alias: str) -> None:
        """The drift check's hook: retrain when the alias can be retrained."""
        if not self.config.retrain_on_drift:
            return
        try:
            await self.retrain(alias, trigger="drift")
        except (Conflict, InvalidRequest) as exc:
            logger.info("event=retrain_skipped alias=%s reason=%r", alias, exc.message)

    async def wait(self, job_id: int) -> None:
        """Until the job's background task is done (tests, the CLI's --wait)."""
        await self._tasks.wait(job_id)

    # --- the pipeline --------------------------------------------------------------------------
    def _champion(self, alias: str) -> str:
        targets = self._adapters.alias_targets(alias)
        if targets is None:
            raise NotFound(f"alias '{alias}' does not exist", param="alias")
        if len(targets) != 1:
            raise InvalidRequest(
                f"alias '{alias}' is split over {sorted(targets)}: finish that canary first",
                param="alias",
            )
        return next(iter(targets))

    async def _event(self, kind: str, alias: str, **detail: Any) -> None:
        """An audit event (off the event loop) and its log line."""
        await asyncio.to_thread(self._adapters.registry.record, kind, alias, **detail)
        logger.info(
            "event=%s alias=%s %s", kind, alias, " ".join(f"{k}={v}" for k, v in detail.items())
        )

    async def _run(self, job: JobRecord, options: RetrainOptions) -> None:
        alias, timings = job.alias, {}
        challenger: str | None = None
        try:
            champion = self._champion(alias)
            started = time.perf_counter()
            dataset = await self._dataset(job)
            timings["dataset"] = time.perf_counter() - started
            await self._transition(job, "running", dataset_hash=dataset.hash, detail=timings)

            started = time.perf_counter()
            challenger = await self._train(job, dataset, champion, options, timings)
            timings["training"] = time.perf_counter() - started
            await self._transition(job, "succeeded", served_name=challenger, detail=timings)

            await self._transition(job, "gating")
            started = time.perf_counter()
            verdict = await self._gating.run(alias, champion, challenger)
            timings["gate"] = time.perf_counter() - started
            await self._event("loop_gate", alias, job=job.id, promote=verdict.promote,
                        reason=verdict.reason)  # fmt: skip
            if not verdict.promote:
                await self._transition(
                    job, "rejected", verdict=verdict.model_dump(), detail=timings
                )
                await self._retire(job, challenger)
                return
            await self._transition(job, "canary", verdict=verdict.model_dump(), detail=timings)

            started = time.perf_counter()
            kept, numbers = await self._canary(job, champion, challenger)
            timings["canary"] = time.perf_counter() - started
            state = "promoted" if kept else "rolled_back"
            await self._transition(job, state, detail={**timings, "canary_numbers": numbers})
            if not kept:
                await self._retire(job, challenger)
        except asyncio.CancelledError:
            if not self._tasks.cancelled_for_the_job(job.id):  # the gateway is stopping
                await self._fail(job, "the gateway stopped during the job", timings)
                raise
            asyncio.current_task().uncancel()  # an operator's cancel: the job ends here
            logger.info("event=loop_job_cancelled job=%d alias=%s", job.id, alias)
            await self._retire(job, challenger)
        except Exception as exc:  # recorded on the job and logged; the champion keeps serving
            if self._tasks.cancelled_for_the_job(job.id):  # its write met the cancelled record
                logger.info("event=loop_job_cancelled job=%d alias=%s", job.id, alias)
            else:
                logger.exception("event=loop_job_failed job=%d alias=%s", job.id, alias)
                await self._fail(job, f"{type(exc).__name__}: {exc}", timings)
            await self._retire(job, challenger)

    # --- cancelling ----------------------------------------------------------------------------
    async def cancel(self, job_id: int) -> JobRecord:
        """Cancel an active job (409 ``job_finished`` when its work is over): it is marked
        ``cancelled`` at once, which frees the alias, and the process carrying it (this one, or
        another gateway on the database within ``CANCEL_POLL_S``) stops its trainer, gate or
        canary; a canary's alias goes back to the champion."""
        with library_errors():
            current = await asyncio.to_thread(self.jobs.get, job_id)
            if not current.active:
                raise Conflict(
                    f"retrain job {job_id} is {current.state}: only an active job can be "
                    "cancelled", code="job_finished", param="job_id",
                )  # fmt: skip
            with self._tasks.cancelling(job_id):
                job = await asyncio.to_thread(
                    self.jobs.transition, job_id, "cancelled", error="cancelled by an operator"
                )
        self._metrics.child(self._metrics.loop_jobs, job.alias, "cancelled").inc()
        await self._event("loop_job_cancelled", job.alias, job=job.id, was=current.state)
        return job

    async def _retire(self, job: JobRecord, challenger: str | None) -> None:
        """A challenger that lost (rejected, rolled back) or whose job ended early is retired as
        ``rejected``: listed, never routable, unloaded from the replicas; its folder stays on
        disk, and the job still names it."""
        if challenger is None:
            return
        try:
            await self._adapters.delete(challenger, status="rejected")
        except RegistryError as exc:  # an operator aliased it meanwhile: theirs to keep
            logger.warning("event=challenger_kept job=%d served_name=%s reason=%r", job.id,
                           challenger, str(exc))  # fmt: skip
            return
        await self._event("loop_challenger_retired", job.alias, job=job.id, served_name=challenger)

    async def _transition(self, job: JobRecord, state: str, **fields: Any) -> None:
        await asyncio.to_thread(self.jobs.transition, job.id, state, **fields)
        self._metrics.child(self._metrics.loop_jobs, job.alias, state).inc()
        said = {key: fields[key] for key in ("error", "served_name") if fields.get(key)}
        await self._event(f"loop_job_{state}", job.alias, job=job.id, **said)

    async def _fail(self, job: JobRecord, error: str, timings: dict) -> None:
        current = await asyncio.to_thread(self.jobs.get, job.id)
        if current.active:
            await self._transition(job, "failed", error=error, detail=timings)

    async def _dataset(self, job: JobRecord) -> DatasetVersion:
        """The alias's latest dataset plus corrections and well-scored answers from production."""
        alias, store = job.alias, self._eval.store
        latest = await asyncio.to_thread(self.datasets.latest, alias)
        if latest is None:  # checked when the job was queued; an operator may have raced it
            raise InvalidRequest(f"no dataset is imported for '{alias}'", param="alias")
        candidates = await asyncio.to_thread(self.datasets.candidates_of, alias, latest.version)
        corrections = from_corrections(await asyncio.to_thread(store.corrections, alias))
        confirmed = from_confirmations(await asyncio.to_thread(
            store.confirmations, alias, min_score=self.config.candidate_min_score))  # fmt: skip
        samples: list[Candidate] = []
        active = self._eval.active_rubrics().get(alias)
        if active is not None:
            rows = await asyncio.to_thread(
                store.good_samples, alias, epoch=active.record.epoch,
                min_score=self.config.candidate_min_score,
            )  # fmt: skip
            samples = from_good_samples(rows)  # only those a content check vouched for
        new = [*corrections, *confirmed, *samples]
        # Corrections first among the new ones: on a contradiction a human correction wins.
        version, removals = await asyncio.to_thread(
            self.datasets.import_examples, alias, [*candidates, *new],
            parents=[latest.hash], scrub=self._eval.scrub,
        )  # fmt: skip
        await self._event("loop_dataset", alias, job=job.id, version=version.version,
                    hash=version.hash, added=len(new), from_corrections=len(corrections),
                    from_confirmations=len(confirmed), from_samples=len(samples),
                    removed=len(removals),
                    counts=version.counts)  # fmt: skip
        return version

    async def _train(
        self,
        job: JobRecord,
        dataset: DatasetVersion,
        champion: str,
        options: RetrainOptions,
        timings: dict[str, Any],
    ) -> str:
        """Train by the executor, then register and load the challenger. The trainer's step
        lines become the job's ``detail.progress`` and the alias's step and loss gauges."""
        root = self._adapters.adapter_root
        root.mkdir(parents=True, exist_ok=True)
        out = root / f"{job.alias}-job{job.id}-{time.strftime('%Y%m%d%H%M%S')}"
        log_path = self._work / "jobs" / f"job-{job.id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.jobs.update, job.id, log_path=str(log_path))
        lr = options.lr if options.lr is not None else self.config.train_lr
        progress = ProgressRecorder(
            self.jobs, self._metrics, job_id=job.id, alias=job.alias, timings=timings
        )
        try:
            await self._executor.train(
                TrainRequest(
                    data=Path(dataset.path),
                    out=out,
                    max_steps=options.max_steps or self.config.train_steps,
                    eval_every=self.config.train_eval_every,
                    seed=job.id,
                    extra_args=("--lr", str(lr)),
                ),
                log_path=log_path,
                timeout=self.config.train_timeout,
                on_line=progress.on_line,
            )
        finally:
            await progress.close()
        await asyncio.to_thread(self.jobs.update, job.id, adapter_path=str(out))
        name = champion.split("@", 1)[0]
        record = await self._adapters.register(name, out.name)
        return record.served_name

    async def _canary(
        self, job: JobRecord, champion: str, challenger: str
    ) -> tuple[bool, dict[str, Any]]:
        """A share of live traffic on the challenger; 100% when its live score holds."""
        alias, config = job.alias, self.config
        plan = CanaryPlan(
            alias=alias, champion=champion, challenger=challenger,
            epoch=self._eval.active_rubrics()[alias].record.epoch, share=config.canary_share,
            samples=config.canary_samples, timeout=config.canary_timeout,
            tolerance=config.canary_tolerance,
        )  # fmt: skip
        await self._event("loop_canary_started", alias, champion=champion, challenger=challenger,
                    share=plan.share)  # fmt: skip

        async def on_count(samples: int) -> None:  # the job shows how far its canary has come
            canary = {"samples": samples, "needed": plan.samples, "share": plan.share}
            await asyncio.to_thread(self.jobs.update, job.id, detail={"canary_progress": canary})

        holds, numbers = await run_canary(
            plan, store=self._eval.store, retarget=self._adapters.retarget, on_count=on_count
        )
        if holds:
            await self._eval_jobs.restart_baseline(alias, reason="promoted")
            await self._event("loop_promoted", alias, challenger=challenger, **numbers)
        else:
            await self._event("loop_rolled_back", alias, challenger=challenger, **numbers)
        return holds, numbers
