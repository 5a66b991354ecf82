"""The deploy kit agrees with the gateway: the Grafana dashboard, the Prometheus rules and the
example scrape config in ``deploy/`` query only metrics the gateway exports, load in the tools
that read them (``promtool``), and the alerts fire when they should and only then.

``promtool`` comes with Debian's ``prometheus`` package; when it is not on PATH the session
fixture installs it (as root), or skips the tests that need it, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics import GatewayMetrics
from tests.helpers import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "tuneloop.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# What a PromQL selector can name: metric names, and recording rules' level:metric:ops names.
_IDENTIFIER = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Grafana's variables, replaced by what Prometheus would see, so promtool can parse the query.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$window": "15m",
    "$alias": ".*",
}


# ---------------------------------------------------------------- what the files hold


def exported_samples() -> dict[str, set[str]]:
    """Family name -> the sample names the gateway's registry can expose for it on /metrics."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "unknown": ("",),
    }
    return {
        family.name: {family.name + suffix for suffix in suffixes[family.type]}
        for family in GatewayMetrics().registry.collect()
    }


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed children included; rows themselves are not panels."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every query the dashboard sends: targets, annotations, variables."""
    dashboard = load_dashboard()
    queries = [
        (f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]
    queries += [
        (f"annotation {annotation['name']!r}", annotation["expr"])
        for annotation in dashboard["annotations"]["list"]
        if "expr" in annotation
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
            queries.append((f"variable {variable['name']!r}", inner.group(1) if inner else text))
    return queries


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in all_rules() if "alert" in rule}


def rule_queries() -> list[tuple[str, str]]:
    return [
        (f"rule {rule.get('alert') or rule.get('record')!r}", rule["expr"]) for rule in all_rules()
    ]


def referenced_series(expr: str) -> set[str]:
    """Names of the series a PromQL expression selects that are ours (tuneloop_* or recorded)."""
    bare = _STRING.sub('""', expr)
    return {
        name
        for name in _IDENTIFIER.findall(bare)
        if name.startswith("tuneloop_") or ":tuneloop_" in name
    }


# ---------------------------------------------------------------- promtool


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("promtool is not on PATH and cannot be installed here (needs root and apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        [
            "apt-get", "install", "-y", "-q", "--no-install-recommends",
            "-o", "DPkg::Lock::Timeout=300", "prometheus",
        ],
    ):  # fmt: skip
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=900, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"installing promtool: {' '.join(command)} timed out")
        if done.returncode != 0:
            pytest.skip(f"installing promtool failed: {' '.join(command)}: {done.stderr[-500:]}")
    found = shutil.which("promtool")
    if not found:
        pytest.skip("Debian's prometheus package installed but promtool is not on PATH")
    return found


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


# ---------------------------------------------------------------- the metrics exist


@pytest.mark.parametrize("source", [dashboard_queries, rule_queries], ids=["dashboard", "rules"])
def test_every_queried_metric_is_one_the_gateway_exports(source: Any) -> None:
    exported = set().union(*exported_samples().values())
    recorded = {rule["record"] for rule in all_rules() if "record" in rule}
    missing = sorted(
        f"{where}: {name}"
        for where, expr in source()
        for name in referenced_series(expr)
        if name not in exported and name not in recorded
    )
    assert not missing, "queried but not exported by gateway.metrics:\n" + "\n".join(missing)


def test_the_series_extraction_sees_what_promql_selects() -> None:
    # The test above is only as good as this: names in strings and recorded names count right.
    expr = (
        'sum by (model) (rate(tuneloop_requests_total{status=~"tuneloop_not_a_metric"}[5m]))'
        " / on (model) model:tuneloop_json_validations_failed:ratio_rate10m"
    )
    assert referenced_series(expr) == {
        "tuneloop_requests_total",
        "model:tuneloop_json_validations_failed:ratio_rate10m",
    }


def test_every_exported_family_is_on_the_dashboard() -> None:
    """A metric nobody can see is a metric nobody reads: a new family needs a panel."""
    shown = set().union(*(referenced_series(expr) for _, expr in dashboard_queries()))
    missing = sorted(family for family, names in exported_samples().items() if not names & shown)
    assert not missing, f"no dashboard panel queries: {missing}"


# ---------------------------------------------------------------- the Grafana dashboard


def test_dashboard_is_importable_with_a_datasource_input_and_an_alias_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36  # Grafana 9.x and later, 10+ reads it as is
    [ds_input] = [i for i in dashboard["__inputs"] if i["name"] == "DS_PROMETHEUS"]
    assert (ds_input["type"], ds_input["pluginId"]) == ("datasource", "prometheus")

    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    alias = variables["alias"]
    assert alias["type"] == "query"
    assert alias["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert alias["query"]["query"].startswith("label_values(")
    assert alias["includeAll"] and alias["multi"] and alias["allValue"] == ".*"


def test_every_panel_has_a_datasource_targets_and_a_place_of_its_own() -> None:
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]] + [
        child["id"] for panel in dashboard["panels"] for child in panel.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "panel ids must be unique"

    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= pos.keys(), panel["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and 0 <= pos["x"] and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"

    seen = list(panels(dashboard))
    assert len(seen) >= 15
    for panel in seen:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel[
            "title"
        ]
        assert panel["targets"], f"{panel['title']!r} has no target"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_drift_panels_name_the_three_states() -> None:
    drift = [
        panel
        for panel in panels(load_dashboard())
        if any("tuneloop_eval_drift_state" in t["expr"] for t in panel["targets"])
    ]
    assert {panel["type"] for panel in drift} >= {"stat", "state-timeline"}
    for panel in drift:
        [mapping] = panel["fieldConfig"]["defaults"]["mappings"]
        texts = {value: option["text"] for value, option in mapping["options"].items()}
        assert texts == {"0": "ok", "1": "warning", "2": "drift"}, panel["title"]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced) as a recording rule."""
    rules = []
    for i, (_, expr) in enumerate(dashboard_queries()):
        for variable, value in _GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run_promtool(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- the Prometheus rules


def test_rules_are_well_formed_with_severity_and_annotations() -> None:
    rules = all_rules()
    assert rules
    for rule in rules:
        assert ("alert" in rule) != ("record" in rule), rule
        assert rule["expr"].strip(), rule
    for name, alert in alerts().items():
        assert re.fullmatch(r"\d+[smh]", alert["for"]), name
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert alert["annotations"]["summary"].strip(), name
        assert alert["annotations"]["description"].strip(), name


def test_the_alerts_operators_route_on_exist() -> None:
    assert {
        "TuneloopEvalDrift",
        "TuneloopEvalDriftWarning",
        "TuneloopJsonViolations",
        "TuneloopHighErrorRate",
        "TuneloopNoReadyUpstream",
        "TuneloopEvalSamplesDropped",
    } <= alerts().keys()


def test_promtool_accepts_the_rules_and_the_config(promtool: str) -> None:
    done = run_promtool(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout + done.stderr  # rules.yml is loaded from it


def test_example_config_scrapes_the_gateway_as_the_rules_expect() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["rules.yml"]
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "tuneloop"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert targets == ["localhost:8000"]
    # Alerts that select on the job name select the job this config scrapes.
    for where, expr in rule_queries():
        for name in re.findall(r'job\s*=\s*"([^"]*)"', expr):
            assert name == "tuneloop", where


# ---------------------------------------------------------------- the alerts fire when they should


def _series(name: str, values: str, *labels: str) -> dict[str, str]:
    """One input series in promtool's notation (``0+9x30``: 0, 9, 18, ... for 30 steps)."""
    return {"series": f"{name}{{{','.join(labels)}}}", "values": values}


def _alert(name: str, at: str, *expected: tuple[dict[str, str], str]) -> dict[str, Any]:
    """An alert_rule_test: at ``at`` exactly ``expected`` (labels, summary) fire."""
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [
            {"exp_labels": labels, "exp_annotations": {"summary": summary}}
            for labels, summary in expected
        ],
    }


EXTRACT = 'alias="extract",version="extract@v3"'
DRIFT = 'alias="extract"'  # the drift gauge is per alias (its baseline is not per version)
CHAT = 'model="extract",endpoint="/v1/chat/completions"'
GW1 = 'job="tuneloop",instance="gw1:8000"'
GW2 = 'job="tuneloop",instance="gw2:8000"'


def _unit_tests() -> list[dict[str, Any]]:
    v3 = "extract@v3"
    return [
        {  # drift: state 2 pages after 5 minutes, state 1 warns after 15
            "interval": "1m",
            "input_series": [
                _series("tuneloop_eval_drift_state", "2x30", DRIFT, GW1),
                _series("tuneloop_eval_drift_state", "2x30", DRIFT, GW2),  # one alert, not two
                _series("tuneloop_eval_drift_state", "1x30", 'alias="chat"'),
                _series("tuneloop_eval_drift_state", "0x30", 'alias="sum"'),
            ],
            "alert_rule_test": [
                _alert("TuneloopEvalDrift", "4m"),
                _alert(
                    "TuneloopEvalDrift",
                    "10m",
                    (
                        {"alias": "extract", "severity": "critical"},
                        "Eval scores of alias extract have drifted",
                    ),
                ),
                _alert("TuneloopEvalDriftWarning", "10m"),
                _alert(
                    "TuneloopEvalDriftWarning",
                    "20m",
                    (
                        {"alias": "chat", "severity": "warning"},
                        "Eval scores of alias chat are leaning away from baseline",
                    ),
                ),
            ],
        },
        {  # JSON violations: 10% pages, 2% does not, one failure of one does not
            "interval": "1m",
            "input_series": [
                _series(
                    "tuneloop_json_validations_total", "0+9x30", 'model="extract",result="valid"'
                ),
                _series(
                    "tuneloop_json_validations_total", "0+1x30", 'model="extract",result="failed"'
                ),
                _series("tuneloop_json_validations_total", "0+49x30", 'model="sum",result="valid"'),
                _series("tuneloop_json_validations_total", "0+1x30", 'model="sum",result="failed"'),
                _series(
                    "tuneloop_json_validations_total", "0x15 1x15", 'model="rare",result="failed"'
                ),
            ],
            "alert_rule_test": [
                _alert(
                    "TuneloopJsonViolations",
                    "25m",
                    (
                        {"model": "extract", "severity": "warning"},
                        "JSON answers of extract fail validation",
                    ),
                ),
            ],
        },
        {  # 5xx: 10% of one version pages; the healthy version does not
            "interval": "1m",
            "input_series": [
                _series(
                    "tuneloop_requests_total", "0+90x30", CHAT, 'version="extract@v3",status="200"'
                ),
                _series(
                    "tuneloop_requests_total", "0+10x30", CHAT, 'version="extract@v3",status="503"'
                ),
                _series(
                    "tuneloop_requests_total", "0+50x30", CHAT, 'version="extract@v2",status="200"'
                ),
                _series(
                    "tuneloop_requests_total", "0+1x30", CHAT, 'version="extract@v2",status="400"'
                ),
            ],
            "alert_rule_test": [
                _alert(
                    "TuneloopHighErrorRate",
                    "20m",
                    (
                        {"model": "extract", "version": v3, "severity": "critical"},
                        "Requests to extract fail with 5xx",
                    ),
                ),
            ],
        },
        {  # upstreams: a gateway with none ready pages; one with a ready upstream does not
            "interval": "1m",
            "input_series": [
                _series("tuneloop_upstream_ready", "0x10", GW1, 'upstream="http://a:8001"'),
                _series("tuneloop_upstream_ready", "1 1 0x8", GW1, 'upstream="http://b:8001"'),
                _series("tuneloop_upstream_ready", "0x10", GW2, 'upstream="http://a:8001"'),
                _series("tuneloop_upstream_ready", "1x10", GW2, 'upstream="http://b:8001"'),
                _series("up", "1x10", GW1),
                _series("up", "0x10", GW2),
            ],
            "alert_rule_test": [
                _alert(
                    "TuneloopNoReadyUpstream",
                    "5m",
                    (
                        {"job": "tuneloop", "instance": "gw1:8000", "severity": "critical"},
                        "No upstream of the tuneloop gateway is ready",
                    ),
                ),
                _alert(
                    "TuneloopGatewayDown",
                    "5m",
                    (
                        {"job": "tuneloop", "instance": "gw2:8000", "severity": "critical"},
                        "Prometheus cannot scrape the tuneloop gateway gw2:8000",
                    ),
                ),
            ],
        },
        {  # no gateway exports the gauge at all
            "interval": "1m",
            "input_series": [_series("up", "1x10", GW1)],
            "alert_rule_test": [
                _alert(
                    "TuneloopNoReadyUpstream",
                    "5m",
                    ({"severity": "critical"}, "No upstream of the tuneloop gateway is ready"),
                ),
            ],
        },
        {  # eval samples lost, dropped from the queue or never queued: one alert a reason
            "interval": "1m",
            "input_series": [
                _series("tuneloop_eval_dropped_total", "0+1x30", 'reason="error"'),
                _series("tuneloop_eval_dropped_total", "0+1x30", 'reason="queue_full"'),
                _series("tuneloop_eval_samples_total", "0+2x30", EXTRACT, 'decision="queue_full"'),
                _series("tuneloop_eval_samples_total", "0+50x30", EXTRACT, 'decision="sampled"'),
            ],
            "alert_rule_test": [
                _alert("TuneloopEvalSamplesDropped", "5m"),
                _alert(
                    "TuneloopEvalSamplesDropped",
                    "25m",
                    (
                        {"reason": "queue_full", "severity": "warning"},
                        "The eval queue is dropping samples (queue_full)",
                    ),
                    (
                        {"reason": "error", "severity": "warning"},
                        "The eval queue is dropping samples (error)",
                    ),
                ),
            ],
        },
        {  # nothing lost, nothing wrong: no alert fires
            "interval": "1m",
            "input_series": [
                _series("tuneloop_eval_samples_total", "0+50x30", EXTRACT, 'decision="sampled"'),
                _series("tuneloop_eval_drift_state", "0x30", DRIFT),
                _series("tuneloop_upstream_ready", "1x30", GW1, 'upstream="http://a:8001"'),
                _series("up", "1x30", GW1),
            ],
            "alert_rule_test": [_alert(name, "25m") for name in sorted(alerts())],
        },
        {  # the recorded eval score mean is the mean of the scores
            "interval": "1m",
            "input_series": [
                _series("tuneloop_eval_score_sum", "0+0.75x120", EXTRACT),
                _series("tuneloop_eval_score_count", "0+1x120", EXTRACT),
            ],
            "promql_expr_test": [
                {
                    "expr": "alias_version:tuneloop_eval_score:mean1h",
                    "eval_time": "90m",
                    "exp_samples": [
                        {
                            "labels": 'alias_version:tuneloop_eval_score:mean1h{alias="extract",'
                            f'version="{v3}"}}',
                            "value": 0.75,
                        }
                    ],
                }
            ],
        },
    ]


def test_alerts_fire_when_they_should_and_only_then(promtool: str, tmp_path: Path) -> None:
    # promtool compares every annotation: keep the summaries (their templates are checked
    # here), drop the long descriptions (promtool check rules parses their templates).
    rules = load_rules()
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.get("annotations", {}).pop("description", None)
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(yaml.safe_dump(rules))
    tests_path = tmp_path / "rules_test.yml"
    tests_path.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules_path)],
                "evaluation_interval": "1m",
                "tests": _unit_tests(),
            }
        )
    )
    done = run_promtool(promtool, "test", "rules", str(tests_path))
    assert done.returncode == 0, done.stdout + done.stderr
