"""The pool's own choice logic (unit level; the integration tests cover real replicas)."""

from __future__ import annotations

import asyncio

import httpx

from gateway.metrics import GatewayMetrics
from gateway.upstream.pool import UpstreamPool


def _pool(handler) -> UpstreamPool:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return UpstreamPool(["http://a", "http://b", "http://c"], client, metrics=GatewayMetrics())


def _healthy(models_by_host: dict[str, list[str]]):
    def handler(request: httpx.Request) -> httpx.Response:
        models = models_by_host.get(request.url.host)
        if models is None:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        return httpx.Response(200, json={"data": [{"id": m} for m in models]})

    return handler


def test_least_in_flight_wins_and_only_replicas_serving_the_model() -> None:
    pool = _pool(_healthy({"a": ["m"], "b": ["m", "other"], "c": ["other"]}))
    asyncio.run(pool.check_all())
    a, b, c = pool.replicas
    a.in_flight, b.in_flight = 3, 1
    assert pool.candidates("m")[0] is b
    assert c not in pool.candidates("m")
    assert pool.candidates("other")[0] is c  # 0 in flight beats b's 1
    assert set(pool.known_models()) == {"m", "other"}


def test_unreachable_replica_is_not_ready_and_recovers_on_next_check() -> None:
    hosts: dict[str, list[str]] = {"a": ["m"], "b": ["m"]}
    pool = _pool(_healthy(hosts))
    asyncio.run(pool.check_all())
    assert [r.ready for r in pool.replicas] == [True, True, False]
    hosts["c"] = ["m"]
    asyncio.run(pool.check_all())
    assert all(r.ready for r in pool.replicas)
    assert pool.replicas[2].last_error is None
