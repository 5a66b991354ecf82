"""The eval service's own branching, with a real SQLite store, scrubber and scorer: what is
queued, what is dropped and counted, what a full queue does to a request (nothing)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from eval.drift import DriftConfig
from eval.pii import Scrubber
from eval.rubrics import Scorer
from eval.sampling import SamplingPolicy
from eval.store import EvalStore, SampleQuery
from gateway.context import RequestContext
from gateway.db import create_db_engine
from gateway.evaluation.service import EvalConfig, EvalService
from gateway.metrics import GatewayMetrics
from gateway.observers import Capture, FinishedRequest, Observers


def service(tmp_path: Path, *, queue_size: int = 10) -> tuple[EvalService, GatewayMetrics]:
    metrics = GatewayMetrics()
    store = EvalStore(create_db_engine(f"sqlite:///{tmp_path / 'eval.db'}"))
    config = EvalConfig(
        policy=SamplingPolicy(default_rate=1.0), drift=DriftConfig(), queue_size=queue_size
    )
    events: list[tuple] = []
    svc = EvalService(
        store=store, scrubber=Scrubber(), scorer=Scorer(), metrics=metrics, config=config,
        record_event=lambda *args, **kw: events.append((args, kw)),
    )  # fmt: skip
    return svc, metrics


def finished(request_id: str, *, status: int = 200, text: str = "ok") -> FinishedRequest:
    ctx = RequestContext(request_id=request_id, model="extract", version="extract@v1")
    ctx.status = status
    capture = Capture(
        alias="extract",
        version="extract@v1",
        request={"messages": [{"role": "user", "content": "hi"}]},
    )
    capture.feed_body(
        json.dumps({"choices": [{"index": 0, "message": {"content": text}}]}).encode()
    )
    return FinishedRequest("chat", ctx, capture)


def counted(metrics: GatewayMetrics, decision: str) -> float:
    value = metrics.registry.get_sample_value(
        "tuneloop_eval_samples_total",
        {"alias": "extract", "version": "extract@v1", "decision": decision},
    )
    return value or 0.0


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    async def run() -> None:
        svc, metrics = service(tmp_path, queue_size=2)  # consumer not started: nothing drains
        for n in range(5):
            done = finished(f"r{n}")
            if svc.decide(done.ctx):
                svc(done)
        assert svc.queue_depth == 2
        assert counted(metrics, "sampled") == 2 and counted(metrics, "queue_full") == 3
        assert (
            metrics.registry.get_sample_value(
                "tuneloop_eval_dropped_total", {"reason": "queue_full"}
            )
            == 3
        )

    asyncio.run(run())


def test_answers_are_stored_scrubbed_failures_are_not_stored(tmp_path: Path) -> None:
    async def run() -> EvalStore:
        svc, metrics = service(tmp_path)
        await svc.start()
        for done in (finished("good", text="mail me at ana@example.com"),
                     finished("failed", status=502)):  # fmt: skip
            assert svc.decide(done.ctx)
            svc(done)
        await svc.close()
        assert counted(metrics, "not_sampled") == 1
        return svc.store

    store = asyncio.run(run())
    [sample] = store.samples(SampleQuery())
    assert sample["request_id"] == "good" and sample["response"] == "mail me at <EMAIL>"


def test_an_observer_that_raises_never_reaches_the_request() -> None:
    seen: list[str] = []

    def broken(done: FinishedRequest) -> None:
        raise RuntimeError("observer bug")

    observers = Observers(broken, lambda done: seen.append(done.ctx.request_id))
    observers.finish(FinishedRequest("chat", RequestContext(request_id="r1"), None))
    assert seen == ["r1"]  # the next observer still ran
