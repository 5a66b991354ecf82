"""The pool's choice and health logic, against real stub replicas over HTTP."""

from __future__ import annotations

import asyncio

import aiohttp

from gateway.engine import free_port
from gateway.metrics import GatewayMetrics
from gateway.upstream.pool import UpstreamPool
from tests.helpers import MODEL, stub_upstream


async def _checked(urls: list[str]) -> UpstreamPool:
    pool = UpstreamPool(urls, aiohttp.ClientSession(), metrics=GatewayMetrics())
    await pool.check_all()
    return pool


def test_least_in_flight_wins_and_rotation_breaks_ties() -> None:
    with stub_upstream() as a, stub_upstream() as b:

        async def scenario() -> None:
            pool = await _checked([a.url, b.url])
            try:
                first, second = pool.replicas
                first.in_flight = 2
                assert [r.url for r in pool.candidates(MODEL)] == [b.url, a.url]
                first.in_flight = 0
                picks = [pool.candidates(MODEL)[0].url for _ in range(4)]
                assert sorted(picks) == sorted([a.url, b.url] * 2)
                assert pool.candidates("not-served") == []
            finally:
                await pool._client.close()

        asyncio.run(scenario())


def test_unreachable_replica_is_not_ready_until_a_check_passes() -> None:
    port = free_port()

    async def first_check() -> UpstreamPool:
        return await _checked([f"http://127.0.0.1:{port}"])

    async def scenario() -> None:
        pool = await first_check()
        try:
            assert not pool.any_ready and pool.replicas[0].last_error
            with stub_upstream(port=port):
                await pool.check_all()
                assert pool.any_ready and pool.replicas[0].last_error is None
                assert list(pool.known_models()) == [MODEL]
        finally:
            await pool._client.close()

    asyncio.run(scenario())
