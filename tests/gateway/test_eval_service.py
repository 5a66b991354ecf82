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
from gateway.evaluation.jobs import EvalJobs
from gateway.evaluation.protocol import EvalSummary
from gateway.evaluation.service import EvalConfig, EvalService
from gateway.evaluation.views import EvalViews
from gateway.metrics import GatewayMetrics
from gateway.observers import Capture, FinishedRequest, Observers
from gateway.traffic import TrafficWindow


def service(
    tmp_path: Path, *, queue_size: int = 10, drift: DriftConfig | None = None
) -> tuple[EvalService, GatewayMetrics]:
    metrics = GatewayMetrics()
    store = EvalStore(create_db_engine(f"sqlite:///{tmp_path / 'eval.db'}"))
    config = EvalConfig(
        policy=SamplingPolicy(default_rate=1.0),
        drift=drift or DriftConfig(),
        queue_size=queue_size,
        max_samples_per_second=1000.0,
    )
    events: list[tuple] = []
    svc = EvalService(
        store=store, scrubber=Scrubber(), scorer=Scorer(), metrics=metrics, config=config,
        record_event=lambda *args, **kw: events.append((args, kw)),
    )  # fmt: skip
    return svc, metrics


def finished(
    request_id: str,
    *,
    status: int = 200,
    text: str = "ok",
    alias: str = "extract",
    version: str = "extract@v1",
) -> FinishedRequest:
    ctx = RequestContext(request_id=request_id, model=alias, version=version)
    ctx.status = status
    capture = Capture(
        alias=alias,
        version=version,
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


DRIFT_FIELDS = {"drift_state", "drift_statistic", "baseline_mean", "baseline_sigma"}


def test_drift_is_one_state_per_alias_in_the_summary_gauge_and_report(tmp_path: Path) -> None:
    """An alias flipped from a good version to a bad one drifts: the state is the alias's
    (shown once, gauged by alias), and each version keeps its own figures."""
    answers = [("extract@v1", '{"name": "Ana"}')] * 30 + [("extract@v2", "Ana, I think.")] * 20

    async def run() -> tuple[GatewayMetrics, EvalJobs, EvalSummary, str | None, str]:
        drift = DriftConfig(baseline_samples=20, batch_size=5)
        svc, metrics = service(tmp_path, queue_size=100, drift=drift)
        await svc.start()
        await svc.put_rubric("extract", {"checks": [{"type": "json_valid"}]})
        done = [finished(f"r{n}", text=text, version=v) for n, (v, text) in enumerate(answers)]
        done.append(finished("base", alias="base-model", version="base-model"))  # no rubric
        for item in done:
            assert svc.decide(item.ctx)
            svc(item)
        await svc.close()
        jobs = EvalJobs(svc, reports_dir=tmp_path / "reports", retention_days=7)
        [checked] = await jobs.drift_check()
        summary = await EvalViews(svc, TrafficWindow(), lambda limit: []).summary()
        return metrics, jobs, summary, checked.version, checked.result.state

    metrics, jobs, summary, version, state = asyncio.run(run())
    assert (state, version) == ("drift", "extract@v2")
    gauge = metrics.registry.get_sample_value
    assert gauge("tuneloop_eval_drift_state", {"alias": "extract"}) == 2
    assert gauge("tuneloop_eval_drift_state", {"alias": "extract", "version": version}) is None

    rows = {(row.alias, row.version): row for row in summary.data}
    assert set(rows) == {("extract", "extract@v1"), ("extract", "extract@v2"),
                         ("base-model", "base-model")}  # fmt: skip
    for row in summary.model_dump()["data"]:
        assert DRIFT_FIELDS.isdisjoint(row), row  # a version row has its own figures only
    assert rows[("extract", "extract@v1")].mean_score == 1.0  # v1 itself is still good
    assert rows[("extract", "extract@v2")].mean_score == 0.0
    assert [entry.alias for entry in summary.aliases] == ["base-model", "extract"]  # one each
    base, extract = summary.aliases
    assert (extract.drift_state, extract.version, extract.baseline_mean) == (
        "drift",
        "extract@v2",
        1.0,
    )
    assert extract.epoch == rows[("extract", "extract@v1")].epoch is not None
    assert (base.drift_state, base.epoch, base.version, base.baseline_mean) == (
        "baseline",
        None,
        None,
        None,
    )

    path = asyncio.run(jobs.report(summary.model_dump(mode="json")))
    markdown = path.with_suffix(".md").read_text()
    assert markdown.count("drift: **drift**") == 1 and markdown.count("drift: **") == 2
    assert "| extract@v1 | 30 | 30 | 1.000 |" in markdown
    assert "| extract@v2 | 20 | 20 | 0.000 |" in markdown
