"""The evaluation store on a real database (SQLite, PostgreSQL): samples with scores, feedback,
baselines, retention and job leases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from eval.store import EvalStore, SampleQuery
from gateway.db import create_db_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


def sample(request_id: str, *, alias: str = "extract", at: datetime | None = None) -> dict:
    return {
        "request_id": request_id, "at": at or datetime.now(UTC), "alias": alias,
        "version": f"{alias}@v1", "endpoint": "chat", "request": {"messages": []},
        "response": "{}", "retrieved": [], "status": 200, "latency_ms": 12.5,
        "prompt_tokens": 10, "completion_tokens": 5,
    }  # fmt: skip


def score(total: float | None, epoch: str = "e1") -> dict:
    return {"epoch": epoch, "total": total, "checks": [{"name": "json_valid", "passed": True}]}


def test_samples_pages_filters_and_feedback(engine: Engine) -> None:
    store = EvalStore(engine)
    for n in range(5):
        store.add_sample(sample(f"r{n}"), score(n / 4))
    store.add_sample(sample("other", alias="chat"), None)
    store.add_feedback("r1", score=0.0, label="bad")
    store.add_feedback("never-sampled", score=1.0)

    page = store.samples(SampleQuery(alias="extract", limit=3))
    assert [s["request_id"] for s in page] == ["r4", "r3", "r2"]
    older = store.samples(SampleQuery(alias="extract", before=page[-1]["id"], limit=3))
    assert [s["request_id"] for s in older] == ["r1", "r0"]
    assert [s["request_id"] for s in store.samples(SampleQuery(score_below=0.3))] == ["r1", "r0"]
    [with_feedback] = store.samples(SampleQuery(has_feedback=True))
    assert with_feedback["request_id"] == "r1" and with_feedback["feedback"][0]["label"] == "bad"
    assert store.samples(SampleQuery(alias="chat"))[0]["score"] is None


def test_feedback_on_an_unsampled_request_is_kept_and_marked(engine: Engine) -> None:
    store = EvalStore(engine)
    store.add_sample(sample("r1"), score(1.0))
    assert store.add_feedback("r1", score=1.0)["sampled"] is True
    stored = store.add_feedback("r2", score=0.5, alias="extract", version="extract@v1")
    assert stored["sampled"] is False and stored["alias"] == "extract"


def test_baseline_restarts_count_only_later_scores(engine: Engine) -> None:
    store = EvalStore(engine)
    store.add_sample(sample("r1"), score(0.9))
    first = store.baseline("extract", "e1")
    assert first["after_score_id"] == 0 and first["state"] == "baseline"
    assert [s.total for s in store.scores_after("extract", "e1", 0)] == [0.9]
    store.restart_baseline("extract", "e1", reason="acknowledged")
    store.add_sample(sample("r2"), score(0.4))
    current = store.baseline("extract", "e1")
    assert current["reason"] == "acknowledged"
    assert [s.total for s in store.scores_after("extract", "e1", current["after_score_id"])] == [
        0.4
    ]
    assert store.scores_after("extract", "e2", 0) == []  # another epoch is never mixed in


def test_retention_drops_old_samples_scores_and_feedback(engine: Engine) -> None:
    store = EvalStore(engine)
    old = datetime.now(UTC) - timedelta(days=40)
    store.add_sample(sample("old", at=old), score(1.0))
    store.add_sample(sample("new"), score(1.0))
    removed = store.delete_before(datetime.now(UTC) - timedelta(days=30))
    assert removed["samples"] == 1 and removed["scores"] == 1
    assert [s["request_id"] for s in store.samples(SampleQuery())] == ["new"]


def test_a_lease_is_held_by_one_process_until_it_expires(engine: Engine) -> None:
    store = EvalStore(engine)
    assert store.try_lease("drift", "gateway-a", ttl=60)
    assert not store.try_lease("drift", "gateway-b", ttl=60)
    assert store.try_lease("drift", "gateway-a", ttl=60)  # renewing one's own
    assert store.try_lease("drift", "gateway-b", ttl=-1) is False
    assert store.try_lease("report", "gateway-b", ttl=60)  # leases are per job


def test_an_expired_lease_can_be_taken_over(engine: Engine) -> None:
    store = EvalStore(engine)
    assert store.try_lease("drift", "gateway-a", ttl=-1)  # already expired
    assert store.try_lease("drift", "gateway-b", ttl=60)


def test_gateways_racing_for_a_free_lease_give_it_to_one(database_url: str) -> None:
    """Six processes (an engine each) try for the same free lease at once: exactly one wins."""
    engines = [create_db_engine(database_url) for _ in range(6)]
    stores = [EvalStore(engine) for engine in engines]
    barrier = threading.Barrier(len(stores), timeout=10)
    won: list[str] = []

    def attempt(index: int) -> None:
        barrier.wait()
        if stores[index].try_lease("drift", f"gateway-{index}", ttl=60):
            won.append(f"gateway-{index}")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for engine in engines:
        engine.dispose()
    assert len(won) == 1, won


def test_confirmations_are_well_scored_feedback_without_a_correction(engine: Engine) -> None:
    """What a human confirmed: the sample's own answer, never a corrected or low-scored one,
    and only of the alias asked for."""
    store = EvalStore(engine)
    for request_id in ("good", "corrected", "low", "unscored"):
        store.add_sample(sample(request_id), score(0.5))
    store.add_sample(sample("elsewhere", alias="chat"), score(1.0))
    store.add_feedback("good", score=1.0, alias="extract")
    store.add_feedback("corrected", score=1.0, correction='{"name": "Ana"}', alias="extract")
    store.add_feedback("low", score=0.2, alias="extract")
    store.add_feedback("unscored", label="fine", alias="extract")
    store.add_feedback("elsewhere", score=1.0, alias="chat")
    store.add_feedback("never-sampled", score=1.0, alias="extract")
    [confirmed] = store.confirmations("extract", min_score=0.9)
    assert confirmed == {"request_id": "good", "request": {"messages": []}, "response": "{}"}
