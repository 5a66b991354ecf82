"""Drift end to end: an alias flipped to an adapter whose answers fail its rubric is caught.

The baseline belongs to the alias and its rubric epoch, so a manual flip keeps it: the prose
adapter's scores are compared with the JSON adapter's and the drift check raises the alarm.
"""

from __future__ import annotations

from pathlib import Path

from tests.gateway.conftest import JSON_RUBRIC, EvalGateway
from tests.helpers import scrape


def drift_state(gateway: EvalGateway, alias: str) -> dict:
    response = gateway.call("POST", "/admin/eval/drift-check")
    assert response.status_code == 200, response.text
    return next(row for row in response.json()["data"] if row["alias"] == alias)


def test_flip_to_a_failing_adapter_raises_drift_then_ack_restarts(
    eval_gateway: EvalGateway, trained_adapters: dict[str, Path], prose_adapter: Path
) -> None:
    gw = eval_gateway
    json_version = gw.register("driftx", trained_adapters["v1"])
    prose_version = gw.register("driftx", prose_adapter)
    gw.point("driftx", json_version)
    assert gw.call("PUT", "/admin/rubrics/driftx", content=JSON_RUBRIC).status_code == 200

    assert drift_state(gw, "driftx")["state"] == "baseline"
    gw.wait_sampled(gw.ask("driftx", 30))  # baseline window (20) and two batches more
    stable = drift_state(gw, "driftx")
    assert stable["state"] == "ok", stable

    gw.point("driftx", prose_version)  # what is served changes; the rubric does not
    gw.wait_sampled(gw.ask("driftx", 20))
    drifted = drift_state(gw, "driftx")
    assert drifted["state"] == "drift", drifted
    assert drifted["version"] == prose_version

    events = gw.call("GET", "/admin/events", params={"subject": "driftx"}).json()["data"]
    changes = [e for e in events if e["kind"] == "drift_state_changed"]
    assert changes[0]["detail"]["state"] == "drift"
    metrics = scrape(f"{gw.url}/metrics")  # one state per alias: the gauge has no version
    assert metrics[("tuneloop_eval_drift_state", frozenset({"alias": "driftx"}.items()))] == 2
    assert not [key for key in metrics if key[0] == "tuneloop_eval_drift_state"
                and "version" in dict(key[1])]  # fmt: skip
    summary = gw.call("GET", "/admin/eval/summary").json()
    rows = {(r["alias"], r["version"]): r for r in summary["data"]}
    assert (
        rows[("driftx", prose_version)]["mean_score"] < rows[("driftx", json_version)]["mean_score"]
    )
    [alias] = [entry for entry in summary["aliases"] if entry["alias"] == "driftx"]
    assert alias["drift_state"] == "drift" and alias["version"] == prose_version
    assert alias["baseline_mean"] is not None
    assert "drift_state" not in rows[("driftx", json_version)]  # the version's own figures

    assert gw.call("POST", "/admin/eval/ack/driftx").status_code == 200
    after = scrape(f"{gw.url}/metrics")  # the gauge agrees with the restarted baseline at once
    assert after[("tuneloop_eval_drift_state", frozenset({"alias": "driftx"}.items()))] == 0
    assert drift_state(gw, "driftx")["state"] == "baseline"
