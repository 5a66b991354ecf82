"""The loop's wall time on these cores: planted drift -> promoted adapter serving.

Starts ``tuneloop serve`` (embedded vLLM, bundled model) with sampling at 100%, trains a JSON
adapter and a prose adapter with ``tuneloop train``, imports the alias's dataset, serves the
JSON one with a JSON rubric, builds the drift baseline, then flips the alias to the prose
adapter (planted drift) while clients keep sending requests, and times each step until the
loop's challenger serves all the traffic: detection, dataset, training, gate, canary, swap.

``--clients N --rate R``: N client threads, each sending R requests a second (0: back to back,
saturating). Before the flip they run for ``--warmup`` seconds on the healthy adapter; their
latency then is the baseline of the latency while the challenger trains and is gated.

Prints ``name: value`` lines; the last is the loop's total against a baseline measured in the
same run: one plain ``tuneloop train`` of the same size (the irreducible training cost).
Targets (issue #16): under 10 minutes with one client at 1 request/s, under 15 with two
saturating clients; 0 failed requests; p50/p99 during training and gate within 2.0x of before.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.engine import free_port  # noqa: E402

TOKEN = "bench-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
SYSTEM = "Extract the person's name, age and city from the text. Answer with JSON only."
PEOPLE = [("Marta", 41, "Porto"), ("Jonas", 35, "Oslo"), ("Aiko", 29, "Kyoto"),
          ("Lena", 52, "Graz"), ("Omar", 38, "Cairo"), ("Sofia", 27, "Lima")]  # fmt: skip
RUBRIC = "checks:\n  - type: json_valid\n  - type: json_schema\n    schema: {type: object, required: [name, age, city]}\n"  # noqa: E501
STEPS = 10


def train(data: Path, out: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gateway", "train", "--data", str(data), "--out", str(out),
         "--max-steps", str(STEPS), "--eval-every", "2"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def quantiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``values`` (nan when there are fewer than two)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1, help="client threads (default 1)")
    parser.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="requests a second per client; 0: back to back (default 1)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds of client traffic before the flip (default 30)",
    )
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tuneloop-bench-loop-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TUNELOOP_DATA_DIR": str(data_dir), "TUNELOOP_PORT": str(port),
           "TUNELOOP_ADMIN_TOKEN": TOKEN, "TUNELOOP_EVAL_SAMPLE_RATE": "1",
           "TUNELOOP_EVAL_DRIFT_INTERVAL": "5", "TUNELOOP_EVAL_DRIFT_BASELINE_SAMPLES": "20",
           "TUNELOOP_EVAL_DRIFT_BATCH_SIZE": "5", "TUNELOOP_LOOP_TRAIN_STEPS": str(STEPS),
           "TUNELOOP_LOOP_CANARY_SHARE": "50", "TUNELOOP_LOOP_CANARY_SAMPLES": "6",
           "TUNELOOP_ACCESS_LOG": "false"}  # fmt: skip
    from gateway.settings import Settings

    env["TUNELOOP_MODEL_PATH"] = str(Settings().base_model_path)
    adapters = data_dir / "adapters"
    train_alone = train(ROOT / "examples" / "extract.jsonl", adapters / "json", env)
    train(ROOT / "examples" / "extract_prose.jsonl", adapters / "prose", env)
    serve = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    failures: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        admin = httpx.Client(base_url=url, headers=ADMIN, timeout=300)
        admin.post(
            "/admin/datasets/bench?source=extract.jsonl",
            content=(ROOT / "examples" / "extract.jsonl").read_bytes(),
        ).raise_for_status()
        json_v = admin.post("/admin/adapters", json={"name": "bench", "path": "json"}).json()
        prose_v = admin.post("/admin/adapters", json={"name": "bench", "path": "prose"}).json()
        admin.put("/admin/aliases/bench", json={"targets": {json_v["served_name"]: 100}})
        admin.put("/admin/rubrics/bench", content=RUBRIC).raise_for_status()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)

        latencies: list[tuple[float, float]] = []  # (when it started, seconds)

        def ask(i: int) -> None:
            name, age, city = PEOPLE[i % len(PEOPLE)]
            user = f"{name} is {age} years old and lives in {city}."
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
            started = time.perf_counter()
            try:
                client.chat.completions.create(
                    model="bench", max_tokens=32, temperature=0, messages=messages
                )
                latencies.append((started, time.perf_counter() - started))
            except openai.APIError as exc:
                failures.append(repr(exc))

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(ask, range(30)))  # the baseline window
        stop = threading.Event()

        def clients() -> None:
            i = 0
            while not stop.is_set():
                began = time.perf_counter()
                ask(i)
                i += 1
                if args.rate > 0:
                    stop.wait(max(0.0, 1 / args.rate - (time.perf_counter() - began)))

        threads = [threading.Thread(target=clients) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        warm = time.perf_counter()
        time.sleep(args.warmup)
        planted = time.perf_counter()
        admin.put("/admin/aliases/bench", json={"targets": {prose_v["served_name"]: 100}})
        job, seen = None, {}  # state -> when it was first seen
        while job is None or job["state"] not in {"failed", "cancelled", "rejected", "promoted",
                                                  "rolled_back"}:  # fmt: skip
            time.sleep(2)
            jobs = admin.get("/admin/jobs", params={"alias": "bench"}).json()["data"]
            if jobs and job is None:
                detected = time.perf_counter() - planted
            job = jobs[0] if jobs else None
            if job is not None:
                seen.setdefault(job["state"], time.perf_counter())
        total = time.perf_counter() - planted
        stop.set()
        metrics = httpx.get(f"{url}/metrics").text
        flip_total = sum(float(line.split()[-1]) for line in metrics.splitlines()
                         if line.startswith("tuneloop_alias_flip_seconds_sum"))  # fmt: skip
        flips = sum(float(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith("tuneloop_alias_flip_seconds_count"))  # fmt: skip
        for thread in threads:
            thread.join()
    finally:
        serve.terminate()
        serve.wait(60)
    timings = job["detail"]
    before = [d for t, d in latencies if warm <= t < planted]
    busy_from = seen.get("running", planted)
    busy_to = seen.get("canary", seen.get(job["state"], time.perf_counter()))
    during = [d for t, d in latencies if busy_from <= t < busy_to]
    (b50, b99), (d50, d99) = quantiles(before), quantiles(during)
    print(f"clients: {args.clients} at {'back to back' if args.rate <= 0 else f'{args.rate}/s'}")
    print(f"job_state: {job['state']}")
    print(f"detection_s: {detected:.1f}")
    for step in ("dataset", "training", "gate", "canary"):
        print(f"{step}_s: {timings.get(step, float('nan')):.1f}")
    print(f"swap_ms_mean: {1000 * flip_total / max(flips, 1):.1f}  ({flips:.0f} alias flips)")
    print(f"failed_requests: {len(failures)}  (target 0)")
    print(f"latency_before_p50_p99_ms: {1000 * b50:.0f} {1000 * b99:.0f}  ({len(before)} requests)")
    print(f"latency_training_gate_p50_p99_ms: {1000 * d50:.0f} {1000 * d99:.0f}  "
          f"({len(during)} requests)")  # fmt: skip
    print(f"latency_ratio_p50_p99: {d50 / b50:.2f} {d99 / b99:.2f}  (target <= 2.0)")
    target = 600 if args.clients == 1 and args.rate > 0 else 900
    print(f"loop_total_s: {total:.1f}  (target < {target})")
    print(f"train_alone_s: {train_alone:.1f}")
    print(f"ratio_loop_vs_train_alone: {total / train_alone:.2f}")


if __name__ == "__main__":
    main()
