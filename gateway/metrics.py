"""Prometheus metrics of one gateway app, on a registry of its own (no process globals).

Label sets stay bounded: ``model`` (what the client called: base model, alias or version) and
``version`` (the served name that answered) are always names the gateway serves or
``UNKNOWN_MODEL``;
``upstream`` is one of the configured base URLs; ``status`` is an HTTP status code.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

UNKNOWN_MODEL = "_unknown"

# Seconds. Generation on CPU can take tens of seconds; the gateway's own overhead is sub-ms.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class GatewayMetrics:
    """The gateway's metric families, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tuneloop_requests",
            "Inference requests answered, by model, endpoint and HTTP status.",
            ["model", "version", "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tuneloop_request_duration_seconds",
            "Time from request arrival to the last byte of the answer.",
            ["model", "version", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tuneloop_time_to_first_token_seconds",
            "Streaming requests: time from arrival to the first generated chunk.",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tuneloop_prompt_tokens",
            "Prompt tokens, as the upstream counted them.",
            ["model", "version"],
            registry=r,
        )
        self.completion_tokens = Counter(
            "tuneloop_completion_tokens",
            "Generated tokens, as the upstream counted them.",
            ["model", "version"],
            registry=r,
        )
        self.in_flight = Gauge(
            "tuneloop_requests_in_flight",
            "Inference requests being answered now.",
            ["endpoint"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "tuneloop_upstream_errors",
            "Failures talking to an upstream (connect, timeout, protocol, health).",
            ["upstream", "kind"],
            registry=r,
        )
        self.upstream_ready = Gauge(
            "tuneloop_upstream_ready",
            "1 when the upstream passed its last health check.",
            ["upstream"],
            registry=r,
        )
        self.overhead = Histogram(
            "tuneloop_gateway_overhead_seconds",
            "Time spent in the gateway itself before the response starts, upstream time excluded.",
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )

        self.adapter_load = Histogram(
            "tuneloop_adapter_load_seconds",
            "Time for one replica to load one adapter version.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.json_validations = Counter(
            "tuneloop_json_validations",
            "Responses checked against a JSON response_format, by result "
            "(valid, repaired, failed).",
            ["model", "result"],
            registry=r,
        )
        self.json_repairs = Counter(
            "tuneloop_json_repair_attempts",
            "Requests sent again because the output failed JSON validation.",
            ["model"],
            registry=r,
        )
        self.search_latency = Histogram(
            "tuneloop_retrieval_search_seconds",
            "Retrieval search time, query embedding included.",
            ["collection"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.ingested_chunks = Counter(
            "tuneloop_retrieval_ingested_chunks",
            "Chunks written by ingests.",
            ["collection"],
            registry=r,
        )
        self.collection_chunks = Gauge(
            "tuneloop_retrieval_collection_chunks",
            "Chunks a collection holds.",
            ["collection"],
            registry=r,
        )
        self.adapter_loads = Counter(
            "tuneloop_adapter_loads",
            "Adapter versions loaded on a replica, by why (register, alias, demand, reconcile).",
            ["reason"],
            registry=r,
        )
        self.adapter_evictions = Counter(
            "tuneloop_adapter_evictions",
            "Idle adapter versions unloaded from a replica to stay within its capacity.",
            registry=r,
        )
        self.routing_decisions = Counter(
            "tuneloop_routing_decisions",
            "Replica choices, by what decided: single (one replica serves the model), "
            "saturation, load, kv_cache, rotation, capacity, placed (loaded on demand), "
            "failover, round_robin.",
            ["reason"],
            registry=r,
        )
        self.alias_flip = Histogram(
            "tuneloop_alias_flip_seconds",
            "From an alias's targets being loaded to requests routing to them (registry write "
            "and the in-memory swap).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.alias_swaps = Counter(
            "tuneloop_alias_swaps", "Alias flips and rollbacks.", ["alias"], registry=r
        )
        self.eval = EvalMetrics(r)
        self.loop_jobs = Counter(
            "tuneloop_loop_jobs",
            "Retrain jobs reaching a state (queued, running, succeeded, gating, canary, "
            "promoted, rejected, rolled_back, failed, cancelled).",
            ["alias", "state"],
            registry=r,
        )
        self.loop_train_step = Gauge(
            "tuneloop_loop_train_step",
            "The optimizer step the alias's training job has reached (0 when none trains).",
            ["alias"],
            registry=r,
        )
        self.loop_train_loss = Gauge(
            "tuneloop_loop_train_loss",
            "Training loss at the last step of the alias's training job.",
            ["alias"],
            registry=r,
        )
        self.shadow_requests = Counter(
            "tuneloop_loop_shadow_requests",
            "Requests mirrored to a challenger awaiting its verdict, by result (scored, failed, "
            "skipped); never counted as client requests.",
            ["alias", "result"],
            registry=r,
        )
        self.admission_rejected = Counter(
            "tuneloop_admission_rejected",
            "Generation requests refused with 429 by admission control, by reason (queue_full, "
            "queue_timeout, replica_full).",
            ["reason"],
            registry=r,
        )
        self.admission_waiting = Gauge(
            "tuneloop_admission_waiting",
            "Generation requests waiting for a slot (bounded by TUNELOOP_MAX_QUEUE).",
            registry=r,
        )
        self.engine_restarts = Counter(
            "tuneloop_engine_restarts",
            "Restarts of the embedded vLLM engine, by reason (exited, unhealthy).",
            ["reason"],
            registry=r,
        )
        # Managed API keys, labelled by the key's name (never the key): bounded by the keys an
        # admin created.
        self.key_requests = Counter(
            "tuneloop_key_requests",
            "Inference requests made with a managed API key, by key name and HTTP status "
            "(429s from its own limits included).",
            ["key", "status"],
            registry=r,
        )
        self.key_tokens = Counter(
            "tuneloop_key_tokens",
            "Tokens used by a managed API key, by kind (prompt, completion).",
            ["key", "kind"],
            registry=r,
        )
        self.key_rate_limited = Counter(
            "tuneloop_key_rate_limited",
            "Requests refused with 429 because a managed key was over a limit (requests, tokens).",
            ["key", "limit"],
            registry=r,
        )
        # Labelled children, cached: ``labels()`` takes a lock and hashes on every call. The
        # keys are bounded because the label values are.
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, family: Counter | Gauge | Histogram, *labels: str) -> Any:
        key = (family._name, *labels)  # noqa: SLF001 - the family's registered name
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def in_flight_for(self, endpoint: str) -> Gauge:
        return self._child(self.in_flight, endpoint)

    def record_request(
        self,
        *,
        model: str,
        version: str,
        endpoint: str,
        status: int,
        duration: float,
        ttft: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        json_result: str | None = None,
        json_repairs: int = 0,
    ) -> None:
        """Everything one finished inference request contributes."""
        self._child(self.requests, model, version, endpoint, str(status)).inc()
        self._child(self.latency, model, version, endpoint).observe(duration)
        if ttft is not None:
            self._child(self.ttft, model, endpoint).observe(ttft)
        if isinstance(prompt_tokens, int) and prompt_tokens > 0:
            self._child(self.prompt_tokens, model, version).inc(prompt_tokens)
        if isinstance(completion_tokens, int) and completion_tokens > 0:
            self._child(self.completion_tokens, model, version).inc(completion_tokens)
        if json_result is not None:
            self._child(self.json_validations, model, json_result).inc()
        if json_repairs:
            self._child(self.json_repairs, model).inc(json_repairs)

    def route(self, reason: str) -> None:
        """One replica choice and the reason that decided it (a bounded set)."""
        self._child(self.routing_decisions, reason).inc()

    def child(self, family: Counter | Gauge | Histogram, *labels: str) -> Any:
        """A cached labelled child of any family on this registry."""
        return self._child(family, *labels)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class EvalMetrics:
    """Continuous evaluation's families. ``alias`` is what the client called (alias or base
    model), ``version`` the served name: both bounded like ``model``/``version`` above."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.samples = Counter(
            "tuneloop_eval_samples",
            "Sampling decisions by reason (sampled, not_sampled, queue_full, judge_budget).",
            ["alias", "version", "decision"],
            registry=r,
        )
        self.score = Histogram(
            "tuneloop_eval_score",
            "Rubric totals (0..1) of scored samples.",
            ["alias", "version"],
            buckets=_SCORE_BUCKETS,
            registry=r,
        )
        self.check_failures = Counter(
            "tuneloop_eval_check_failures",
            "Scored samples that failed a rubric check.",
            ["alias", "version", "check"],
            registry=r,
        )
        self.drift_state = Gauge(
            "tuneloop_eval_drift_state",
            "Drift state of an alias's scores (its baseline is per alias and rubric epoch, not "
            "per version): 0 ok (or baseline), 1 warning, 2 drift.",
            ["alias"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "tuneloop_eval_queue_depth", "Samples waiting to be scrubbed and scored.", registry=r
        )
        self.judge_seconds = Histogram(
            "tuneloop_eval_judge_seconds",
            "Time of one llm_judge call.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.judge_tokens = Counter(
            "tuneloop_eval_judge_tokens", "Tokens spent by llm_judge checks.", ["alias"], registry=r
        )
        self.feedback = Counter(
            "tuneloop_eval_feedback",
            "Feedback received, by what it carried (score, label, correction, comment) and "
            "'unsampled' when its request was not sampled.",
            ["alias", "kind"],
            registry=r,
        )
        self.dropped = Counter(
            "tuneloop_eval_dropped",
            "Samples lost after the decision, by reason (queue_full, error, shutdown).",
            ["reason"],
            registry=r,
        )
