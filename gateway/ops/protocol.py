"""Wire models of the operations routes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.upstream.pool import Replica


class UpstreamStatus(BaseModel):
    """One replica as the gateway last saw it."""

    url: str
    ready: bool
    in_flight: int = Field(description="This process's requests on it now.")
    error: str | None = Field(description="Why it is not ready, if it is not.")
    waiting: float | None = Field(
        default=None, description="vLLM's num_requests_waiting at the last health check."
    )
    running: float | None = Field(
        default=None, description="vLLM's num_requests_running at the last health check."
    )
    kv_cache_usage: float | None = Field(
        default=None, description="vLLM's KV-cache use (0-1) at the last health check."
    )
    models: list[str] = Field(description="Base model and adapter versions it serves.")

    @classmethod
    def of(cls, replica: Replica) -> UpstreamStatus:
        load = replica.load
        return cls(
            url=replica.url,
            ready=replica.ready,
            in_flight=replica.in_flight,
            error=replica.last_error,
            waiting=load.waiting if load else None,
            running=load.running if load else None,
            kv_cache_usage=load.kv_use if load else None,
            models=sorted(replica.models),
        )


class Readiness(BaseModel):
    status: str = Field(description="ready when at least one upstream is, else unavailable.")
    upstreams: list[UpstreamStatus]
