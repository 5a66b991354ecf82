"""Two real vLLM replicas behind one gateway: adapter placement, routing, on-demand loads, and
a replica killed under load.

The session's engine is one replica; this module starts a second ``EmbeddedEngine`` on the same
bundled model (about a minute on these cores), and kills and restarts that one only.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from gateway.engine import EmbeddedEngine, free_port
from gateway.settings import Settings
from tests.gateway.test_adapters_api import ADMIN, ADMIN_TOKEN, PROMPT, engine_models
from tests.helpers import running_gateway, scrape, wait_until


@dataclass
class SecondReplica:
    engine: EmbeddedEngine

    @property
    def url(self) -> str:
        return self.engine.url

    def kill(self) -> None:
        """kill -9 of the server and its engine core (its own process group)."""
        assert self.engine.pid is not None
        os.killpg(self.engine.pid, signal.SIGKILL)
        self.engine.stop()  # reaps it; the log stays open for the restart

    def restart(self) -> None:
        self.engine.start()
        self.engine.wait_ready()


@pytest.fixture(scope="module")
def second_replica(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecondReplica]:
    data_dir = tmp_path_factory.mktemp("replica2")
    settings = Settings(
        data_dir=data_dir, engine_port=free_port(), model_path=base_settings.base_model_path
    )
    engine = EmbeddedEngine(settings, log_path=data_dir / "engine.log")
    engine.start()
    try:
        engine.wait_ready()
        yield SecondReplica(engine)
    finally:
        engine.stop()


def gateway_settings(urls: list[str], root: Path, db: Path, **extra: object) -> Settings:
    return Settings(
        upstreams=urls, admin_token=ADMIN_TOKEN, adapter_root=root,
        database_url=f"sqlite:///{db}", health_interval=1, **extra,
    )  # fmt: skip


def admin(url: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", headers=ADMIN, timeout=120, **kwargs)


def register(url: str, name: str, folder: Path) -> str:
    response = admin(url, "POST", "/admin/adapters", json={"name": name, "path": folder.name})
    assert response.status_code == 201, response.text
    return response.json()["served_name"]


def counter(url: str, name: str, **labels: str) -> float:
    return scrape(f"{url}/metrics").get((name, frozenset(labels.items())), 0.0)


def chat(url: str, model: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=2, temperature=0
    )
    return reply.model


@pytest.fixture(scope="module")
def engines(engine_url: str, second_replica: SecondReplica) -> list[str]:
    return [engine_url, second_replica.url]


def test_each_version_lives_on_one_replica_and_its_requests_go_there(
    engines: list[str], adapter_root: Path, trained_adapters: dict[str, Path], tmp_path: Path
) -> None:
    settings = gateway_settings(engines, adapter_root, tmp_path / "spread.db", adapter_replicas=1)
    with running_gateway(settings) as url:
        first = register(url, "spread", trained_adapters["v1"])
        second = register(url, "spread", trained_adapters["v2"])
        holders = {
            name: [e for e in engines if name in engine_models(e)] for name in (first, second)
        }
        # One replica each, and not the same one: placement fills the emptier replica.
        assert len(holders[first]) == 1 and len(holders[second]) == 1
        assert holders[first] != holders[second]
        # Every request reaches the holder (the other replica would answer 404).
        for _ in range(4):
            assert chat(url, first) == first
            assert chat(url, second) == second
        assert counter(url, "tuneloop_routing_decisions_total", reason="single") >= 8
        assert counter(url, "tuneloop_adapter_loads_total", reason="register") == 2
        # vLLM's own queue figures, scraped from each replica, are what ties are broken on.
        upstreams = httpx.get(f"{url}/readyz").json()["upstreams"]
        assert [u["url"] for u in upstreams] == engines
        for upstream in upstreams:
            assert upstream["waiting"] is not None and upstream["running"] is not None
            assert 0 <= upstream["kv_cache_usage"] <= 1
        assert {m for u in upstreams for m in u["models"]} >= {first, second}

        # Gone from its replica behind the gateway's back (another process evicted it): the
        # next health check notices, and concurrent requests load it back once.
        (holder,) = holders[first]
        httpx.post(f"{holder}/v1/unload_lora_adapter", json={"lora_name": first}).raise_for_status()
        time.sleep(2.5)  # two health checks
        with ThreadPoolExecutor(6) as pool:
            answered = list(pool.map(lambda _: chat(url, first), range(6)))
        assert answered == [first] * 6
        assert counter(url, "tuneloop_adapter_loads_total", reason="demand") == 1
        assert sum(first in engine_models(e) for e in engines) == 1


def test_a_replica_killed_under_load_loses_only_what_it_was_running(
    engines: list[str],
    second_replica: SecondReplica,
    adapter_root: Path,
    trained_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    settings = gateway_settings(engines, adapter_root, tmp_path / "kill.db")
    with running_gateway(settings) as url:
        served = register(url, "both", trained_adapters["v1"])
        response = admin(url, "PUT", "/admin/aliases/both", json={"targets": {served: 100}})
        assert response.status_code == 200, response.text
        assert all(served in engine_models(e) for e in engines)  # default: every replica

        results: list[tuple[float, float, bool]] = []  # (sent, done, ok)
        stop = threading.Event()

        def client_loop() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    ok = chat(url, "both") == served
                except openai.APIError:
                    ok = False
                results.append((sent, time.monotonic(), ok))

        threads = [threading.Thread(target=client_loop) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: sum(ok for *_, ok in results) >= 12, 120, "requests served on both")
            killed_at = time.monotonic()
            second_replica.kill()
            wait_until(
                lambda: sum(sent > killed_at + 1 for sent, *_ in results) >= 12,
                120,
                "requests after the kill",
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)

        before = [ok for sent, done, ok in results if done < killed_at]
        during = [ok for sent, done, ok in results if sent <= killed_at < done]
        after = [ok for sent, done, ok in results if sent > killed_at]
        assert all(before)
        # Only requests already running on the killed replica may fail: at most its share of
        # the six in flight; everything sent after the kill is answered by the other one.
        assert len(during) - sum(during) <= 6
        assert after and all(after), f"{after.count(False)} of {len(after)} failed after the kill"

        second_replica.restart()
        wait_until(lambda: served in engine_models(second_replica.url), 120, "adapter back")
        assert counter(url, "tuneloop_adapter_loads_total", reason="reconcile") >= 1
        assert chat(url, "both") == served
