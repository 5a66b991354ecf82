"""Continuous evaluation's costs and quality, each against a baseline from the same run.

1. Gateway throughput against the stub upstream with sampling at 100% (a rubric scoring every
   sample in the background) vs 0%: target ratio >= 0.95. Runs alternate (0, 100, 0, 100) so
   drift in the machine's speed does not favour one side.
2. Drift detection (``bench/eval_drift.py``): delay for a planted 0.2 drop (target <= 200
   samples) and false alarms over 10k stable samples (target < 1%).
3. The PII scrubber (``bench/eval_scrub.py``): precision and recall on the test battery, MB/s.

Prints ``name: value`` lines; each part ends with its ratio against its same-run baseline.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from overhead import MODEL, ROOT, run_wrk, start, stop, wait_ready, wrk_script  # noqa: E402

from gateway.engine import free_port  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-0123456789"
RUBRIC = {"checks": [{"type": "length", "max": 2000}, {"type": "json_valid"}]}


def gateway_rps(stub_url: str, rate: str, *, seconds: int, connections: int) -> float:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = start(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--upstream", stub_url],
        env={"TUNELOOP_EVAL_SAMPLE_RATE": rate, "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
             "TUNELOOP_ACCESS_LOG": "false"},
    )  # fmt: skip
    script = wrk_script(4)
    try:
        wait_ready(f"{url}/readyz", 60)
        httpx.put(
            f"{url}/admin/rubrics/{MODEL}",
            json=RUBRIC,
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        ).raise_for_status()
        run_wrk(url, connections=4, seconds=1, script=script)  # warm-up
        return run_wrk(url, connections=connections, seconds=seconds, script=script)["rps"]
    finally:
        stop(gateway)
        script.unlink()


def bench_throughput(seconds: int, connections: int, rounds: int) -> None:
    stub_port = free_port()
    stub_url = f"http://127.0.0.1:{stub_port}"
    stub = start([sys.executable, "tests/stub_upstream.py", "--port", str(stub_port)])
    runs: dict[str, list[float]] = {"0": [], "1": []}
    try:
        wait_ready(f"{stub_url}/health", 30)
        for rate in ("0", "1") * rounds:
            runs[rate].append(gateway_rps(stub_url, rate, seconds=seconds, connections=connections))
    finally:
        stop(stub)
    off, on = statistics.median(runs["0"]), statistics.median(runs["1"])
    print(f"gateway_rps_sampling_0: {off:.0f}")
    print(f"gateway_rps_sampling_100: {on:.0f}")
    print(f"throughput_ratio_sampling_100_vs_0: {on / off:.3f}  (target >= 0.95)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of 0% and 100%")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    bench_throughput(args.seconds, args.connections, args.rounds)
    for part in ("eval_drift.py", "eval_scrub.py"):
        subprocess.run([sys.executable, str(BENCH / part)], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
