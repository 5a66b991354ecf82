"""The loop end to end on the CPU: planted drift -> dataset -> challenger -> gate -> canary ->
promotion, and a useless challenger rejected while the champion keeps serving.

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

TERMINAL = {"failed", "rejected", "promoted", "rolled_back"}


@pytest.fixture(scope="module")
def loop_gateway(
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
    """Live requests to an alias in the background (the shadow and the canary need them)."""

    def __init__(self, gateway: EvalGateway, alias: str) -> None:
        self._gateway, self._alias = gateway, alias
        self._stop = threading.Event()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                self._gateway.ask(self._alias, 2, max_tokens=32)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding: collected
                self.errors.append(repr(exc))
            n += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


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
    # The trainer is niced: under steady traffic on these 2 cores it would crawl, so clients
    # come back once it is trained, for the shadow, the gate and the canary.
    wait_until(
        lambda: job_of(gw, job["id"])["state"] not in ("queued", "running"),
        timeout=900, what="the challenger to be trained", interval=2,
    )  # fmt: skip
    with Traffic(gw, "loopx") as traffic:
        job = wait_job(gw, job["id"])
    assert not traffic.errors, traffic.errors[:3]  # nothing failed while it was swapped in

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
    for kind in ("drift_state_changed", "loop_dataset", "loop_gate", "loop_canary_started",
                 "loop_promoted", "drift_baseline_restarted"):  # fmt: skip
        assert kind in kinds, kinds
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
