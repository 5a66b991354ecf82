"""The loop end to end on the CPU: planted drift -> dataset -> challenger -> gate -> canary ->
promotion, and a useless challenger rejected while the champion keeps serving. Challengers are
trained through the Ray executor on a real Ray head (``tests.ray_cluster``).

Drift is planted the way the design says: by changing what is served (the alias flipped to an
adapter trained to answer in prose), never by editing the rubric. The loop then retrains on the
alias's dataset plus the corrections clients posted, and gates the challenger against the
champion that serves now.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.settings import Settings
from tests.gateway.conftest import JSON_RUBRIC, EvalGateway
from tests.helpers import ADMIN_TOKEN, EXAMPLE_DATA, running_gateway, wait_until
from tests.ray_cluster import RAY_CPUS

TERMINAL = {"failed", "cancelled", "rejected", "promoted", "rolled_back"}


@pytest.fixture(scope="module")
def loop_gateway(
    ray_address: str,
    engine_url: str,
    adapter_root: Path,
    trained_adapters: dict[str, Path],
    prose_adapter: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EvalGateway]:
    settings = Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=adapter_root,
        data_dir=tmp_path_factory.mktemp("loop"), health_interval=1, eval_sample_rate=1.0,
        eval_drift_interval=3600, eval_drift_baseline_samples=20, eval_drift_batch_size=5,
        loop_train_steps=10, loop_canary_share=50, loop_canary_samples=6,
        loop_canary_timeout=300, loop_shadow_share=1.0,
        internal_priority="10",  # the session's engine schedules by priority: gate requests yield
        # Challengers train on a real Ray cluster (a head on loopback), as on a GPU fleet.
        train_executor="ray", ray_address=ray_address, ray_num_cpus=RAY_CPUS,
    )  # fmt: skip
    with running_gateway(settings) as url:
        gateway = EvalGateway(url, aliases=["loopx"])
        imported = gateway.call(
            "POST", "/admin/datasets/loopx?source=extract.jsonl", content=EXAMPLE_DATA.read_bytes()
        )
        assert imported.status_code == 201, imported.text
        gateway.point("loopx", gateway.register("loopx", trained_adapters["v1"]))
        gateway.register("loopx", prose_adapter)  # loopx@v2: the degraded one
        assert gateway.call("PUT", "/admin/rubrics/loopx", content=JSON_RUBRIC).status_code == 200
        yield gateway


class Traffic:
    """A client in the background: one request a second to an alias (each on its own thread,
    at most four in flight), from enter to exit; every failure is collected."""

    def __init__(self, gateway: EvalGateway, alias: str, *, every: float = 1.0) -> None:
        self._gateway, self._alias, self._every = gateway, alias, every
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(4)
        self._lock = threading.Lock()
        self.sent = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            if self._slots.acquire(blocking=False):
                threading.Thread(target=self._one, daemon=True).start()

    def _one(self) -> None:
        try:
            self._gateway.ask(self._alias, 1, max_tokens=16)
            with self._lock:
                self.sent += 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding: collected
            with self._lock:
                self.errors.append(repr(exc))
        finally:
            self._slots.release()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for _ in range(4):  # the requests still in flight finish
            self._slots.acquire(timeout=120)


def job_of(gateway: EvalGateway, job_id: int) -> dict:
    return gateway.call("GET", f"/admin/jobs/{job_id}").json()


def wait_job(gateway: EvalGateway, job_id: int, timeout: float = 900) -> dict:
    wait_until(
        lambda: job_of(gateway, job_id)["state"] in TERMINAL,
        timeout=timeout, what=f"job {job_id} to end", interval=2,
    )  # fmt: skip
    return job_of(gateway, job_id)


def drift_state(gateway: EvalGateway, alias: str) -> dict:
    rows = gateway.call("POST", "/admin/eval/drift-check").json()["data"]
    return next(row for row in rows if row["alias"] == alias)


def test_planted_drift_is_retrained_gated_canaried_and_promoted(
    loop_gateway: EvalGateway,
) -> None:
    gw = loop_gateway
    frozen = gw.call("GET", "/admin/datasets", params={"alias": "loopx"}).json()["data"]
    assert frozen and frozen[0]["counts"]["kept"] > 0

    gw.wait_sampled(gw.ask("loopx", 30))  # baseline on the JSON adapter
    assert drift_state(gw, "loopx")["state"] == "ok"

    gw.point("loopx", "loopx@v2")  # the world moves: prose answers fail the JSON rubric
    # From here to the promotion a client sends a request a second: the loop must finish
    # under live traffic, and not one of those requests may fail.
    with Traffic(gw, "loopx") as traffic:
        drifted_ids = gw.ask("loopx", 20)
        gw.wait_sampled(drifted_ids)
        for request_id in drifted_ids[:6]:  # clients correct a few answers
            sample = gw.samples(request_id=request_id)[0]
            name, rest = sample["request"]["messages"][-1]["content"].split(" is ", 1)
            age, city = rest.split(" years old and lives in ")
            correction = f'{{"name": "{name}", "age": {age}, "city": "{city.rstrip(".")}"}}'
            body = {"request_id": request_id, "score": 0.0, "correction": correction}
            assert httpx.post(f"{gw.url}/v1/feedback", json=body, timeout=30).status_code == 201

        assert drift_state(gw, "loopx")["state"] == "drift"  # ... and the loop starts itself
        [job] = gw.call("GET", "/admin/jobs", params={"alias": "loopx"}).json()["data"]
        assert job["trigger"] == "drift"
        wait_until(lambda: job_of(gw, job["id"])["state"] not in ("queued", "running"),
                   timeout=900, what="the challenger to be trained", interval=2)  # fmt: skip
        while_training = traffic.sent
        job = wait_job(gw, job["id"])
    assert not traffic.errors, traffic.errors[:3]  # nothing failed, swaps included
    assert while_training >= 10 and traffic.sent > while_training, (while_training, traffic.sent)

    assert job["state"] == "promoted", job
    progress = job["detail"]["progress"]  # the trainer's last step line, on the job
    assert 1 <= progress["step"] <= progress["total"] and progress["loss"] is not None
    steps = [x for x in Path(job["log_path"]).read_text().splitlines()
             if x.startswith("tuneloop-step ")]  # fmt: skip
    assert len(steps) == progress["step"]  # the job's log has one line per step
    verdict = job["verdict"]
    assert verdict["promote"] and verdict["ci_low"] > 0, verdict
    assert verdict["mean_challenger"] > verdict["mean_champion"]
    challenger = job["served_name"]
    targets = {a["name"]: a["targets"] for a in gw.call("GET", "/admin/aliases").json()["data"]}
    assert targets["loopx"] == {challenger: 100}

    kinds = [e["kind"] for e in gw.call("GET", "/admin/events", params={"subject": "loopx"}).json()
             ["data"]]  # fmt: skip
    for kind in ("drift_state_changed", "loop_dataset", "loop_job_gating", "loop_gate",
                 "loop_job_canary", "loop_canary_started", "loop_promoted",
                 "drift_baseline_restarted"):  # fmt: skip
        assert kind in kinds, kinds
    canary = job["detail"]["canary_progress"]  # how far the canary came, on the job
    assert canary["samples"] >= canary["needed"] == 6 and canary["share"] == 50
    datasets = gw.call("GET", "/admin/datasets", params={"alias": "loopx"}).json()["data"]
    newest = max(datasets, key=lambda d: d["version"])
    assert newest["hash"] == job["dataset_hash"] and newest["parents"]
    assert any(s.startswith("feedback:") for s in newest["sources"])

    gw.wait_sampled(gw.ask("loopx", 10))  # the live score recovers on the promoted adapter
    rows = {(r["alias"], r["version"]): r for r in gw.call("GET", "/admin/eval/summary").json()
            ["data"]}  # fmt: skip
    assert rows[("loopx", challenger)]["mean_score"] > rows[("loopx", "loopx@v2")]["mean_score"]
    assert drift_state(gw, "loopx")["state"] in ("baseline", "ok")


def test_a_useless_challenger_is_rejected_and_the_champion_keeps_serving(
    loop_gateway: EvalGateway,
) -> None:
    gw = loop_gateway
    before = {a["name"]: a["targets"] for a in gw.call("GET", "/admin/aliases").json()["data"]}
    # A vanishing learning rate: the challenger is the base model with an adapter that changes
    # nothing, so it cannot beat the promoted champion on the frozen set.
    started = gw.call("POST", "/admin/retrain", json={"alias": "loopx", "lr": 1e-9, "max_steps": 2})
    assert started.status_code == 202, started.text
    again = gw.call("POST", "/admin/retrain", json={"alias": "loopx"})
    assert again.status_code == 409  # one job per alias at a time
    assert again.json()["error"]["code"] == "job_active"
    job = wait_job(gw, started.json()["id"])
    assert job["state"] == "rejected", job
    assert job["verdict"]["promote"] is False and job["verdict"]["reason"].startswith("reject")
    after = {a["name"]: a["targets"] for a in gw.call("GET", "/admin/aliases").json()["data"]}
    assert after["loopx"] == before["loopx"]
    assert status_of(gw, job["served_name"]) == "rejected", "the loser is retired"
    routed = gw.call("POST", "/v1/chat/completions", json={
        "model": job["served_name"], "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1})  # fmt: skip
    assert routed.status_code == 404, routed.text  # never routable again


def status_of(gateway: EvalGateway, served_name: str) -> str | None:
    adapters = gateway.call("GET", "/admin/adapters").json()["data"]
    return next((a["status"] for a in adapters if a["served_name"] == served_name), None)


def test_a_job_cancelled_at_its_gate_stops_and_frees_the_alias(
    loop_gateway: EvalGateway,
) -> None:
    gw = loop_gateway
    before = {a["name"]: a["targets"] for a in gw.call("GET", "/admin/aliases").json()["data"]}
    started = gw.call("POST", "/admin/retrain", json={"alias": "loopx", "lr": 1e-9, "max_steps": 1})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    wait_until(lambda: job_of(gw, job_id)["state"] == "gating", timeout=600,
               what="the job to reach its gate", interval=0.5)  # fmt: skip
    cancelled = gw.call("POST", f"/admin/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None

    events = gw.call("GET", "/admin/events", params={"subject": "loopx", "limit": 20}).json()
    assert "loop_job_cancelled" in [e["kind"] for e in events["data"]]
    after = {a["name"]: a["targets"] for a in gw.call("GET", "/admin/aliases").json()["data"]}
    assert after["loopx"] == before["loopx"]
    again = gw.call("POST", f"/admin/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    assert gw.call("POST", "/admin/jobs/999999/cancel").status_code == 404

    # The alias is free at once: the next job is taken, and cancelled while still queued.
    following = gw.call("POST", "/admin/retrain", json={"alias": "loopx", "max_steps": 1})
    assert following.status_code == 202, following.text
    stopped = gw.call("POST", f"/admin/jobs/{following.json()['id']}/cancel").json()
    assert stopped["state"] == "cancelled"
    record = job_of(gw, job_id)  # the cancelled gate never wrote its verdict
    assert record["state"] == "cancelled" and record["verdict"] is None
    wait_until(lambda: status_of(gw, record["served_name"]) == "rejected", timeout=30,
               what="the cancelled job's challenger retired")  # fmt: skip


def test_retrain_refusals_are_clear(loop_gateway: EvalGateway) -> None:
    gw = loop_gateway
    unknown = gw.call("POST", "/admin/retrain", json={"alias": "nobody"})
    assert unknown.status_code == 400 and "no dataset" in unknown.json()["error"]["message"]
    typo = gw.call("POST", "/admin/retrain", json={"alias": "loopx", "steps": 3})
    assert typo.status_code == 400
    bad = gw.call("POST", "/admin/datasets/loopx", content=b'{"messages": "nope"}\n')
    assert bad.status_code == 400 and "line 1" in bad.json()["error"]["message"]


def test_a_gateway_restart_marks_an_unfinished_job_failed(engine_url: str, tmp_path: Path) -> None:
    from adapters.jobs import JobStore
    from gateway.db import create_db_engine

    db = create_db_engine(f"sqlite:///{tmp_path / 'tuneloop.db'}")
    store = JobStore(db)
    job = store.create("extract", trigger="drift")
    store.transition(job.id, "running")  # ... and then the gateway died
    db.dispose()
    settings = Settings(upstreams=[engine_url], admin_token=ADMIN_TOKEN, data_dir=tmp_path)
    with running_gateway(settings) as url:
        gateway = EvalGateway(url)
        after = job_of(gateway, job.id)
        assert after["state"] == "failed" and "restarted" in after["error"]
        fresh = gateway.call("POST", "/admin/retrain", json={"alias": "extract"})
        assert fresh.status_code != 409  # the alias is free again (400 here: no dataset)
