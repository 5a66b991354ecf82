"""Two gateways on one database in front of the real engine: a version retired through one is
unloaded only once the other has no request on it either, and only one of them reconciles."""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from gateway.settings import Settings
from tests.gateway.test_adapters_api import ADMIN, ADMIN_TOKEN, PROMPT, engine_models
from tests.helpers import running_gateway, scrape, wait_until


def register(url: str, name: str, folder: Path) -> str:
    response = httpx.post(
        f"{url}/admin/adapters",
        headers=ADMIN,
        json={"name": name, "path": folder.name},
        timeout=120,
    )
    assert response.status_code == 201, response.text
    return response.json()["served_name"]


def point(url: str, alias: str, served_name: str) -> None:
    response = httpx.put(
        f"{url}/admin/aliases/{alias}",
        headers=ADMIN,
        json={"targets": {served_name: 100}},
        timeout=120,
    )
    assert response.status_code == 200, response.text


class Stream:
    """A streamed chat completion read in a thread: the model named by each chunk."""

    def __init__(self, url: str, body: dict[str, object]) -> None:
        self.models: list[str] = []
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, body))
        self._thread.start()
        assert self._first.wait(60), "the stream never started"

    def _read(self, url: str, body: dict[str, object]) -> None:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: {"):
                    self.models.append(json.loads(line[6:])["model"])
                    self._first.set()

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(timeout=120)


def test_a_drain_waits_for_requests_in_another_gateway(
    engine_url: str, adapter_root: Path, trained_adapters: dict[str, Path], tmp_path: Path
) -> None:
    settings = Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=adapter_root,
        database_url=f"sqlite:///{tmp_path / 'shared.db'}", health_interval=1,
        registry_poll_interval=0.5, eval_sample_rate=0,
    )  # fmt: skip
    with ExitStack() as stack:
        first, second = (stack.enter_context(running_gateway(settings)) for _ in range(2))
        old = register(first, "drain", trained_adapters["v1"])
        new = register(first, "drain", trained_adapters["v2"])
        point(first, "drain", old)

        # A long answer streamed through the second gateway, on the old version.
        body = {
            "model": "drain", "messages": PROMPT, "max_tokens": 48, "stream": True,
            "ignore_eos": True, "temperature": 0,
        }  # fmt: skip
        wait_until(
            lambda: (
                httpx.post(
                    f"{second}/v1/chat/completions",
                    json={**body, "stream": False, "max_tokens": 1},
                    timeout=60,
                )
                .json()
                .get("model")
                == old
            ),
            10,
            "the second gateway to route the alias to the old version",
        )
        stream = Stream(second, body)
        try:
            point(first, "drain", new)  # retires the old version through the first gateway
            # Both gateways have applied the flip by now (0.5 s polls, 0.5 s heartbeats), and
            # the first has nothing in flight: only the second's stream keeps the old loaded.
            time.sleep(3)
            still_streaming = stream.running()
            kept = old in engine_models(engine_url)
        finally:
            stream.join()
        assert still_streaming, "the stream ended too soon to show the drain"
        assert kept, "the old version was unloaded under the other gateway's stream"
        assert len(stream.models) >= 40 and set(stream.models) == {old}  # finished on its version
        wait_until(lambda: old not in engine_models(engine_url), 30, "the old version unloaded")
        assert new in engine_models(engine_url)


def test_one_gateway_gives_a_replica_back_what_it_lost(
    engine_url: str, adapter_root: Path, trained_adapters: dict[str, Path], tmp_path: Path
) -> None:
    """Both gateways' health checks see the aliased version missing; the leader alone (the
    live process that started first) loads it back."""
    settings = Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=adapter_root,
        database_url=f"sqlite:///{tmp_path / 'leader.db'}", health_interval=0.5,
        registry_poll_interval=0.5, eval_sample_rate=0,
    )  # fmt: skip
    with ExitStack() as stack:
        gateways = [stack.enter_context(running_gateway(settings)) for _ in range(2)]
        served = register(gateways[0], "lead", trained_adapters["v1"])
        point(gateways[0], "lead", served)
        time.sleep(1.5)  # the second has adopted the alias

        def reconciled() -> list[float]:
            return [
                scrape(f"{url}/metrics").get(
                    ("tuneloop_adapter_loads_total", frozenset({("reason", "reconcile")})), 0.0
                )
                for url in gateways
            ]

        for _ in range(2):
            httpx.post(f"{engine_url}/v1/unload_lora_adapter", json={"lora_name": served})
            wait_until(lambda: served in engine_models(engine_url), 30, "the version back")
        time.sleep(2)  # four more health checks each: nobody loads it twice
        assert reconciled() == [2.0, 0.0]


def test_capacity_does_not_evict_a_version_another_gateway_is_streaming_on(
    engine_url: str, adapter_root: Path, trained_adapters: dict[str, Path], tmp_path: Path
) -> None:
    """With room for one adapter, registering a second through one gateway would evict the
    first, idle there; the other gateway's stream on it (seen in its heartbeat) keeps it."""
    settings = Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=adapter_root,
        database_url=f"sqlite:///{tmp_path / 'evict.db'}", health_interval=1,
        registry_poll_interval=0.5, eval_sample_rate=0, max_loaded_adapters=1,
    )  # fmt: skip
    with ExitStack() as stack:
        first, second = (stack.enter_context(running_gateway(settings)) for _ in range(2))
        busy = register(first, "evict", trained_adapters["v1"])
        body = {
            "model": busy, "messages": PROMPT, "max_tokens": 96, "stream": True,
            "ignore_eos": True, "temperature": 0,
        }  # fmt: skip
        time.sleep(1.5)  # the second has adopted the version (0.5 s registry polls)
        stream = Stream(second, body)
        try:
            time.sleep(1.5)  # the second's heartbeats now report the stream
            newer = register(first, "evict", trained_adapters["v2"])  # over capacity here
            still_streaming = stream.running()
            held = engine_models(engine_url)
        finally:
            stream.join()
        assert still_streaming, "the stream ended too soon to show the eviction held off"
        assert busy in held and newer in held, "evicted under the other gateway's stream"
        assert len(stream.models) >= 96 and set(stream.models) == {busy}, (
            "the stream ran to its end"
        )
