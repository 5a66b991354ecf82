"""Continuous evaluation wired into the gateway: decide, queue, scrub, score, store.

The request path only decides (a hash against a rate) and, for a sampled request that ended
well, puts one item on a bounded queue (never waiting: a full queue drops and counts). One
consumer task takes items off the queue; scrubbing, scoring and the database write run in
worker threads, the judge call through the gateway's own internal completion path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eval.drift import DriftConfig
from eval.pii import Scrubber
from eval.rubrics import (
    Rubric,
    ScoreInput,
    Scorer,
    ScoreResult,
    evaluator_epoch,
    parse_rubric,
)
from eval.sampling import SamplingPolicy
from eval.store import EvalStore
from gateway.context import RequestContext
from gateway.evaluation.budget import HourlyBudget
from gateway.evaluation.protocol import FeedbackRecord, FeedbackRequest, RubricRecord
from gateway.exceptions import NotFound, library_errors
from gateway.metrics import GatewayMetrics
from gateway.observers import Capture, FinishedRequest

logger = logging.getLogger("tuneloop.eval")

RecordEvent = Callable[..., None]  # (kind, subject, **detail): the registry's audit log


@dataclass(frozen=True, slots=True)
class EvalConfig:
    policy: SamplingPolicy
    drift: DriftConfig
    queue_size: int = 1000
    max_samples_per_second: float = 20.0  # the consumer's pace: its CPU stays bounded
    judge_tokens_per_hour: int = 20000
    recent_ids: int = 100_000  # request ids remembered for feedback's 404 decision
    default_judge_model: str | None = None  # for llm_judge checks that name no model


@dataclass(frozen=True, slots=True)
class _Item:
    """A sampled request, raw, waiting for the consumer."""

    request_id: str
    at: datetime
    endpoint: str
    status: int
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    capture: Capture


@dataclass(frozen=True, slots=True)
class ActiveRubric:
    rubric: Rubric
    record: RubricRecord


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A sample scrubbed and through its synchronous checks, waiting for the judge and the
    database."""

    item: _Item
    request: dict[str, Any]
    answer: str
    active: ActiveRubric | None
    scored: ScoreInput | None
    outcomes: dict[str, Any]


BATCH_SIZE = 64  # samples scrubbed, scored and stored per worker-thread hop and transaction
MAX_STORED_CHARS = 32768  # per string: bounds scrubbing time and the store's growth


def _clip(value: Any) -> Any:
    """Long strings cut to ``MAX_STORED_CHARS`` (marked), inside dicts and lists too."""
    if isinstance(value, str):
        if len(value) <= MAX_STORED_CHARS:
            return value
        return value[:MAX_STORED_CHARS] + " …[truncated]"
    if isinstance(value, dict):
        return {key: _clip(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clip(item) for item in value]
    return value


def _question(request: Mapping[str, Any]) -> str:
    """The last user message's text, or the prompt."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    prompt = request.get("prompt")
    return prompt if isinstance(prompt, str) else str(prompt or "")


class EvalService:
    def __init__(
        self,
        *,
        store: EvalStore,
        scrubber: Scrubber,
        scorer: Scorer,
        metrics: GatewayMetrics,
        config: EvalConfig,
        record_event: RecordEvent,
    ) -> None:
        self.store = store
        self.config = config
        self.record_event = record_event
        self._scrubber = scrubber
        self._scorer = scorer
        self.metrics = self._metrics = metrics
        self._m = metrics.eval
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=config.queue_size)
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._rubrics: dict[str, ActiveRubric] = {}
        self._budget = HourlyBudget(config.judge_tokens_per_hour)
        self._consumer: asyncio.Task[None] | None = None
        self._dropped_full = self._m.dropped.labels("queue_full")
        self.decisions: dict[str, int] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        for record in await asyncio.to_thread(self.store.rubrics):
            rubric = parse_rubric(record["rubric"])
            self._rubrics[record["alias"]] = ActiveRubric(rubric, RubricRecord(**record))
        self._consumer = asyncio.create_task(self._consume(), name="eval-consumer")

    async def close(self, *, drain_seconds: float = 5.0) -> None:
        """Finish what is queued (within ``drain_seconds``), then stop the consumer."""
        if self._consumer is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout=drain_seconds)
        except TimeoutError:
            left = self._queue.qsize()
            self._m.dropped.labels("shutdown").inc(left)
            logger.warning("event=eval_drain_timeout dropped=%d", left)
        self._consumer.cancel()
        await asyncio.gather(self._consumer, return_exceptions=True)

    # --- the request path ----------------------------------------------------------------------
    def _count(self, alias: str, version: str, decision: str) -> None:
        self._metrics.child(self._m.samples, alias, version, decision).inc()
        self.decisions[decision] = self.decisions.get(decision, 0) + 1

    def decide(self, ctx: RequestContext) -> bool:
        """Sample this request? Called right after routing; also remembers the id (and what
        answered it) for feedback. A full queue is a "no" here, before anything is captured."""
        self._recent[ctx.request_id] = (ctx.model, ctx.version)
        if len(self._recent) > self.config.recent_ids:
            self._recent.popitem(last=False)
        if not self.config.policy.decide(ctx.model, ctx.request_id):
            self._count(ctx.model, ctx.version, "not_sampled")
            return False
        if self._queue.full():
            self._drop(ctx.model, ctx.version)
            return False
        return True

    def _drop(self, alias: str, version: str) -> None:
        self._count(alias, version, "queue_full")
        self._dropped_full.inc()

    def __call__(self, done: FinishedRequest) -> None:
        """Observer: queue a sampled request that was answered, without waiting."""
        capture, ctx = done.capture, done.ctx
        if capture is None:
            return
        if ctx.status != 200:
            self._count(capture.alias, ctx.version, "not_sampled")
            return
        capture.version = ctx.version
        item = _Item(
            request_id=ctx.request_id,
            at=datetime.now(UTC),
            endpoint=done.endpoint,
            status=ctx.status,
            latency_ms=ctx.elapsed() * 1000,
            prompt_tokens=ctx.prompt_tokens,
            completion_tokens=ctx.completion_tokens,
            capture=capture,
        )
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:  # filled while the request ran
            self._drop(capture.alias, ctx.version)
            return
        self._count(capture.alias, ctx.version, "sampled")
        self._m.queue_depth.set(self._queue.qsize())

    # --- the consumer --------------------------------------------------------------------------
    async def _consume(self) -> None:
        """Take what is queued in batches: one worker-thread hop to scrub and run the
        synchronous checks of a whole batch, one transaction to store it."""
        while True:
            items = [await self._queue.get()]
            while len(items) < BATCH_SIZE and not self._queue.empty():
                items.append(self._queue.get_nowait())
            started = time.perf_counter()
            try:
                await self._process(items)
            except Exception:  # a bad batch must not stop evaluation; it is counted
                self._m.dropped.labels("error").inc(len(items))
                logger.exception(
                    "event=eval_batch_failed samples=%d first_request_id=%s",
                    len(items),
                    items[0].request_id,
                )
            finally:
                for _ in items:
                    self._queue.task_done()
                self._m.queue_depth.set(self._queue.qsize())
            # Pace: evaluation shares the gateway's cores; past this rate the queue fills and
            # new samples are dropped and counted rather than slowing every request.
            pause = len(items) / self.config.max_samples_per_second
            await asyncio.sleep(max(0.0, pause - (time.perf_counter() - started)))

    def _prepare(self, item: _Item) -> _Prepared:
        """Scrub one sample and run its rubric's synchronous checks (in a worker thread)."""
        capture = item.capture
        raw = _clip([capture.request, capture.answer, [c["text"] for c in capture.retrieved]])
        request, answer, chunks = self._scrubber.scrub_value(raw)
        active = self._rubrics.get(capture.alias)
        scored = None
        if active is not None:
            scored = ScoreInput(
                sample_id=item.request_id,
                question=_question(request),
                messages=request.get("messages"),
                answer=answer,
                context=list(chunks),
            )
            outcomes = self._scorer.evaluate_sync(active.rubric, scored)
            return _Prepared(item, request, answer, active, scored, outcomes)
        return _Prepared(item, request, answer, None, scored, {})

    async def _process(self, items: list[_Item]) -> None:
        prepared = await asyncio.to_thread(lambda: [self._prepare(item) for item in items])
        batch = []
        for ready in prepared:
            item, capture, score = ready.item, ready.item.capture, None
            if ready.active is not None and ready.scored is not None:
                allow_judge = self._budget.available()
                if not allow_judge and any(
                    c.type == "llm_judge" for c in ready.active.rubric.checks
                ):
                    self._count(capture.alias, capture.version, "judge_budget")
                result = await self._scorer.finish(
                    ready.active.rubric, ready.scored, ready.outcomes,
                    epoch=ready.active.record.epoch, allow_judge=allow_judge,
                )  # fmt: skip
                score = {
                    "epoch": result.epoch,
                    "total": result.total,
                    "checks": [check.model_dump() for check in result.checks],
                }
                self._observe(capture, result.total, score["checks"])
            sample = {
                "request_id": item.request_id,
                "at": item.at,
                "alias": capture.alias,
                "version": capture.version,
                "endpoint": item.endpoint,
                "request": ready.request,
                "response": ready.answer,
                "retrieved": [str(c["id"]) for c in capture.retrieved],
                "status": item.status,
                "latency_ms": item.latency_ms,
                "prompt_tokens": item.prompt_tokens,
                "completion_tokens": item.completion_tokens,
            }
            batch.append((sample, score))
        await asyncio.to_thread(self.store.add_samples, batch)

    def _observe(self, capture: Capture, total: float | None, checks: list[dict]) -> None:
        if total is not None:
            self._metrics.child(self._m.score, capture.alias, capture.version).observe(total)
        for check in checks:
            if check.get("passed") is False:
                self._metrics.child(
                    self._m.check_failures, capture.alias, capture.version, check["name"]
                ).inc()

    def scrub(self, text: str) -> str:
        return self._scrubber.scrub(text)

    async def score_answer(
        self,
        alias: str,
        *,
        sample_id: str,
        messages: list[dict[str, Any]],
        answer: str,
        reference: str | None = None,
    ) -> ScoreResult | None:
        """Score an answer that is not a live sample (the gate, a shadow) with the alias's
        rubric; ``None`` when the alias has none."""
        active = self._rubrics.get(alias)
        if active is None:
            return None
        item = ScoreInput(
            sample_id=sample_id,
            question=_question({"messages": messages}),
            messages=messages,
            answer=answer,
            context=[],
            reference=reference,
        )
        return await self._scorer.score(
            active.rubric, item, epoch=active.record.epoch, allow_judge=self._budget.available()
        )

    def spend_judge_tokens(self, alias: str, tokens: int) -> None:
        self._budget.spend(tokens)
        self._metrics.child(self._m.judge_tokens, alias).inc(tokens)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # --- rubrics -------------------------------------------------------------------------------
    async def put_rubric(self, alias: str, source: str | Mapping[str, Any]) -> RubricRecord:
        with library_errors():  # RubricError -> 400 invalid_rubric, param = the culprit's path
            rubric = parse_rubric(source)
        epoch = evaluator_epoch(rubric, judge_model=self.config.default_judge_model)
        record = RubricRecord(
            **await asyncio.to_thread(self.store.put_rubric, alias, rubric.as_dict(), epoch)
        )
        previous = self._rubrics.get(alias)
        self._rubrics[alias] = ActiveRubric(rubric, record)
        changed = previous is None or previous.record.epoch != epoch
        await asyncio.to_thread(
            self.record_event, "rubric_set", alias, version=record.version, epoch=epoch,
            new_epoch=changed,
        )  # fmt: skip
        logger.info("event=rubric_set alias=%s version=%d epoch=%s", alias, record.version, epoch)
        return record

    def rubric(self, alias: str) -> RubricRecord:
        active = self._rubrics.get(alias)
        if active is None:
            raise NotFound(f"no rubric is set for '{alias}'", param="alias")
        return active.record

    def active_rubrics(self) -> dict[str, ActiveRubric]:
        return dict(self._rubrics)

    # --- feedback ------------------------------------------------------------------------------
    async def feedback(self, body: FeedbackRequest) -> FeedbackRecord:
        """Store scrubbed feedback beside its sample; 404 only for an id never seen."""
        known = self._recent.get(body.request_id)
        if known is None and (
            await asyncio.to_thread(self.store.sampled_request, body.request_id) is None
        ):
            raise NotFound(f"no request with id '{body.request_id}' is known", param="request_id")
        fields = body.model_dump(exclude={"request_id"})
        fields = await asyncio.to_thread(self._scrubber.scrub_value, fields)
        if known is not None:
            fields["alias"], fields["version"] = known[0], known[1] or None
        stored = await asyncio.to_thread(self.store.add_feedback, body.request_id, **fields)
        alias = stored["alias"] or "_unknown"
        for kind in ("score", "label", "correction", "comment"):
            if getattr(body, kind) is not None:
                self._metrics.child(self._m.feedback, alias, kind).inc()
        if not stored["sampled"]:
            self._metrics.child(self._m.feedback, alias, "unsampled").inc()
        return FeedbackRecord(
            id=stored["id"],
            request_id=body.request_id,
            sampled=stored["sampled"],
            created_at=stored["created_at"],
        )
