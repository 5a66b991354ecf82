"""Renders the dashboard's pages from wire models (Jinja2 with autoescape; no FastAPI here).

Everything a sample holds is user text, so every value reaches HTML through Jinja2's
autoescape; the only markup inserted as-is is the SVG that ``charts`` builds (escaped there by
ElementTree).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from gateway.dashboard.charts import score_chart, served_label, traffic_chart
from gateway.dashboard.samples_view import detail_pairs, pretty_json, request_preview, split_request
from gateway.evaluation.protocol import (
    AliasDriftSummary,
    DashboardData,
    EvalSummary,
    LoopJob,
    SampleRecord,
    ScoreSeries,
    VersionSummary,
)

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STYLESHEET = PACKAGE_DIR / "static" / "dashboard.css"
DASH = "—"
DRIFTING = ("warning", "drift")
"""Drift states the page counts as drifting (the stat box turns red)."""


class DashboardPages:
    """The dashboard's HTML pages and its stylesheet, built once per app."""

    def __init__(self, *, refresh_s: int = 30) -> None:
        self.refresh_s = refresh_s
        self.stylesheet = STYLESHEET.read_bytes()
        self.stylesheet_version = hashlib.sha256(self.stylesheet).hexdigest()[:12]
        self._env = Environment(
            loader=FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(
            ms=format_ms,
            score=format_score,
            pct=format_pct,
            num=format_int,
            when=format_when,
            clock=format_clock,
            grade=score_grade,
            served=served_label,
            seconds=format_seconds,
            job_tone=job_tone,
        )
        self._env.globals["css_version"] = self.stylesheet_version

    def dashboard(self, data: DashboardData, *, alias: str | None = None) -> str:
        """The main page: traffic, quality, score charts, the loop, events and samples."""
        total = sum(row.requests for row in data.traffic)
        errors = sum(row.errors for row in data.traffic)
        quality = quality_groups(data.summary)
        check_names = sorted({name for s in data.summary.data for name in s.check_pass_rates})
        drift = {group.drift.alias: group.drift for group in quality}
        by_alias = _series_by_alias(data.scores)
        # Two charts a row: the traffic chart takes a whole row when the score charts pair up.
        wide = len(by_alias) >= 2 and len(by_alias) % 2 == 0
        context = {
            "refresh_s": self.refresh_s,
            "data": data,
            "alias": alias,
            "aliases": _aliases(data),
            "traffic": sorted(data.traffic, key=lambda r: (r.model, r.version)),
            "quality": quality,
            "check_names": check_names,
            "traffic_chart": Markup(
                traffic_chart(
                    data.traffic, title="Requests per minute", width=1120 if wide else 560
                )
            ),
            "traffic_wide": wide,
            "score_charts": [
                (
                    name,
                    Markup(
                        score_chart(series, title=f"Mean score of {name}", drift=drift.get(name))
                    ),
                    name in drift and drift[name].baseline_mean is not None,
                )
                for name, series in by_alias.items()
            ],
            "stats": {
                "requests": total,
                "error_rate": errors / total if total else None,
                "scored": sum(s.scored for s in data.summary.data),
                "queue_depth": data.summary.queue_depth,
                "drifting": [g.drift.alias for g in quality if g.drift.drift_state in DRIFTING],
                "feedback": sum(s.feedback for s in data.summary.data),
            },
            "loop": loop_history(data.jobs),
            "events": [(event, detail_pairs(event.detail)) for event in data.events],
            "samples": [(s, request_preview(s.request)) for s in data.samples.data],
        }
        return self._env.get_template("dashboard.html").render(context)

    def sample(self, record: SampleRecord) -> str:
        """One sample: its request, response, per-check breakdown and feedback."""
        messages, extra = split_request(record.request)
        context = {
            "refresh_s": None,
            "s": record,
            "response": pretty_json(record.response),
            "messages": messages,
            "request_extra": json.dumps(extra, indent=2, ensure_ascii=False) if extra else None,
            "feedback": [detail_pairs(item, limit=4000) for item in record.feedback],
        }
        return self._env.get_template("sample.html").render(context)

    def login(self, *, error: str | None = None, next_path: str = "/dashboard") -> str:
        """The sign-in form (a password field for the admin token)."""
        context = {"refresh_s": None, "error": error, "next_path": next_path}
        return self._env.get_template("login.html").render(context)


@dataclass(frozen=True)
class AliasQuality:
    """One alias in the quality table: its drift state and baseline, shown once, and its
    versions' own figures in the rows under it."""

    drift: AliasDriftSummary
    versions: list[VersionSummary]


def quality_groups(summary: EvalSummary) -> list[AliasQuality]:
    """The summary's aliases (sorted), each with its version rows (sorted by version)."""
    rows: dict[str, list[VersionSummary]] = defaultdict(list)
    for row in sorted(summary.data, key=lambda r: (r.alias, r.version)):
        rows[row.alias].append(row)
    entries = {entry.alias: entry for entry in summary.aliases}
    return [
        AliasQuality(entries.get(alias) or AliasDriftSummary(alias=alias), rows.get(alias, []))
        for alias in sorted(entries.keys() | rows.keys())
    ]


def _aliases(data: DashboardData) -> list[str]:
    names = {s.alias for s in data.summary.data} | {s.alias for s in data.summary.aliases}
    names |= {s.alias for s in data.scores}
    return sorted(names | {row.model for row in data.traffic})


def _series_by_alias(series: list[ScoreSeries]) -> dict[str, list[ScoreSeries]]:
    grouped: dict[str, list[ScoreSeries]] = defaultdict(list)
    for item in sorted(series, key=lambda s: (s.alias, s.version)):
        grouped[item.alias].append(item)
    return dict(grouped)


# --- formatting (also Jinja2 filters) ---------------------------------------------------------
def format_ms(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def format_score(value: float | None) -> str:
    return DASH if value is None else f"{value:.3f}"


def format_pct(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value * 100:.1f}%" if 0 < value < 0.1 else f"{value * 100:.0f}%"


def format_int(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def format_when(at: datetime) -> str:
    return _utc(at).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_clock(at: datetime) -> str:
    return _utc(at).strftime("%H:%M:%S")


def format_seconds(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"


def score_grade(value: float | None) -> str:
    """A CSS class for a 0..1 score or pass rate."""
    if value is None:
        return "none"
    return "good" if value >= 0.8 else "fair" if value >= 0.5 else "poor"


# --- the retraining loop ------------------------------------------------------------------------
JOB_TONES = {
    "promoted": "good", "rejected": "fair", "rolled_back": "fair", "cancelled": "fair",
    "failed": "poor",
}  # fmt: skip
"""The badge colour of a job's state; any other (an active state) is "active"."""


@dataclass(frozen=True)
class LoopStep:
    """One step a retrain job reached, as plain text (the template escapes it)."""

    name: str
    value: str
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None
    tone: str = ""


def _number(value: Any) -> float | None:
    """A JSON value as a float, or None (the job's detail and verdict are free-form dicts)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _signed(value: Any) -> str:
    number = _number(value)
    return DASH if number is None else f"{number:+.3f}"


def job_tone(state: str) -> str:
    return JOB_TONES.get(state, "active")


def loop_steps(job: LoopJob) -> list[LoopStep]:
    """The steps ``job`` reached: trigger → dataset → training → gate → canary."""
    detail, verdict = job.detail, job.verdict
    steps = [LoopStep("trigger", job.trigger)]
    if job.dataset_hash is not None or "dataset" in detail:
        short = job.dataset_hash[:8] if job.dataset_hash else DASH
        steps.append(LoopStep("dataset", short, seconds=_number(detail.get("dataset"))))
    progress = detail.get("progress") if isinstance(detail.get("progress"), dict) else {}
    training_now = bool(progress) and job_tone(job.state) == "active"
    if job.served_name is not None or "training" in detail or training_now:
        steps.append(_training_step(detail, progress))
    if verdict is not None or "gate" in detail:
        steps.append(_gate_step(verdict or {}, _number(detail.get("gate"))))
    numbers = detail.get("canary_numbers")
    running = detail.get("canary_progress")
    if isinstance(numbers, dict) or "canary" in detail or isinstance(running, dict):
        if not isinstance(numbers, dict):  # still collecting: how far it has come
            running = running if isinstance(running, dict) else {}
            samples, needed = _number(running.get("samples")), _number(running.get("needed"))
            value = f"{samples or 0:.0f} of {needed:.0f} samples" if needed else DASH
            steps.append(LoopStep("canary", value, ["collecting live scores"]))
            return steps
        samples = _number(numbers.get("canary_samples"))
        value = f"{samples:.0f} samples" if samples is not None else DASH
        note = (
            f"canary {format_score(_number(numbers.get('canary_mean')))} vs "
            f"champion {format_score(_number(numbers.get('champion_mean')))}"
        )
        steps.append(LoopStep("canary", value, [note], _number(detail.get("canary"))))
    return steps


def _training_step(detail: dict[str, Any], progress: dict[str, Any]) -> LoopStep:
    """Training's time once done; while it runs, the step it is on and its loss."""
    seconds = _number(detail.get("training"))
    step, total, loss = (_number(progress.get(k)) for k in ("step", "total", "loss"))
    notes = []
    if step is not None:
        notes.append(f"step {step:.0f}" + (f" of {total:.0f}" if total else "")
                     + (f" · loss {loss:.4f}" if loss is not None else ""))  # fmt: skip
    value = format_seconds(seconds) if seconds is not None else "training"
    return LoopStep("training", value, notes, seconds)


def _gate_step(verdict: dict[str, Any], seconds: float | None) -> LoopStep:
    if not verdict:
        return LoopStep("gate", DASH, seconds=seconds)
    value = (
        f"champion {format_score(_number(verdict.get('mean_champion')))} vs "
        f"challenger {format_score(_number(verdict.get('mean_challenger')))}"
    )
    n = _number(verdict.get("n"))
    notes = [
        f"Δ {_signed(verdict.get('mean_diff'))} · 95% CI "
        f"[{_signed(verdict.get('ci_low'))}, {_signed(verdict.get('ci_high'))}]"
        + (f" · n={n:.0f}" if n is not None else "")
    ]
    rates = verdict.get("check_pass_rates")
    for check, pair in rates.items() if isinstance(rates, dict) else ():
        if isinstance(pair, dict):
            champion, challenger = _number(pair.get("champion")), _number(pair.get("challenger"))
            notes.append(f"{check} {format_pct(champion)} → {format_pct(challenger)}")
    shadow, live = _number(verdict.get("shadow_mean")), _number(verdict.get("champion_live_mean"))
    if shadow is not None or live is not None:
        notes.append(f"shadow {format_score(shadow)} vs live {format_score(live)}")
    promote = verdict.get("promote") is True
    notes.append("promote" if promote else str(verdict.get("reason") or "rejected"))
    return LoopStep("gate", value, notes, seconds, tone="good" if promote else "fair")


def final_note(job: LoopJob, steps: list[LoopStep]) -> str:
    """Where a failed job stopped, or that an active one is still going."""
    if job.state == "failed":
        return f"after {steps[-1].name}" if len(steps) > 1 else "before the dataset"
    return "in progress" if job_tone(job.state) == "active" else ""


LoopEntry = tuple[LoopJob, list[LoopStep], str]


def loop_history(jobs: list[LoopJob]) -> list[tuple[str, list[LoopEntry]]]:
    """Jobs grouped by alias (sorted), newest first within each: (job, its steps, final note)."""
    grouped: dict[str, list[LoopJob]] = defaultdict(list)
    for job in jobs:
        grouped[job.alias].append(job)
    history = []
    for alias in sorted(grouped):
        newest = sorted(grouped[alias], key=lambda j: (_utc(j.created_at), j.id), reverse=True)
        entries = []
        for job in newest:
            steps = loop_steps(job)
            entries.append((job, steps, final_note(job, steps)))
        history.append((alias, entries))
    return history
