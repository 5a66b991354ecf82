"""Retrain job state on a real SQLite file and a real PostgreSQL database: lifecycle, one active
job per alias, restarts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.jobs import JobConflict, JobRecord, JobStore
from adapters.registry import InUse, NotFound, RegistryError
from gateway.db import create_db_engine


@pytest.fixture
def store(database_url: str) -> JobStore:
    return JobStore(create_db_engine(database_url))


def to_succeeded(store: JobStore, alias: str = "extract") -> JobRecord:
    job = store.create(alias, trigger="drift")
    store.transition(job.id, "running", dataset_hash="sha256:ab", log_path=Path("/l/1.log"))
    return store.transition(job.id, "succeeded", adapter_path="/a/extract-v2")


def test_lifecycle_records_timings_and_outcome(
    store: JobStore, tmp_path: Path, database_url: str
) -> None:
    before = datetime.now(UTC)
    job = store.create("extract", trigger="manual", detail={"requested_by": "ops"})
    assert (job.state, job.trigger, job.started_at, job.finished_at) == (
        "queued", "manual", None, None,
    )  # fmt: skip
    assert job.created_at >= before and job.detail == {"requested_by": "ops"}

    running = store.transition(
        job.id, "running", dataset_hash="sha256:ab", log_path=tmp_path / "job.log"
    )
    assert running.started_at is not None and running.started_at >= job.created_at
    assert running.log_path == str(tmp_path / "job.log") and running.finished_at is None

    done = store.transition(
        job.id, "succeeded", adapter_path="/a/extract-v2", detail={"best_val_loss": 0.5}
    )
    assert done.finished_at is None, "trained but still awaiting the gate"
    assert done.detail == {"requested_by": "ops", "best_val_loss": 0.5}, "detail is merged"

    assert store.transition(job.id, "gating").finished_at is None, "on the frozen set"
    verdict = {"promote": True, "delta": 0.12, "ci": [0.05, 0.2]}
    canary = store.transition(job.id, "canary", verdict=verdict)
    assert canary.verdict == verdict and canary.finished_at is None, "the verdict, then canary"
    assert store.active("extract") == canary, "a canary still holds the alias"
    promoted = store.transition(job.id, "promoted", served_name="extract@v2")
    assert promoted.finished_at is not None and promoted.finished_at >= promoted.started_at
    rolled = store.transition(job.id, "rolled_back", error="operator rolled back")
    assert rolled.finished_at == promoted.finished_at, "the job ended at its promotion"

    again = JobStore(create_db_engine(database_url)).get(job.id)  # persisted, reread
    assert again == rolled
    assert (again.state, again.dataset_hash, again.served_name) == (
        "rolled_back", "sha256:ab", "extract@v2",
    )  # fmt: skip
    assert again.verdict == verdict and again.adapter_path == "/a/extract-v2"
    assert again.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ([], "succeeded"),  # queued cannot skip running
        ([], "promoted"),
        (["running"], "promoted"),  # only a trained job reaches the gate
        (["running"], "queued"),
        (["running", "succeeded"], "promoted"),  # the gate comes first
        (["running", "succeeded", "gating"], "promoted"),  # ... and then the canary
        (["running", "succeeded", "gating", "rejected"], "canary"),
        (["running", "failed"], "running"),
        (["running", "cancelled"], "running"),  # a cancelled job stays cancelled
        (["running", "succeeded", "gating", "canary", "promoted"], "failed"),  # no longer active
        (["running", "succeeded", "gating", "canary", "promoted"], "cancelled"),
        (["running", "succeeded", "gating", "canary", "promoted", "rolled_back"], "promoted"),
    ],
)
def test_refused_transitions_change_nothing(store: JobStore, path: list[str], refused: str) -> None:
    job = store.create("extract", trigger="schedule")
    for state in path:
        job = store.transition(job.id, state)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match=f"is {job.state} and cannot become {refused}") as exc:
        store.transition(job.id, refused, error="x")  # type: ignore[arg-type]
    assert exc.value.reason == "bad_transition"
    assert store.get(job.id) == job


ACTIVE_PATHS = [
    [], ["running"], ["running", "succeeded"], ["running", "succeeded", "gating"],
    ["running", "succeeded", "gating", "canary"],
]  # fmt: skip


@pytest.mark.parametrize("end", ["failed", "cancelled"])
@pytest.mark.parametrize("from_path", ACTIVE_PATHS)
def test_any_active_state_can_fail_or_be_cancelled(
    store: JobStore, from_path: list[str], end: str
) -> None:
    job = store.create("extract", trigger="drift")
    for state in from_path:
        store.transition(job.id, state)  # type: ignore[arg-type]
    ended = store.transition(job.id, end, error="trainer exited with code 1")  # type: ignore[arg-type]
    assert ended.state == end and ended.error == "trainer exited with code 1"
    assert ended.finished_at is not None
    assert store.active("extract") is None


def test_bad_input_is_refused(store: JobStore) -> None:
    with pytest.raises(RegistryError, match="trigger must be one of"):
        store.create("extract", trigger="cron")
    with pytest.raises(RegistryError, match="alias name"):
        store.create("Bad Alias", trigger="manual")
    job = store.create("extract", trigger="manual")
    with pytest.raises(TypeError, match="unknown job field"):
        store.transition(job.id, "running", dataset="x")
    with pytest.raises(RegistryError, match="unknown job state"):
        store.transition(job.id, "paused")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.transition(999, "running")
    with pytest.raises(NotFound):
        store.get(999)
    assert store.get(job.id).state == "queued"


def test_update_sets_fields_on_active_jobs_only(store: JobStore) -> None:
    job = store.create("extract", trigger="manual")
    store.transition(job.id, "running")
    updated = store.update(job.id, detail={"step": 10}, log_path="/l/x.log")
    assert updated.state == "running" and updated.detail == {"step": 10}
    assert store.update(job.id, detail={"loss": 1.5}).detail == {"step": 10, "loss": 1.5}
    store.transition(job.id, "failed", error="boom")
    with pytest.raises(RegistryError, match="final"):
        store.update(job.id, error="rewritten")
    assert store.get(job.id).error == "boom"


def test_one_active_job_per_alias(store: JobStore) -> None:
    first = store.create("extract", trigger="drift")
    with pytest.raises(JobConflict) as exc:
        store.create("extract", trigger="manual")
    assert exc.value.job_id == first.id and exc.value.reason == "job_active"
    assert isinstance(exc.value, InUse), "the gateway maps InUse to 409"

    other = store.create("summarize", trigger="manual")  # aliases are independent
    assert store.active("summarize") == other

    store.transition(first.id, "running")
    store.transition(first.id, "succeeded")
    with pytest.raises(JobConflict, match="succeeded"):  # trained, awaiting the gate: still held
        store.create("extract", trigger="schedule")
    store.transition(first.id, "gating")
    store.transition(first.id, "rejected", verdict={"promote": False})
    assert store.active("extract") is None
    second = store.create("extract", trigger="schedule")
    assert store.active("extract") == second and second.id != first.id


def test_the_database_enforces_one_active_job(database_url: str) -> None:
    store = JobStore(create_db_engine(database_url))
    store.create("extract", trigger="drift")
    # Bypassing the store's own check, the table itself refuses a second active row.
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from adapters.jobs import RetrainJobRow

    engine = create_db_engine(database_url)
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(RetrainJobRow(alias="extract", active_alias="extract", state="queued",
                                  trigger="manual", detail={}))  # fmt: skip


def test_racing_creates_make_exactly_one_job(database_url: str, monkeypatch) -> None:
    """Two gateways (two engines) both pass the friendly check, then both insert: one wins."""
    stores = [JobStore(create_db_engine(database_url)) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=10)
    original = JobStore._refuse_if_active
    checked: set[int] = set()

    def check_then_wait(self: JobStore, alias: str) -> None:
        first_check = id(self) not in checked
        checked.add(id(self))
        original(self, alias)
        if first_check:
            barrier.wait()  # both have seen "no active job" before either writes

    monkeypatch.setattr(JobStore, "_refuse_if_active", check_then_wait)
    results: list[object] = [None, None]

    def attempt(index: int) -> None:
        try:
            results[index] = stores[index].create("extract", trigger="drift")
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[index] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    created = [r for r in results if isinstance(r, JobRecord)]
    refused = [r for r in results if isinstance(r, JobConflict)]
    assert len(created) == 1 and len(refused) == 1, results
    assert refused[0].job_id == created[0].id
    assert [j.id for j in stores[0].jobs(alias="extract")] == [created[0].id]


def test_many_threads_racing_create_one_job(database_url: str) -> None:
    store = JobStore(create_db_engine(database_url))
    barrier = threading.Barrier(8, timeout=10)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        try:
            store.create("extract", trigger="schedule")
            outcome = "created"
        except InUse:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["created"] + ["refused"] * 7
    assert len(store.jobs()) == 1


def test_fail_interrupted_fails_every_active_job(store: JobStore) -> None:
    queued = store.create("a", trigger="drift")
    running = store.create("b", trigger="schedule")
    store.transition(running.id, "running")
    trained = to_succeeded(store, "c")
    rejected = to_succeeded(store, "d")
    store.transition(rejected.id, "gating")
    store.transition(rejected.id, "rejected", verdict={"promote": False})
    promoted = to_succeeded(store, "e")
    for state in ("gating", "canary", "promoted"):
        store.transition(promoted.id, state)  # type: ignore[arg-type]

    ids = store.fail_interrupted(reason="gateway restarted")

    assert ids == [queued.id, running.id, trained.id]
    for job_id, was in zip(ids, ["queued", "running", "succeeded"], strict=True):
        job = store.get(job_id)
        assert (job.state, job.error) == ("failed", "gateway restarted")
        assert job.finished_at is not None and job.detail["interrupted_in"] == was
    assert store.get(rejected.id).state == "rejected" and store.get(promoted.id).state == "promoted"
    assert all(store.active(alias) is None for alias in "abcde")
    fresh = store.create("a", trigger="manual")
    assert fresh.state == "queued", "the alias is free again"
    assert store.fail_interrupted(reason="again") == [fresh.id]


def test_fail_interrupted_spares_the_jobs_of_live_owners(store: JobStore) -> None:
    """Several gateway processes on one database: one starting fails only the jobs whose
    process has stopped (or that name none), never another live process's."""
    live_queued = store.create("a", trigger="drift", owner="p-live")
    live_running = store.create("b", trigger="manual", owner="p-live")
    store.transition(live_running.id, "running")
    other_live = to_succeeded(store, "c")  # no owner yet: made as before owners existed
    dead = store.create("d", trigger="drift", owner="p-dead")
    store.transition(dead.id, "running")
    unowned = store.create("e", trigger="schedule")
    assert (live_queued.owner, unowned.owner, store.get(dead.id).owner) == (
        "p-live", None, "p-dead",
    )  # fmt: skip

    ids = store.fail_interrupted(reason="gateway restarted", live_owners={"p-live", "p-new"})

    assert ids == [other_live.id, dead.id, unowned.id], "no owner, or one not live"
    assert store.get(dead.id).detail["interrupted_in"] == "running"
    assert store.get(live_queued.id).state == "queued" and store.get(live_running.id).active
    assert store.active("b") is not None and store.active("d") is None
    assert store.fail_interrupted(reason="again", live_owners=["p-live"]) == []
    assert store.fail_interrupted(reason="p-live stopped", live_owners=["p-new"]) == [
        live_queued.id, live_running.id,
    ]  # fmt: skip
    lone = store.create("a", trigger="manual", owner="p-new")
    assert store.fail_interrupted(reason="nobody is live", live_owners=[]) == [lone.id]


def test_listing_is_newest_first_with_limit(store: JobStore) -> None:
    ids = []
    for _ in range(3):
        for alias in ("extract", "summarize"):
            job = store.create(alias, trigger="schedule")
            store.transition(job.id, "failed", error="x")
            ids.append((alias, job.id))
    assert [j.id for j in store.jobs()] == [i for _, i in reversed(ids)]
    assert [j.id for j in store.jobs(limit=2)] == [i for _, i in reversed(ids)][:2]
    extract = [i for a, i in reversed(ids) if a == "extract"]
    assert [j.id for j in store.jobs(alias="extract")] == extract
    assert [j.id for j in store.jobs(alias="extract", limit=1)] == extract[:1]
    assert store.jobs(alias="nobody") == []
    with pytest.raises(RegistryError):
        store.jobs(limit=0)


def test_a_job_changed_by_another_writer_is_not_overwritten(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart's fail_interrupted lands between another writer's check and its write."""
    store, other = (JobStore(create_db_engine(database_url)) for _ in range(2))
    job = store.create("extract", trigger="drift")
    store.transition(job.id, "running")
    original = JobStore._compare_and_set

    def interleaved(session, row, values):  # noqa: ANN001 - mirrors the private signature
        other.fail_interrupted(reason="gateway restarted")
        return original(session, row, values)

    monkeypatch.setattr(JobStore, "_compare_and_set", staticmethod(interleaved))
    with pytest.raises(RegistryError, match="changed state") as exc:
        store.transition(job.id, "succeeded", adapter_path="/a/x")
    assert exc.value.reason == "job_changed"
    final = other.get(job.id)
    assert (final.state, final.error, final.adapter_path) == ("failed", "gateway restarted", None)
