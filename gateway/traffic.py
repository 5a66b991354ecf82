"""Recent traffic per model and version, for the dashboard: a bounded window in memory.

An observer (see ``gateway.observers``): each finished client request appends one tuple to a
bounded deque of its (model, version); the dashboard reads percentiles and per-minute counts
from them. Keys are names the gateway serves, so the set stays bounded like metric labels.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from gateway.evaluation.protocol import TrafficRow
from gateway.observers import FinishedRequest


@dataclass(frozen=True, slots=True)
class _Hit:
    at: float
    seconds: float
    status: int
    prompt_tokens: int
    completion_tokens: int
    json_failed: bool


class TrafficWindow:
    """The last ``per_model`` requests of each (model, version), at most ``minutes`` old."""

    def __init__(self, *, per_model: int = 5000, minutes: int = 30) -> None:
        self._per_model = per_model
        self._minutes = minutes
        self._hits: dict[tuple[str, str], deque[_Hit]] = {}

    def __call__(self, done: FinishedRequest) -> None:
        ctx = done.ctx
        key = (ctx.model, ctx.version)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self._per_model)
        hits.append(
            _Hit(
                time.time(),
                ctx.elapsed(),
                ctx.status,
                ctx.prompt_tokens or 0,
                ctx.completion_tokens or 0,
                ctx.json_result == "failed",
            )
        )

    def rows(self, *, now: float | None = None) -> list[TrafficRow]:
        now = time.time() if now is None else now
        since = now - self._minutes * 60
        rows = []
        for (model, version), hits in sorted(self._hits.items()):
            recent = [hit for hit in list(hits) if hit.at >= since]
            if not recent:
                continue
            millis = np.array([hit.seconds * 1000 for hit in recent])
            per_minute = [0] * self._minutes
            for hit in recent:
                per_minute[min(self._minutes - 1, int((hit.at - since) // 60))] += 1
            rows.append(
                TrafficRow(
                    model=model,
                    version=version,
                    requests=len(recent),
                    errors=sum(hit.status >= 500 for hit in recent),
                    p50_ms=round(float(np.percentile(millis, 50)), 1),
                    p95_ms=round(float(np.percentile(millis, 95)), 1),
                    prompt_tokens=sum(hit.prompt_tokens for hit in recent),
                    completion_tokens=sum(hit.completion_tokens for hit in recent),
                    json_violations=sum(hit.json_failed for hit in recent),
                    per_minute=per_minute,
                )
            )
        return rows
