"""Scheduled evaluation work: the drift check, retention and the daily quality report.

Drift follows the design's rule: a baseline belongs to an alias and a rubric epoch, is taken
from the alias's first live window under that epoch, and is kept across manual alias flips
(so pointing an alias at a worse adapter shows up as drift). It restarts on a new epoch (a
new baseline row appears by itself), on promotion and on acknowledgement.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eval.drift import Baseline, DriftResult, detect
from eval.store import ScoredItem
from gateway.evaluation.service import EvalService

logger = logging.getLogger("tuneloop.eval")

# Checks whose pass/fail stream gets a Bernoulli CUSUM of its own.
BINARY_CHECKS = frozenset(
    {"json_valid", "json_schema", "regex", "contains", "not_contains", "contains_any"}
)
STATE_VALUE = {"baseline": 0, "ok": 0, "warning": 1, "drift": 2}


@dataclass(frozen=True, slots=True)
class AliasDrift:
    alias: str
    epoch: str
    version: str | None
    result: DriftResult
    previous: str  # the state before this check


OnDrift = Callable[[str], Awaitable[None]]  # an alias entered "drift" (the loop's retrain)


def _streams(items: list[ScoredItem]) -> tuple[list[float], dict[str, list[bool | None]]]:
    """Totals and the pass/fail stream of each binary check, aligned, unscored items skipped."""
    scored = [item for item in items if item.total is not None]
    names = {
        check["name"]
        for item in scored
        for check in item.checks
        if check.get("type") in BINARY_CHECKS
    }
    passes: dict[str, list[bool | None]] = {name: [] for name in names}
    for item in scored:
        by_name = {check["name"]: check.get("passed") for check in item.checks}
        for name in names:
            passes[name].append(by_name.get(name))
    return [item.total for item in scored], passes  # type: ignore[misc]


class EvalJobs:
    def __init__(
        self,
        service: EvalService,
        *,
        reports_dir: Path,
        retention_days: float,
        on_drift: OnDrift | None = None,
    ) -> None:
        self._service = service
        self.on_drift = on_drift
        self._store = service.store
        self._reports = reports_dir
        self._retention = timedelta(days=retention_days)

    # --- drift ---------------------------------------------------------------------------------
    async def drift_check(self) -> list[AliasDrift]:
        """Run the detector for every alias with a rubric; record every change of state."""
        out = []
        for alias, active in self._service.active_rubrics().items():
            drift = await asyncio.to_thread(self._check, alias, active.record.epoch)
            out.append(drift)
            entered = drift.result.state == "drift" and drift.previous != "drift"
            if entered and self.on_drift is not None:
                await self.on_drift(alias)
        return out

    def _check(self, alias: str, epoch: str) -> AliasDrift:
        store, config = self._store, self._service.config.drift
        row = store.baseline(alias, epoch)
        items = store.scores_after(alias, epoch, row["after_score_id"])
        stats = row["stats"]
        if stats is None:
            scores, passes = _streams(items)
            result = detect(scores, config=config, passes=passes)
            if result.baseline is not None:
                scored = [item for item in items if item.total is not None]
                window_end = scored[result.baseline.samples - 1].score_id
                store.update_baseline(
                    row["id"],
                    stats={"baseline": result.baseline.to_dict(), "window_end": window_end},
                )
        else:
            after = [item for item in items if item.score_id > stats["window_end"]]
            scores, passes = _streams(after)
            result = detect(
                scores,
                config=config,
                passes=passes,
                baseline=Baseline.from_dict(stats["baseline"]),
            )
        version = items[-1].version if items else None
        if result.state != row["state"]:
            store.update_baseline(row["id"], state=result.state, statistic=result.statistic)
            self._service.record_event(
                "drift_state_changed", alias, previous=row["state"], state=result.state,
                epoch=epoch, version=version, statistic=result.statistic, reason=result.reason,
            )  # fmt: skip
            log = logger.warning if result.state == "drift" else logger.info
            log(
                "event=drift_state_changed alias=%s version=%s from=%s to=%s reason=%r",
                alias, version, row["state"], result.state, result.reason,
            )  # fmt: skip
        metrics = self._service.metrics  # one state per alias: the baseline is the alias's
        metrics.child(metrics.eval.drift_state, alias).set(STATE_VALUE[result.state])
        return AliasDrift(alias, epoch, version, result, previous=row["state"])

    async def restart_baseline(self, alias: str, *, reason: str) -> None:
        """Promotion or an operator's acknowledgement: only scores from now on count."""
        active = self._service.active_rubrics().get(alias)
        if active is None:
            return
        await asyncio.to_thread(
            self._store.restart_baseline, alias, active.record.epoch, reason=reason
        )
        metrics = self._service.metrics  # the new baseline's state: the gauge agrees at once
        metrics.child(metrics.eval.drift_state, alias).set(STATE_VALUE["baseline"])
        await asyncio.to_thread(
            self._service.record_event, "drift_baseline_restarted", alias, reason=reason,
            epoch=active.record.epoch,
        )  # fmt: skip
        logger.info("event=drift_baseline_restarted alias=%s reason=%s", alias, reason)

    # --- retention -----------------------------------------------------------------------------
    async def retention(self) -> dict[str, int]:
        cutoff = datetime.now(UTC) - self._retention
        removed = await asyncio.to_thread(self._store.delete_before, cutoff)
        logger.info("event=eval_retention cutoff=%s %s", cutoff.isoformat(),
                    " ".join(f"{k}={v}" for k, v in removed.items()))  # fmt: skip
        return removed

    # --- the daily report ----------------------------------------------------------------------
    async def report(self, summary: dict, *, day: datetime | None = None) -> Path:
        """Write the quality report (JSON and Markdown) under the reports dir."""
        day = day or datetime.now(UTC)
        name = f"eval-{day:%Y-%m-%d}"
        return await asyncio.to_thread(self._write_report, name, summary)

    def _write_report(self, name: str, summary: dict) -> Path:
        self._reports.mkdir(parents=True, exist_ok=True)
        path = self._reports / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(path)
        markdown = self._reports / f"{name}.md"
        tmp = markdown.with_suffix(".md.tmp")
        tmp.write_text(report_markdown(name.removeprefix("eval-"), summary))
        tmp.replace(markdown)
        logger.info("event=eval_report_written path=%s", path)
        return path

    def reports(self) -> list[dict[str, object]]:
        if not self._reports.is_dir():
            return []
        return [
            {"name": p.stem, "json": p.name, "markdown": p.with_suffix(".md").name,
             "created_at": datetime.fromtimestamp(p.stat().st_mtime, UTC)}
            for p in sorted(self._reports.glob("eval-*.json"), reverse=True)
        ]  # fmt: skip


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _drift_line(entry: dict) -> str:
    """An alias's drift state, statistic, baseline and epoch, on one line."""
    statistic = entry.get("drift_statistic")
    line = f"drift: **{entry.get('drift_state', 'baseline')}**"
    line += "" if statistic is None else f" (CUSUM {statistic:.2f})"
    if entry.get("baseline_mean") is not None:
        sigma = entry.get("baseline_sigma") or 0.0
        line += f" · baseline {_score(entry['baseline_mean'])} ± {_score(sigma)}"
    return line + f" · epoch {entry.get('epoch') or '-'}"


def report_markdown(day: str, summary: dict) -> str:
    """The report as Markdown: per alias its drift line (the state is the alias's, so it is
    written once), then a table of its versions' own figures."""
    lines = [f"# tuneloop quality report {day}"]
    rows = summary.get("data", [])
    entries = {entry["alias"]: entry for entry in summary.get("aliases", [])}
    for alias in sorted(entries.keys() | {row["alias"] for row in rows}):
        lines += ["", f"## {alias}", "", _drift_line(entries.get(alias, {})), "",
                  "| version | samples | scored | mean score | feedback |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for row in (r for r in rows if r["alias"] == alias):
            lines.append(
                f"| {row['version']} | {row['samples']} | {row['scored']} "
                f"| {_score(row['mean_score'])} | {row['feedback']} |"
            )
    return "\n".join(lines) + "\n"
