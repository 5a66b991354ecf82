"""How busy a vLLM replica says it is: the few gauges of its ``/metrics`` that routing uses.

The pool scrapes each replica's Prometheus text with every health check. Only the lines of the
gauges below are handed to ``prometheus_client``'s parser (a vLLM exposition is mostly
histogram buckets the router never reads); values of one gauge are summed over its label sets
(one per engine when vLLM runs data parallel), except KV-cache use, where the fullest counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["EngineLoad", "SATURATED_KV_USE", "parse_engine_load"]

SATURATED_KV_USE = 0.95
"""KV-cache use from which a replica counts as saturated, like one with a waiting queue."""

_WAITING = "vllm:num_requests_waiting"
_RUNNING = "vllm:num_requests_running"
_KV_USE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # v1 name, then v0's
_STARTED = "process_start_time_seconds"
_WANTED = (_WAITING, _RUNNING, *_KV_USE, _STARTED)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """One scrape of a replica: its queue, its running batch, its KV-cache use (0-1)."""

    waiting: float = 0.0
    running: float = 0.0
    kv_use: float = 0.0
    started_at: float | None = None  # the server process's start (a restart changes it)

    @property
    def saturated(self) -> bool:
        """Requests are queueing there, or its KV cache is nearly full."""
        return self.waiting > 0 or self.kv_use >= SATURATED_KV_USE


def parse_engine_load(text: str) -> EngineLoad | None:
    """The routing gauges of a Prometheus exposition; ``None`` when it has none of vLLM's."""
    lines = "\n".join(line for line in text.splitlines() if line.startswith(_WANTED))
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(lines + "\n"):
        for sample in family.samples:
            if sample.name not in _WANTED or not math.isfinite(sample.value):
                continue
            if sample.name in _KV_USE:
                sums[sample.name] = max(sums.get(sample.name, 0.0), sample.value)
            else:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    if _WAITING not in sums and _RUNNING not in sums:
        return None
    kv_use = next((sums[name] for name in _KV_USE if name in sums), 0.0)
    return EngineLoad(
        waiting=sums.get(_WAITING, 0.0),
        running=sums.get(_RUNNING, 0.0),
        kv_use=min(kv_use, 1.0),
        started_at=sums.get(_STARTED),
    )
