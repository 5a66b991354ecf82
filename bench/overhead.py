"""What the gateway adds: latency at 1 connection, throughput at 64, against direct, same run.

Default mode: a stub upstream that answers at once (``tests/stub_upstream.py``) is driven by
``wrk`` directly and through ``tuneloop serve --upstream <stub>``. ``--real`` does the same
against the real embedded vLLM server (``tuneloop serve`` with no upstream), where the figure
that matters is the throughput ratio.

The stub mode also measures 64 connections through ``tuneloop serve --workers N`` (``--workers``,
default 2; same stub, same run, own temp data dir) and prints ``gateway_workersN_rps`` and
``workersN_vs_workers1_throughput_ratio`` against the one-worker gateway. On the 2-core
development machine wrk, the stub and the gateway share the cores, so extra workers cannot
show their real gain there (the figure is printed as measured); on a machine with cores to
spare it is the figure to watch.

Prints ``name: value`` lines; the last line is the ratio against the direct baseline.
Targets (issue #2): stub, 1 connection: added p50 < 1 ms, p99 < 3 ms; stub, 64 connections:
throughput ratio >= 0.40; real vLLM: throughput ratio >= 0.97.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
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


def start(
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    data_dir: str | None = None,
    own_group: bool = False,
) -> subprocess.Popen[bytes]:
    # A throwaway data dir (database, logs): the benchmark leaves the user's alone.
    isolated = {
        "TUNELOOP_DATA_DIR": data_dir or tempfile.mkdtemp(prefix="tuneloop-bench-"),
        "TUNELOOP_MODEL_PATH": str(Settings().base_model_path),
    }
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **isolated, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=own_group,  # a parent with children: stop() can kill them all
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait; on timeout SIGKILL the process (its whole group if it leads one)."""
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        try:
            leads_group = os.getpgid(process.pid) == process.pid
        except ProcessLookupError:
            leads_group = False
        if leads_group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()


def wait_listeners(port: int, count: int, timeout: float) -> None:
    """Wait until ``count`` sockets listen on ``port``: each worker has its own (SO_REUSEPORT).

    ``/readyz`` answers once one worker is up; a worker listens only after its startup.
    """
    hex_port = f":{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    found += fields[1].endswith(hex_port) and fields[3] == "0A"  # LISTEN
        if found >= count:
            return
        time.sleep(0.3)
    raise SystemExit(f"fewer than {count} listeners on port {port} after {timeout:.0f}s")


def serve_args(port: int, upstream: str, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "gateway", "serve", "--port", str(port)),
        *("--upstream", upstream, "--workers", str(workers)),
    ]


def bench_workers(stub_url: str, workers: int, seconds: int, script: Path) -> dict[str, float]:
    """64 connections through ``serve --workers N`` on its own port and temp data dir."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-workers-") as data_dir:
        gateway = start(serve_args(port, stub_url, workers), data_dir=data_dir, own_group=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{url}/readyz", 60)
            wait_listeners(port, workers, 60)
            run_wrk(url, connections=64, seconds=1, script=script)  # warm up every worker
            return run_wrk(url, connections=64, seconds=seconds, script=script)
        finally:
            stop(gateway)


def bench_stub(seconds: int, workers: int) -> None:
    stub_port, gw_port = free_port(), free_port()
    stub_url, gw_url = f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{gw_port}"
    stub = start([sys.executable, "tests/stub_upstream.py", "--port", str(stub_port)])
    gateway = start(serve_args(gw_port, stub_url, 1))
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
        stop(gateway)  # one gateway at a time: the 2 cores are shared as it is
        gw64_workers = bench_workers(stub_url, workers, seconds, script)
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
    print(f"gateway_workers{workers}_rps: {gw64_workers['rps']:.0f}")
    ratio = gw64_workers["rps"] / gw64["rps"]
    print(f"workers{workers}_vs_workers1_throughput_ratio: {ratio:.3f}")
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
    parser.add_argument(
        "--replicas",
        action="store_true",
        help="two embedded vLLM replicas: throughput through the gateway vs both directly, "
        "and adapter loads per 1,000 requests, adapter-aware vs round robin (bench/replicas.py)",
    )
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="concurrency for --real (per replica with --replicas)",
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per routing policy for --replicas"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="gateway worker processes for the stub mode's extra 64-connection run "
        "(tuneloop serve --workers N), compared with one worker in the same run",
    )
    args = parser.parse_args()
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    if args.replicas:
        from bench.replicas import main as bench_replicas

        bench_replicas(
            seconds=args.seconds, connections=2 * args.connections, requests=args.requests
        )
    elif args.real:
        bench_real(args.seconds, args.connections)
    else:
        bench_stub(args.seconds, args.workers)


if __name__ == "__main__":
    main()
