"""Continuous evaluation through the real gateway, engine and adapters, sampling at 100%."""

from __future__ import annotations

import json

import httpx

from tests.gateway.conftest import SYSTEM, EvalGateway
from tests.helpers import MODEL, scrape

PII_TEXT = (
    "Marta is 41 years old and lives in Porto. Reach her at marta.silva@example.org, "
    "card 4111 1111 1111 1111."
)


def test_sampled_request_is_stored_scrubbed_and_scored(eval_gateway: EvalGateway) -> None:
    raw = eval_gateway.client().chat.completions.with_raw_response.create(
        model="evalx",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PII_TEXT}],
        max_tokens=32,
        temperature=0,
    )
    request_id = raw.headers["x-request-id"]
    eval_gateway.wait_sampled([request_id])
    [sample] = eval_gateway.samples(request_id=request_id)

    stored = json.dumps(sample)
    assert "marta.silva@example.org" not in stored and "4111 1111 1111 1111" not in stored
    assert sample["request"]["messages"][1]["content"] == (
        "Marta is 41 years old and lives in Porto. Reach her at <EMAIL>, card <CARD>."
    )
    assert sample["alias"] == "evalx" and sample["version"] == "evalx@v1"
    answer = raw.parse().choices[0].message.content
    assert sample["response"] == answer.replace("marta.silva@example.org", "<EMAIL>")
    assert sample["score"] is not None and sample["epoch"]
    assert {c["name"] for c in sample["checks"]} == {"json_valid", "json_schema", "length"}
    assert sample["latency_ms"] > 0 and sample["completion_tokens"] > 0


def test_streamed_answer_is_sampled_as_its_transcript(eval_gateway: EvalGateway) -> None:
    stream = eval_gateway.client().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=12,
        stream=True,
    )
    request_id = stream.headers["x-request-id"]
    text = "".join(
        chunk.choices[0].delta.content or "" for chunk in stream.parse() if chunk.choices
    )
    eval_gateway.wait_sampled([request_id])
    [sample] = eval_gateway.samples(request_id=request_id)
    assert sample["response"] == text and text
    assert sample["score"] is None  # no rubric for the base model: stored, not scored


def test_a_failing_check_lowers_the_score(eval_gateway: EvalGateway) -> None:
    rubric = {
        "checks": [
            {"type": "length", "max": 100000},
            {"type": "contains", "name": "says_banana", "value": "zzz-banana-zzz"},
        ]
    }
    assert eval_gateway.call("PUT", f"/admin/rubrics/{MODEL}", json=rubric).status_code == 200
    [request_id] = eval_gateway.ask(MODEL, 1, max_tokens=8)
    eval_gateway.wait_sampled([request_id])
    [sample] = eval_gateway.samples(request_id=request_id)
    by_name = {c["name"]: c for c in sample["checks"]}
    assert by_name["length"]["passed"] is True and by_name["says_banana"]["passed"] is False
    assert sample["score"] == 0.5
    metrics = scrape(f"{eval_gateway.url}/metrics")
    key = frozenset({"alias": MODEL, "version": MODEL, "check": "says_banana"}.items())
    assert metrics[("tuneloop_eval_check_failures_total", key)] >= 1


def test_feedback_lands_beside_its_sample_scrubbed(eval_gateway: EvalGateway) -> None:
    [request_id] = eval_gateway.ask("evalx", 1)
    eval_gateway.wait_sampled([request_id])
    body = {
        "request_id": request_id,
        "score": 0.2,
        "label": "wrong_city",
        "correction": '{"name": "Marta", "age": 41, "city": "Porto"} (ask bob@example.com)',
    }
    response = httpx.post(f"{eval_gateway.url}/v1/feedback", json=body, timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["sampled"] is True
    [sample] = eval_gateway.samples(request_id=request_id)
    [feedback] = sample["feedback"]
    assert feedback["score"] == 0.2 and feedback["label"] == "wrong_city"
    assert "bob@example.com" not in feedback["correction"] and "<EMAIL>" in feedback["correction"]
    assert eval_gateway.samples(has_feedback=True, alias="evalx")[0]["request_id"] == request_id


def test_feedback_errors_are_clear_and_store_nothing(eval_gateway: EvalGateway) -> None:
    url = f"{eval_gateway.url}/v1/feedback"
    unknown = httpx.post(url, json={"request_id": "req-never-seen", "score": 1}, timeout=30)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "request_id"
    [request_id] = eval_gateway.ask(MODEL, 1, max_tokens=4)
    bad = httpx.post(url, json={"request_id": request_id, "score": 1.5}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    typo = httpx.post(url, json={"request_id": request_id, "scroe": 1}, timeout=30)
    assert typo.status_code == 400
    eval_gateway.wait_sampled([request_id])
    assert eval_gateway.samples(request_id=request_id)[0]["feedback"] == []


def test_rubrics_are_versioned_and_bad_ones_refused_with_the_path(
    eval_gateway: EvalGateway,
) -> None:
    before = eval_gateway.call("GET", "/admin/rubrics/evalx").json()
    bad = eval_gateway.call(
        "PUT",
        "/admin/rubrics/evalx",
        content="checks:\n  - type: json_valid\n  - type: regex\n    pattern: '(['\n",
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["param"] == "checks[1].pattern"
    unknown = eval_gateway.call("PUT", "/admin/rubrics/evalx", json={"checks": [{"type": "vibe"}]})
    assert unknown.status_code == 400 and "checks[0]" in unknown.json()["error"]["param"]
    garbage = eval_gateway.call("PUT", "/admin/rubrics/evalx", content="checks: [oops")
    assert garbage.status_code == 400
    after = eval_gateway.call("GET", "/admin/rubrics/evalx").json()
    assert after == before  # nothing half-written: still the same version and epoch
    missing = eval_gateway.call("GET", "/admin/rubrics/nobody")
    assert missing.status_code == 404


def test_summary_counts_what_the_traffic_produced(eval_gateway: EvalGateway) -> None:
    summary = eval_gateway.call("GET", "/admin/eval/summary").json()
    rows = {(r["alias"], r["version"]): r for r in summary["data"]}
    row = rows[("evalx", "evalx@v1")]
    assert row["samples"] >= 6 and row["scored"] >= 6
    assert 0 <= row["mean_score"] <= 1 and set(row["check_pass_rates"]) >= {"json_valid"}
    assert summary["decisions"]["sampled"] >= 8
    # drift is the alias's: one entry per alias, none on the version rows
    aliases = [entry["alias"] for entry in summary["aliases"]]
    assert aliases == sorted(set(aliases)) and {"evalx", MODEL} <= set(aliases)
    drift_fields = {"drift_state", "drift_statistic", "baseline_mean", "baseline_sigma"}
    assert all(drift_fields.isdisjoint(r) for r in summary["data"]), summary["data"]
    evalx = next(entry for entry in summary["aliases"] if entry["alias"] == "evalx")
    assert evalx["epoch"] == row["epoch"] and evalx["version"] == "evalx@v1"
    metrics = scrape(f"{eval_gateway.url}/metrics")
    sampled = frozenset({"alias": "evalx", "version": "evalx@v1", "decision": "sampled"}.items())
    assert metrics[("tuneloop_eval_samples_total", sampled)] >= 6
    assert (
        metrics[
            (
                "tuneloop_eval_score_count",
                frozenset({"alias": "evalx", "version": "evalx@v1"}.items()),
            )
        ]
        >= 6
    )


def test_reports_are_written_and_listed(eval_gateway: EvalGateway) -> None:
    assert eval_gateway.call("POST", "/admin/eval/reports").status_code == 200
    [report] = eval_gateway.call("GET", "/admin/eval/reports").json()["data"]
    markdown = eval_gateway.call("GET", f"/admin/eval/reports/{report['markdown']}")
    assert markdown.status_code == 200
    section = markdown.text.split("## evalx\n", 1)[1].split("\n## ", 1)[0]  # the alias's part
    assert "| evalx@v1 |" in section and "drift" in section.lower()
    escape = eval_gateway.call("GET", "/admin/eval/reports/..%2Ftuneloop.db")
    assert escape.status_code == 404
