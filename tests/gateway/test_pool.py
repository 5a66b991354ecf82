"""The pool's choice and health logic, against real stub replicas over HTTP."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from gateway.engine import free_port
from gateway.metrics import GatewayMetrics
from gateway.upstream.pool import SLOW_CHECKS_TO_DOWN, UpstreamPool
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


def test_a_stalled_replica_goes_down_after_a_run_of_slow_checks() -> None:
    """One slow health check (a busy engine) does not take a replica out; three do."""
    with stub_upstream() as stub:

        async def scenario() -> None:
            pool = UpstreamPool(
                [stub.url], aiohttp.ClientSession(), metrics=GatewayMetrics(), health_timeout=0.3
            )
            try:
                await pool.check_all()
                stub.process.send_signal(signal.SIGSTOP)  # accepts connections, answers none
                for _ in range(SLOW_CHECKS_TO_DOWN - 1):
                    await pool.check_all()
                    assert pool.any_ready
                await pool.check_all()
                assert not pool.any_ready and "timed out" in (pool.replicas[0].last_error or "")
                stub.process.send_signal(signal.SIGCONT)
                await pool.check_all()
                assert pool.any_ready
            finally:
                stub.process.send_signal(signal.SIGCONT)
                await pool._client.close()

        asyncio.run(scenario())
