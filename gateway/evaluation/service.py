"""Continuous evaluation wired into the gateway: decide, queue, scrub, score, store.

The request path only decides (a hash against a rate) and, for a sampled request that ended
well, puts one item on a bounded queue (never waiting: a full queue drops and counts). One
consumer task takes items off the queue; scrubbing, scoring and the database write run in
worker threads, the judge call through the gateway's own internal completion path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eval.drift import DriftConfig
from eval.pii import Scrubber
from eval.rubrics import Rubric, RubricError, ScoreInput, Scorer, evaluator_epoch, parse_rubric
from eval.sampling import SamplingPolicy
from eval.store import EvalStore
from gateway.evaluation.budget import HourlyBudget
from gateway.evaluation.protocol import FeedbackRecord, FeedbackRequest, RubricRecord
from gateway.exceptions import InvalidRequest, NotFound
from gateway.metrics import GatewayMetrics
from gateway.observers import Capture, FinishedRequest

logger = logging.getLogger("tuneloop.eval")

RecordEvent = Callable[..., None]  # (kind, subject, **detail): the registry's audit log


@dataclass(frozen=True, slots=True)
class EvalConfig:
    policy: SamplingPolicy
    drift: DriftConfig
    queue_size: int = 1000
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

    def decide(self, alias: str, request_id: str) -> bool:
        """Sample this request? Also remembers the id for feedback. Called after routing."""
        self._recent[request_id] = (alias, "")
        if len(self._recent) > self.config.recent_ids:
            self._recent.popitem(last=False)
        sampled = self.config.policy.decide(alias, request_id)
        if not sampled:
            self._count(alias, alias, "not_sampled")
        return sampled

    def __call__(self, done: FinishedRequest) -> None:
        """Observer: queue a sampled request that was answered, without waiting."""
        capture, ctx = done.capture, done.ctx
        if ctx.request_id in self._recent:
            self._recent[ctx.request_id] = (ctx.model, ctx.version)
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
        except asyncio.QueueFull:
            self._count(capture.alias, ctx.version, "queue_full")
            self._m.dropped.labels("queue_full").inc()
            return
        self._count(capture.alias, ctx.version, "sampled")
        self._m.queue_depth.set(self._queue.qsize())

    # --- the consumer --------------------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._process(item)
            except Exception:  # one bad sample must not stop evaluation; it is counted
                self._m.dropped.labels("error").inc()
                logger.exception("event=eval_sample_failed request_id=%s", item.request_id)
            finally:
                self._queue.task_done()
                self._m.queue_depth.set(self._queue.qsize())

    async def _process(self, item: _Item) -> None:
        capture = item.capture
        raw = _clip([capture.request, capture.answer, [c["text"] for c in capture.retrieved]])
        request, answer, chunks = await asyncio.to_thread(self._scrubber.scrub_value, raw)
        score = None
        active = self._rubrics.get(capture.alias)
        if active is not None:
            allow_judge = self._budget.available()
            if not allow_judge and any(c.type == "llm_judge" for c in active.rubric.checks):
                self._count(capture.alias, capture.version, "judge_budget")
            result = await self._scorer.score(
                active.rubric,
                ScoreInput(
                    sample_id=item.request_id,
                    question=_question(request),
                    messages=request.get("messages"),
                    answer=answer,
                    context=list(chunks),
                ),
                epoch=active.record.epoch,
                allow_judge=allow_judge,
            )
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
            "request": request,
            "response": answer,
            "retrieved": [str(c["id"]) for c in capture.retrieved],
            "status": item.status,
            "latency_ms": item.latency_ms,
            "prompt_tokens": item.prompt_tokens,
            "completion_tokens": item.completion_tokens,
        }
        await asyncio.to_thread(self.store.add_sample, sample, score)

    def _observe(self, capture: Capture, total: float | None, checks: list[dict]) -> None:
        if total is not None:
            self._metrics.child(self._m.score, capture.alias, capture.version).observe(total)
        for check in checks:
            if check.get("passed") is False:
                self._metrics.child(
                    self._m.check_failures, capture.alias, capture.version, check["name"]
                ).inc()

    def spend_judge_tokens(self, alias: str, tokens: int) -> None:
        self._budget.spend(tokens)
        self._metrics.child(self._m.judge_tokens, alias).inc(tokens)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # --- rubrics -------------------------------------------------------------------------------
    async def put_rubric(self, alias: str, source: str | Mapping[str, Any]) -> RubricRecord:
        try:
            rubric = parse_rubric(source)
        except RubricError as exc:
            raise InvalidRequest(str(exc), param=exc.path, code="invalid_rubric") from exc
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
