"""Soak: a fixed number of mixed requests against ``tuneloop serve`` on the real engine.

The mix: plain chat, streamed chat, JSON-schema chat, chat grounded in a collection, text
completions, and clients that give up mid-answer (a short timeout). After a warm-up the
gateway's own process (not its vLLM child) is measured; at the end it must hold no more memory
than then (RSS growth < 5%), nothing in flight, and no more file descriptors.

Prints ``name: value`` lines; the last line is the RSS ratio against the same process after
the warm-up, measured in the same run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from overhead import MODEL, start, stop, wait_ready  # noqa: E402

from gateway.engine import free_port  # noqa: E402

ADMIN_TOKEN = "soak-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
FACTS = [
    ("lisbon", "The Lisbon office moved to Rua Augusta 12 in March."),
    ("oslo", "The Oslo office is closed on Fridays during summer."),
    ("kyoto", "The Kyoto office hosts the yearly design review."),
]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Name a city, request {i}."}]


def one(client: httpx.Client, i: int) -> str:
    """One request of the mix; its outcome as a short label."""
    kind = i % 6
    chat = {"model": MODEL, "messages": _messages(i), "max_tokens": 8, "temperature": 0}
    try:
        if kind == 0:
            response = client.post("/v1/chat/completions", json=chat)
        elif kind == 1:
            with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as r:
                for _ in r.iter_lines():
                    pass
                response = r
        elif kind == 2:
            fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
            response = client.post(
                "/v1/chat/completions", json={**chat, "max_tokens": 24, "response_format": fmt}
            )
        elif kind == 3:
            grounded = {**chat, "retrieval": {"collection": "offices", "top_k": 2}}
            response = client.post("/v1/chat/completions", json=grounded)
        elif kind == 4:
            body = {"model": MODEL, "prompt": f"City {i}:", "max_tokens": 8}
            response = client.post("/v1/completions", json=body)
        else:  # a client that gives up: the gateway must drop the work and keep nothing
            long = {**chat, "max_tokens": 200, "ignore_eos": True}
            client.post("/v1/chat/completions", json=long, timeout=0.5)
            return "finished_before_timeout"
    except httpx.TimeoutException:
        return "gave_up"
    return str(response.status_code)


def drive(url: str, count: int, concurrency: int, offset: int) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    with (
        httpx.Client(base_url=url, timeout=300) as client,
        concurrent.futures.ThreadPoolExecutor(concurrency) as pool,
    ):
        for label in pool.map(lambda i: one(client, i), range(offset, offset + count)):
            outcomes[label] = outcomes.get(label, 0) + 1
    return outcomes


def settle(url: str, process: psutil.Process) -> tuple[float, int, float]:
    """RSS (MiB), open fds and in-flight once the gateway is idle again."""
    deadline = time.monotonic() + 60
    in_flight = -1.0
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        in_flight = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tuneloop_requests_in_flight{")
        )
        if in_flight == 0:
            break
        time.sleep(0.5)
    gc.collect()
    time.sleep(3)  # let the eval consumer drain its queue
    return process.memory_info().rss / 2**20, process.num_fds(), in_flight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="measured requests")
    parser.add_argument("--warmup", type=int, default=120, help="requests before measuring")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--upstream", help="a running vLLM server to use (default: the embedded engine)"
    )
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    upstream = ["--upstream", args.upstream] if args.upstream else []
    serve = start(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), *upstream],
        env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_ACCESS_LOG": "false"},
    )
    try:
        wait_ready(f"{url}/readyz", 600)
        admin = httpx.Client(base_url=url, headers=ADMIN, timeout=120)
        admin.post("/admin/collections", json={"name": "offices"}).raise_for_status()
        docs = [{"id": doc_id, "text": text} for doc_id, text in FACTS]
        admin.post("/admin/collections/offices/documents", json={"documents": docs})
        gateway = psutil.Process(serve.pid)

        started = time.monotonic()
        warm = drive(url, args.warmup, args.concurrency, 0)
        rss_warm, fds_warm, _ = settle(url, gateway)
        outcomes = drive(url, args.requests, args.concurrency, args.warmup)
        rss_end, fds_end, in_flight = settle(url, gateway)
        elapsed = time.monotonic() - started
    finally:
        stop(serve)
    counts = {k: warm.get(k, 0) + outcomes.get(k, 0) for k in set(warm) | set(outcomes)}
    failed = sum(v for k, v in counts.items() if k not in {"200", "gave_up"})
    mix = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"requests: {args.warmup + args.requests}  ({mix})")
    print(f"seconds: {elapsed:.0f}")
    print(f"failed_requests: {failed}  (target 0)")
    print(f"in_flight_at_end: {in_flight:.0f}  (target 0)")
    print(f"fds_after_warmup: {fds_warm}")
    print(f"fds_at_end: {fds_end}  (target <= after warm-up + 2)")
    print(f"rss_after_warmup_mib: {rss_warm:.1f}")
    print(f"rss_at_end_mib: {rss_end:.1f}")
    print(f"rss_growth_ratio_vs_warmup: {rss_end / rss_warm:.3f}  (target < 1.05)")


if __name__ == "__main__":
    main()
