"""Hot swap under load: an alias flipped N times while clients stream through it.

Starts ``tuneloop serve`` (embedded vLLM on the bundled model) with two adapter versions
(trained here for 2 steps unless ``--adapters A B`` is given), points alias ``bench`` at v1,
runs ``--clients`` streaming clients for the whole run, and flips the alias between v1 and v2
``--flips`` times. Each flip that targets an unloaded version includes its reload.

Prints ``name: value`` lines: failed requests (target 0), adapter load latency, flip latency
(the PUT minus the load it waited for; target < 50 ms), and last the ratio of request latency
during flips to request latency before them, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.engine import free_port  # noqa: E402
from gateway.settings import Settings  # noqa: E402

TOKEN = "bench-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
PROMPT = [{"role": "user", "content": "Ana is 30 and lives in Rome."}]


def train(root: Path, label: str, seed: int) -> Path:
    out = root / f"bench-{label}"
    subprocess.run(
        [sys.executable, "-m", "gateway", "train", "--data", "examples/extract.jsonl",
         "--out", str(out), "--max-steps", "2", "--eval-every", "2", "--seed", str(seed)],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return out


async def client_loop(
    http: httpx.AsyncClient, url: str, stop: asyncio.Event, log: list[tuple[float, float, bool]]
) -> None:
    body = {"model": "bench", "messages": PROMPT, "max_tokens": 8, "stream": True}
    while not stop.is_set():
        started = time.monotonic()
        ok = False
        try:
            async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                text = "".join([chunk async for chunk in response.aiter_text()])
                ok = response.status_code == 200 and '"error"' not in text and "[DONE]" in text
        except httpx.HTTPError:
            ok = False
        log.append((started, time.monotonic() - started, ok))


async def run(url: str, clients: int, flips: int, warmup: float, gap: float) -> None:
    async with httpx.AsyncClient(timeout=120) as http:
        put = await http.put(f"{url}/admin/aliases/bench", headers=ADMIN,
                             json={"targets": {"bench@v1": 100}})  # fmt: skip
        put.raise_for_status()
        log: list[tuple[float, float, bool]] = []
        stop = asyncio.Event()
        tasks = [asyncio.create_task(client_loop(http, url, stop, log)) for _ in range(clients)]
        await asyncio.sleep(warmup)
        flips_started = time.monotonic()
        put_ms: list[float] = []
        for index in range(flips):
            target = "bench@v2" if index % 2 == 0 else "bench@v1"
            started = time.perf_counter()
            response = await http.put(f"{url}/admin/aliases/bench", headers=ADMIN,
                                      json={"targets": {target: 100}})  # fmt: skip
            put_ms.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            await asyncio.sleep(gap)
        stop.set()
        await asyncio.gather(*tasks)
        metrics = (await http.get(f"{url}/metrics")).text

    def mean_ms(name: str) -> float:
        values = {}
        for line in metrics.splitlines():
            if line.startswith(f"{name}_sum ") or line.startswith(f"{name}_count "):
                key, value = line.split()
                values[key.rsplit("_", 1)[1]] = float(value)
        return 1000 * values["sum"] / values["count"] if values.get("count") else float("nan")

    before = [d for s, d, ok in log if s < flips_started and ok]
    during = [d for s, d, ok in log if s >= flips_started and ok]
    failed = sum(1 for _, _, ok in log if not ok)
    print(f"requests: {len(log)}")
    print(f"failed_requests: {failed}  (target 0)")
    print(f"adapter_load_mean_ms: {mean_ms('tuneloop_adapter_load_seconds'):.1f}")
    print(f"alias_put_p50_ms: {statistics.median(put_ms):.1f}  (includes reloads)")
    print(f"flip_mean_ms_after_load: {mean_ms('tuneloop_alias_flip_seconds'):.1f}  (target < 50)")
    print(f"request_p50_s_before: {statistics.median(before):.3f}")
    print(f"request_p50_s_during: {statistics.median(during):.3f}")
    ratio = statistics.median(during) / statistics.median(before)
    print(f"latency_ratio_during_vs_before: {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", nargs=2, type=Path, help="two adapter folders")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--flips", type=int, default=6)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before flipping")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between flips")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "adapters"
        root.mkdir()
        sources = args.adapters or [train(root, "v1", 1), train(root, "v2", 2)]
        port = free_port()
        env = {**os.environ, "TUNELOOP_PORT": str(port), "TUNELOOP_ADMIN_TOKEN": TOKEN,
               "TUNELOOP_ADAPTER_ROOT": "/", "TUNELOOP_DATABASE_URL": f"sqlite:///{tmp}/b.db",
               "TUNELOOP_ACCESS_LOG": "false", "TUNELOOP_DATA_DIR": tmp,
               "TUNELOOP_MODEL_PATH": str(Settings().base_model_path)}  # fmt: skip
        serve = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            for source in sources:
                response = httpx.post(
                    f"{url}/admin/adapters",
                    headers=ADMIN,
                    timeout=120,
                    json={"name": "bench", "path": str(source.resolve())},
                )
                response.raise_for_status()  # fmt: skip
            asyncio.run(run(url, args.clients, args.flips, args.warmup, args.gap))
        finally:
            serve.terminate()
            serve.wait(60)


if __name__ == "__main__":
    main()
