"""What the gateway adds: latency at 1 connection, throughput at 64, against direct, same run.

Default mode: a stub upstream that answers at once (``tests/stub_upstream.py``) is driven by
``wrk`` directly and through ``tuneloop serve --upstream <stub>``. ``--real`` does the same
against the real embedded vLLM server (``tuneloop serve`` with no upstream), where the figure
that matters is the throughput ratio.

Prints ``name: value`` lines; the last line is the ratio against the direct baseline.
Targets (issue #2): stub, 1 connection: added p50 < 1 ms, p99 < 3 ms; stub, 64 connections:
throughput ratio >= 0.40; real vLLM: throughput ratio >= 0.97.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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

MODEL = "smollm2-135m-instruct"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"not ready after {timeout:.0f}s: {url}")


def wrk_script(max_tokens: int) -> Path:
    body = json.dumps(
        {
            "model": MODEL,
            "max_tokens": max_tokens,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}],
        }
    )
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{body}'\n"
    )
    return script


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsed wrk time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, *, connections: int, seconds: int, script: Path) -> dict[str, float]:
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "60s",
            "-s",
            str(script),
            f"{url}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        result[f"p{pct}"] = to_ms(re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{errors.group(1)} failed requests against {url}:\n{out}")
    return result


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # A throwaway data dir (database, logs): the benchmark leaves the user's alone.
    isolated = {
        "TUNELOOP_DATA_DIR": tempfile.mkdtemp(prefix="tuneloop-bench-"),
        "TUNELOOP_MODEL_PATH": str(Settings().base_model_path),
    }
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **isolated, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def bench_stub(seconds: int) -> None:
    stub_port, gw_port = free_port(), free_port()
    stub_url, gw_url = f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{gw_port}"
    stub = start([sys.executable, "tests/stub_upstream.py", "--port", str(stub_port)])
    gateway = start(
        [sys.executable, "-m", "gateway", "serve", "--port", str(gw_port), "--upstream", stub_url]
    )
    script = wrk_script(4)
    try:
        wait_ready(f"{stub_url}/health", 30)
        wait_ready(f"{gw_url}/readyz", 60)
        for url in (stub_url, gw_url):  # warm up both paths
            run_wrk(url, connections=4, seconds=1, script=script)
        direct1 = run_wrk(stub_url, connections=1, seconds=seconds, script=script)
        gw1 = run_wrk(gw_url, connections=1, seconds=seconds, script=script)
        direct64 = run_wrk(stub_url, connections=64, seconds=seconds, script=script)
        gw64 = run_wrk(gw_url, connections=64, seconds=seconds, script=script)
    finally:
        stop(gateway)
        stop(stub)
        script.unlink()
    print(f"direct_c1_p50_ms: {direct1['p50']:.3f}")
    print(f"gateway_c1_p50_ms: {gw1['p50']:.3f}")
    print(f"added_c1_p50_ms: {gw1['p50'] - direct1['p50']:.3f}  (target < 1)")
    print(f"added_c1_p99_ms: {gw1['p99'] - direct1['p99']:.3f}  (target < 3)")
    print(f"direct_c64_rps: {direct64['rps']:.0f}")
    print(f"gateway_c64_rps: {gw64['rps']:.0f}")
    print(f"throughput_ratio_c64: {gw64['rps'] / direct64['rps']:.3f}  (target >= 0.40)")


def bench_real(seconds: int, connections: int) -> None:
    gw_port, engine_port = free_port(), free_port()
    gw_url, engine_url = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{engine_port}"
    serve = start(
        [sys.executable, "-m", "gateway", "serve", "--port", str(gw_port)],
        env={"TUNELOOP_ENGINE_PORT": str(engine_port)},
    )
    script = wrk_script(16)
    try:
        wait_ready(f"{gw_url}/readyz", 600)
        run_wrk(engine_url, connections=connections, seconds=5, script=script)  # warm-up
        direct = run_wrk(engine_url, connections=connections, seconds=seconds, script=script)
        gateway = run_wrk(gw_url, connections=connections, seconds=seconds, script=script)
    finally:
        stop(serve)
        script.unlink()
    print(f"direct_c{connections}_rps: {direct['rps']:.2f}")
    print(f"gateway_c{connections}_rps: {gateway['rps']:.2f}")
    print(f"direct_c{connections}_p50_ms: {direct['p50']:.1f}")
    print(f"gateway_c{connections}_p50_ms: {gateway['p50']:.1f}")
    print(f"throughput_ratio_real: {gateway['rps'] / direct['rps']:.3f}  (target >= 0.97)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="against the embedded vLLM server")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=8, help="concurrency for --real")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    if args.real:
        bench_real(args.seconds, args.connections)
    else:
        bench_stub(args.seconds)


if __name__ == "__main__":
    main()
