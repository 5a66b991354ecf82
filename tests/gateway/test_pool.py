"""The pool's choice and health logic, against real stub replicas over HTTP."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from gateway.engine import free_port
from gateway.exceptions import UpstreamError
from gateway.metrics import GatewayMetrics
from gateway.upstream.load import EngineLoad, parse_engine_load
from gateway.upstream.pool import SLOW_CHECKS_TO_DOWN, Replica, UpstreamPool
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


def test_vllm_queue_decides_before_in_flight_counts() -> None:
    """A replica whose vLLM reports a waiting queue (or a full KV cache) is chosen last, even
    with fewer requests from this gateway; other gateways' running requests count as load."""
    with stub_upstream() as a, stub_upstream() as b:

        async def scenario() -> None:
            pool = await _checked([a.url, b.url])
            try:
                first, second = pool.replicas
                first.load = EngineLoad(waiting=3, running=8)
                second.in_flight = 5
                assert pool.candidates(MODEL) == [second, first]
                first.load = EngineLoad(running=1, kv_use=0.97)  # nearly full: saturated
                assert pool.candidates(MODEL) == [second, first]
                # Not saturated: 6 running elsewhere (none of them ours) outweigh our 5.
                first.load, first.in_flight_at_scrape = EngineLoad(running=6), 0
                assert pool.candidates(MODEL) == [second, first]
                # Once they were our own requests and have since finished, it is free again.
                first.in_flight_at_scrape = 6
                assert pool.candidates(MODEL) == [first, second]
                # Equal load: the emptier KV cache wins.
                second.in_flight, second.load = 0, EngineLoad(kv_use=0.5)
                first.load = EngineLoad(kv_use=0.2, running=0)
                assert pool.candidates(MODEL) == [first, second]
            finally:
                await pool._client.close()

        asyncio.run(scenario())


def test_requests_are_counted_by_what_decided_the_replica() -> None:
    with stub_upstream() as a, stub_upstream() as b:

        async def scenario() -> tuple[dict[str, float], list[str]]:
            metrics = GatewayMetrics()
            pool = UpstreamPool([a.url, b.url], aiohttp.ClientSession(), metrics=metrics)
            await pool.check_all()
            chosen = []
            try:
                pool.replicas[0].load = EngineLoad(waiting=2)
                for _ in range(3):
                    call = await pool.open("/v1/chat/completions", b"{}", model=MODEL, headers={})
                    chosen.append(call.replica.url)
                    await call.read()
                    await call.aclose()
                a.kill()  # refused connections: the request fails over
                pool.replicas[0].load = None
                for _ in range(2):
                    call = await pool.open("/v1/chat/completions", b"{}", model=MODEL, headers={})
                    chosen.append(call.replica.url)
                    await call.read()
                    await call.aclose()
            finally:
                await pool._client.close()
            samples = {
                s.labels["reason"]: s.value
                for family in metrics.registry.collect()
                if family.name == "tuneloop_routing_decisions"
                for s in family.samples
                if s.name.endswith("_total")
            }
            return samples, chosen

        counts, chosen = asyncio.run(scenario())
        assert chosen == [b.url] * 5
        assert counts["saturation"] == 3
        # After the kill: the first pick may be the dead one (failover) or b directly.
        assert counts.get("failover", 0) + counts.get("single", 0) + counts.get("rotation", 0) == 2


def test_a_replica_held_nowhere_is_placed_before_the_request_is_sent() -> None:
    """The placer runs once per request that finds no holder; a model it cannot place is a
    503, not a wait."""
    with stub_upstream() as a:

        async def scenario() -> list[tuple[str, str | None]]:
            pool = await _checked([a.url])
            asked: list[tuple[str, str | None]] = []

            async def placer(model: str, replica: Replica | None) -> bool:
                asked.append((model, replica.url if replica else None))
                if model != "tuned@v1":
                    return False
                pool.note_loaded(pool.replicas[0], model, parent=MODEL)
                return True

            pool.placer = placer
            try:
                call = await pool.open("/v1/chat/completions", b"{}", model="tuned@v1", headers={})
                await call.read()
                await call.aclose()
                call = await pool.open("/v1/chat/completions", b"{}", model="tuned@v1", headers={})
                await call.aclose()
                try:
                    await pool.open("/v1/chat/completions", b"{}", model="unknown", headers={})
                except Exception as exc:  # noqa: BLE001 - the type is asserted below
                    assert type(exc).__name__ == "NoReadyUpstream"
                else:
                    raise AssertionError("an unplaceable model was sent")
            finally:
                await pool._client.close()
            return asked

        assert asyncio.run(scenario()) == [("tuned@v1", None), ("unknown", None)]


def test_round_robin_takes_replicas_in_turn_and_makes_each_serve_the_model() -> None:
    with stub_upstream() as a, stub_upstream() as b:

        async def scenario() -> tuple[list[str], list[str]]:
            pool = await _checked([a.url, b.url])
            pool.policy = "round_robin"
            placed: list[str] = []

            async def placer(model: str, replica: Replica | None) -> bool:
                assert replica is not None
                placed.append(replica.url)
                pool.note_loaded(replica, model, parent=MODEL)
                return True

            pool.placer = placer
            chosen = []
            try:
                for _ in range(4):
                    call = await pool.open("/v1/chat/completions", b"{}", model="t@v1", headers={})
                    chosen.append(call.replica.url)
                    await call.aclose()
            finally:
                await pool._client.close()
            return chosen, placed

        chosen, placed = asyncio.run(scenario())
        assert sorted(chosen) == sorted([a.url, b.url] * 2) and chosen[0] != chosen[1]
        assert sorted(placed) == sorted([a.url, b.url])  # each loaded it once


def test_vllm_gauges_are_read_from_a_prometheus_exposition() -> None:
    text = """# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 4.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 120.0
process_start_time_seconds 1.7e9
"""
    load = parse_engine_load(text)
    assert load == EngineLoad(waiting=3, running=4, kv_use=0.75, started_at=1.7e9)
    assert load.saturated
    assert parse_engine_load("# a server that is not vLLM\nhttp_requests_total 3\n") is None


def test_a_replica_answering_requests_stays_up_through_slow_health_checks() -> None:
    """Under load the gateway's own event loop can make a check time out: while requests get
    answers, that is no reason to take the replica out (it used to, for a whole interval)."""
    with stub_upstream() as stub:

        async def scenario() -> None:
            pool = UpstreamPool(
                [stub.url], aiohttp.ClientSession(), metrics=GatewayMetrics(), health_timeout=1
            )
            try:
                await pool.check_all()
                pool._health_timeout = 1e-6  # every check now times out
                for _ in range(SLOW_CHECKS_TO_DOWN + 1):
                    call = await pool.open("/v1/chat/completions", b"{}", model=MODEL, headers={})
                    await call.read()
                    await call.aclose()
                    await pool.check_all()
                    assert pool.any_ready
                pool.replicas[0].answered_at -= 60  # no answers lately: the timeouts count
                for _ in range(SLOW_CHECKS_TO_DOWN):
                    await pool.check_all()
                assert not pool.any_ready
            finally:
                await pool._client.close()

        asyncio.run(scenario())


class Hangup:
    """A replica that reads each request and closes the connection without answering; with
    ``dies``, it also stops listening at the first one (a process killed mid-request)."""

    def __init__(self, *, dies: bool) -> None:
        self.dies = dies
        self.requests = 0
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"POST"):  # a generation; health checks are hung up on too
            self.requests += 1
            if self.dies and self._server is not None:
                self._server.close()
        writer.transport.abort()  # a reset, no response byte

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def test_a_request_cut_off_before_its_answer_is_sent_again_once() -> None:
    """A replica that dies with the request in hand: sent again, the request finds the dead
    replica refusing connections, which marks it down, and is answered by the other. A replica
    that keeps hanging up gets the request twice, no more (a request that crashes replicas must
    not take down the fleet), and the client gets a 502."""
    with stub_upstream() as stub:

        async def scenario() -> None:
            metrics = GatewayMetrics()
            for dies in (True, False):
                hangup = Hangup(dies=dies)
                await hangup.start()
                pool = UpstreamPool(
                    [f"http://127.0.0.1:{hangup.port}", stub.url],
                    aiohttp.ClientSession(),
                    metrics=metrics,
                )
                try:
                    await pool.check_all()  # the stub answers; the hangup is down...
                    dying, alive = pool.replicas
                    dying.ready, dying.models = True, dict(alive.models)  # ...but taken as up
                    alive.in_flight = 5  # so that the hangup is chosen first
                    if dies:
                        call = await pool.open("/v1/chat/completions", b"{}", model=MODEL,
                                               headers={})  # fmt: skip
                        assert call.replica is alive and call.status == 200
                        await call.aclose()
                        assert not dying.ready, "refused on the second try: marked down"
                    else:
                        try:
                            await pool.open("/v1/chat/completions", b"{}", model=MODEL, headers={})
                        except UpstreamError as exc:
                            assert exc.status_code == 502
                        else:
                            raise AssertionError("a replica that keeps hanging up answered")
                    assert hangup.requests == (1 if dies else 2)
                finally:
                    await hangup.close()
                    await pool._client.close()
            resent = [
                s.value
                for s in metrics.upstream_errors.collect()[0].samples
                if s.name.endswith("_total") and s.labels["kind"] == "disconnect"
            ]
            assert resent == [1.0, 1.0], "each hang-up replica's first cut-off was sent again"

        asyncio.run(scenario())
