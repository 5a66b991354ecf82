"""Helpers the tests share: waiting, in-process gateways, the stub upstream process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from gateway.app import create_app
from gateway.engine import free_port
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
EXAMPLE_DATA = ROOT / "examples" / "extract.jsonl"
PROSE_DATA = ROOT / "examples" / "extract_prose.jsonl"
ADMIN_TOKEN = "test-admin-token-0123456789"


def train_adapter(settings: Settings, data: Path, out: Path, *, steps: int, seed: int) -> Path:
    """``tuneloop train`` as a user runs it (its own process); the adapter folder."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "train", "--data", str(data), "--out", str(out),
         "--max-steps", str(steps), "--eval-every", "2", "--seed", str(seed)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "TUNELOOP_MODEL_PATH": str(settings.base_model_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_gateway(settings: Settings) -> Iterator[str]:
    """An in-process gateway app on a free port (real uvicorn, real HTTP); yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=60, what="gateway start")
    if not server.started:
        raise RuntimeError("gateway failed to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class StubUpstream:
    """A running ``tests/stub_upstream.py`` process."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@contextmanager
def stub_upstream(
    *, die_after: int | None = None, error_status: int | None = None, port: int | None = None
) -> Iterator[StubUpstream]:
    """``tests/stub_upstream.py`` as its own process."""
    port = port or free_port()
    args = [sys.executable, str(ROOT / "tests" / "stub_upstream.py"), "--port", str(port)]
    if die_after is not None:
        args += ["--die-after", str(die_after)]
    if error_status is not None:
        args += ["--error-status", str(error_status)]
    stub = StubUpstream(f"http://127.0.0.1:{port}", subprocess.Popen(args))
    try:
        wait_until(lambda: http_ok(f"{stub.url}/health"), timeout=30, what="stub upstream")
        yield stub
    finally:
        stub.kill()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus samples at ``url`` keyed by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
