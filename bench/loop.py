"""The loop's wall time on these cores: planted drift -> promoted adapter serving.

Starts ``tuneloop serve`` (embedded vLLM, bundled model) with sampling at 100%, trains a JSON
adapter and a prose adapter with ``tuneloop train``, imports the alias's dataset, serves the
JSON one with a JSON rubric, builds the drift baseline, then flips the alias to the prose
adapter (planted drift) while clients keep sending requests, and times each step until the
loop's challenger serves all the traffic: detection, dataset, training, gate, canary, swap.

Prints ``name: value`` lines; the last is the loop's total against a baseline measured in the
same run: one plain ``tuneloop train`` of the same size (the irreducible training cost).
Targets (issue #9): under 15 minutes in all, 0 failed requests.
"""

from __future__ import annotations

import concurrent.futures
import os
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


def main() -> None:
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

        def ask(i: int) -> None:
            name, age, city = PEOPLE[i % len(PEOPLE)]
            user = f"{name} is {age} years old and lives in {city}."
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
            try:
                client.chat.completions.create(
                    model="bench", max_tokens=32, temperature=0, messages=messages
                )
            except openai.APIError as exc:
                failures.append(repr(exc))

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(ask, range(30)))  # the baseline window
        stop = threading.Event()

        def clients() -> None:
            i = 0
            while not stop.is_set():
                ask(i)
                i += 1

        threads = [threading.Thread(target=clients) for _ in range(2)]
        planted = time.perf_counter()
        admin.put("/admin/aliases/bench", json={"targets": {prose_v["served_name"]: 100}})
        for thread in threads:
            thread.start()
        job = None
        while job is None or job["state"] not in {"failed", "rejected", "promoted", "rolled_back"}:
            time.sleep(2)
            jobs = admin.get("/admin/jobs", params={"alias": "bench"}).json()["data"]
            if jobs and job is None:
                detected = time.perf_counter() - planted
            job = jobs[0] if jobs else None
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
    print(f"job_state: {job['state']}")
    print(f"detection_s: {detected:.1f}")
    for step in ("dataset", "training", "gate", "canary"):
        print(f"{step}_s: {timings.get(step, float('nan')):.1f}")
    print(f"swap_ms_mean: {1000 * flip_total / max(flips, 1):.1f}  ({flips:.0f} alias flips)")
    print(f"failed_requests: {len(failures)}  (target 0)")
    print(f"loop_total_s: {total:.1f}  (target < 900)")
    print(f"train_alone_s: {train_alone:.1f}")
    print(f"ratio_loop_vs_train_alone: {total / train_alone:.2f}")


if __name__ == "__main__":
    main()
