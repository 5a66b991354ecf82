"""Two real vLLM replicas (CPU, the bundled model) behind one gateway, same run.

1. Throughput: ``wrk`` against both replicas directly (half the connections each, rates
   summed) vs one ``wrk`` through ``tuneloop serve --upstream A,B`` with all the connections.
   Goal: ratio >= 0.97.
2. Adapter loads per 1,000 requests over 8 adapters (one trained here for 2 steps, registered
   under 8 names), ``TUNELOOP_MAX_LOADED_ADAPTERS=4`` per replica: adapter-aware routing with
   ``TUNELOOP_ADAPTER_REPLICAS=1`` (each adapter on one replica, requests follow it) vs
   ``TUNELOOP_ROUTING=round_robin`` (replicas in turn, each loading what it is sent).

Run: ``python bench/overhead.py --replicas`` (or this file). About five minutes here; both
engines share core 0 of this 2-core machine, so absolute rates are low: compare ratios.
Prints ``name: value`` lines; the last is the throughput ratio against the direct baseline.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import run_wrk, serve_args, start, stop, wait_ready, wrk_script  # noqa: E402
from gateway.engine import EmbeddedEngine, free_port  # noqa: E402
from gateway.settings import Settings  # noqa: E402

ADMIN_TOKEN = "bench-admin-token"
ADAPTERS = 8
PROMPT = [{"role": "user", "content": "Name: Ada, age 36, from London."}]


def engines(data_dir: Path) -> list[EmbeddedEngine]:
    started, model = [], Settings().base_model_path
    for index in range(2):
        settings = Settings(
            data_dir=data_dir / f"engine{index}", engine_port=free_port(), model_path=model
        )
        engine = EmbeddedEngine(settings, log_path=data_dir / f"engine{index}.log")
        engine.start()
        started.append(engine)
    for engine in started:
        engine.wait_ready()
    return started


def train_one(adapter_root: Path) -> Path:
    from bench.swap import train  # the same 2-step training the swap bench uses

    return train(adapter_root, "replicas", 1)


def loads(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tuneloop_adapter_loads_total{")
        and ('reason="demand"' in line or 'reason="reconcile"' in line)
    )


async def drive(url: str, models: list[str], requests: int, concurrency: int = 8) -> int:
    """``requests`` chat completions spread evenly over ``models``; returns the failures."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(models[index % len(models)])
    failures = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            model = queue.get_nowait()
            body = {"model": model, "messages": PROMPT, "max_tokens": 1}
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            failures += response.status_code != 200

    async with httpx.AsyncClient(timeout=300) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return failures


def loads_per_1k(
    urls: list[str], adapter: Path, adapter_root: Path, policy: dict[str, str], requests: int
) -> float:
    """Register the adapter under 8 names through a fresh gateway with ``policy``, send
    ``requests`` spread over them, return adapter loads (on demand or to reconcile) per 1k."""
    tag = policy.get("TUNELOOP_ROUTING", "aware").replace("_", "")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "TUNELOOP_ADAPTER_ROOT": str(adapter_root),
        "TUNELOOP_MAX_LOADED_ADAPTERS": "4",
        "TUNELOOP_HEALTH_INTERVAL": "1",
        **policy,
    }
    gateway = start(serve_args(port, ",".join(urls), 1), env)
    names = []
    try:
        wait_ready(f"{url}/readyz", 120)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for index in range(ADAPTERS):
            response = httpx.post(
                f"{url}/admin/adapters",
                json={"name": f"{tag}{index}", "path": adapter.name},
                headers=headers,
                timeout=120,
            )
            response.raise_for_status()
            names.append(response.json()["served_name"])
        before = loads(url)
        failures = asyncio.run(drive(url, names, requests))
        if failures:
            raise SystemExit(f"{failures} requests failed under {policy}")
        return (loads(url) - before) * 1000 / requests
    finally:
        stop(gateway)
        for engine_url in urls:  # leave the replicas bare for the next round
            for name in names:
                httpx.post(f"{engine_url}/v1/unload_lora_adapter", json={"lora_name": name})


def throughput(urls: list[str], seconds: int, connections: int) -> tuple[float, float]:
    """(both replicas directly, summed; through the gateway) in requests per second."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = start(serve_args(port, ",".join(urls), 1), {"TUNELOOP_HEALTH_INTERVAL": "1"})
    # Short answers: at about one request a second per replica here, a run of ``seconds``
    # must finish many requests for the rate to mean anything.
    script = wrk_script(4)
    try:
        wait_ready(f"{url}/readyz", 120)
        run_wrk(url, connections=connections, seconds=5, script=script)  # warm-up

        async def direct() -> list[dict[str, float]]:
            half = max(1, connections // 2)
            return await asyncio.gather(
                *(
                    asyncio.to_thread(run_wrk, u, connections=half, seconds=seconds, script=script)
                    for u in urls
                )
            )

        direct_rps = sum(r["rps"] for r in asyncio.run(direct()))
        gateway_rps = run_wrk(url, connections=connections, seconds=seconds, script=script)["rps"]
    finally:
        stop(gateway)
        script.unlink()
    return direct_rps, gateway_rps


def main(seconds: int = 20, connections: int = 16, requests: int = 200) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-replicas-") as tmp:
        data_dir = Path(tmp)
        adapter_root = data_dir / "adapters"
        adapter = train_one(adapter_root)
        replicas = engines(data_dir)
        try:
            urls = [engine.url for engine in replicas]
            aware = loads_per_1k(
                urls, adapter, adapter_root, {"TUNELOOP_ADAPTER_REPLICAS": "1"}, requests
            )
            rr = loads_per_1k(
                urls, adapter, adapter_root, {"TUNELOOP_ROUTING": "round_robin"}, requests
            )
            direct_rps, gateway_rps = throughput(urls, seconds, connections)
        finally:
            for engine in replicas:
                engine.close()
    print(f"adapter_loads_per_1k_aware: {aware:.1f}")
    print(f"adapter_loads_per_1k_round_robin: {rr:.1f}")
    print(f"direct_two_replicas_c{connections}_rps: {direct_rps:.2f}")
    print(f"gateway_two_replicas_c{connections}_rps: {gateway_rps:.2f}")
    print(f"throughput_ratio_two_replicas: {gateway_rps / direct_rps:.3f}  (target >= 0.97)")


if __name__ == "__main__":
    main()
