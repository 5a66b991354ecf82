"""The embedded engine comes back: ``kill -9`` of the vLLM child under ``tuneloop serve``.

A ``tuneloop serve`` of its own (gateway plus its own embedded vLLM) with an adapter behind an
alias. The engine is killed: the gateway answers 503 meanwhile, restarts it, reloads the
adapter, and the alias answers again. Killed once more with its restart budget spent,
``tuneloop serve`` exits non-zero and leaves no process behind. The engine's log rotates by
size on the way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from gateway.engine import free_port
from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, ROOT, http_ok, scrape, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
LOG_MAX_BYTES = 4096


def _engine_process(serve: psutil.Process) -> psutil.Process:
    for child in serve.children(recursive=True):
        if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no vLLM child under tuneloop serve")


def _chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_killed_engine_is_restarted_then_serve_gives_up(
    base_settings: Settings,
    trained_adapters: dict[str, Path],
    adapter_root: Path,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TUNELOOP_DATA_DIR": str(tmp_path),
        "TUNELOOP_PORT": str(port),
        "TUNELOOP_ENGINE_PORT": str(free_port()),
        "TUNELOOP_MODEL_PATH": str(base_settings.base_model_path),
        "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "TUNELOOP_ADAPTER_ROOT": str(adapter_root),
        "TUNELOOP_HEALTH_INTERVAL": "1",
        "TUNELOOP_ENGINE_MAX_RESTARTS": "1",
        "TUNELOOP_ENGINE_LOG_MAX_BYTES": str(LOG_MAX_BYTES),
        "TUNELOOP_EVAL_SAMPLE_RATE": "0",
    }
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    family: list[psutil.Process] = []
    try:
        wait_until(
            lambda: process.poll() is not None or http_ok(f"{url}/readyz"),
            timeout=600,
            what="tuneloop serve with its own engine",
        )
        assert process.poll() is None, serve_log.read_text()[-3000:]
        registered = httpx.post(
            f"{url}/admin/adapters",
            json={"name": "sup", "path": trained_adapters["v1"].name},
            headers=ADMIN,
            timeout=120,
        )
        assert registered.status_code == 201, registered.text
        served = registered.json()["served_name"]
        flipped = httpx.put(
            f"{url}/admin/aliases/sup", json={"targets": {served: 100}}, headers=ADMIN
        )
        assert flipped.status_code == 200, flipped.text
        assert _chat(url, "sup").status_code == 200

        engine = _engine_process(psutil.Process(process.pid))
        engine.kill()
        killed = time.monotonic()

        # Meanwhile: 503 in the OpenAI shape, never a hang or a 500.
        wait_until(lambda: not http_ok(f"{url}/readyz"), timeout=30, what="gateway to see it")
        down = _chat(url, "sup")
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "no_ready_upstream"

        wait_until(lambda: http_ok(f"{url}/readyz"), timeout=600, what="engine restarted")
        # The adapter comes back with the engine: the alias answers without any admin call.
        wait_until(
            lambda: _chat(url, "sup").status_code == 200, timeout=120, what="adapter reloaded"
        )
        back = time.monotonic() - killed
        print(f"engine kill -9 to ready with its adapter: {back:.1f} s")
        restarted = _engine_process(psutil.Process(process.pid))
        assert restarted.pid != engine.pid
        metrics = scrape(f"{url}/metrics")
        assert metrics[("tuneloop_engine_restarts_total", frozenset({("reason", "exited")}))] == 1

        logs = tmp_path / "logs"
        assert (logs / "engine.log.1").is_file(), sorted(p.name for p in logs.iterdir())
        assert (logs / "engine.log").stat().st_size <= LOG_MAX_BYTES + 4096
        assert "event=engine_restarted" in serve_log.read_text()

        # Out of restarts (1 within the window): serve exits non-zero for its supervisor.
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        restarted.kill()
        code = process.wait(timeout=120)
        assert code == 3, serve_log.read_text()[-3000:]
        assert "event=engine_gave_up" in serve_log.read_text()
        survivors = [p.pid for p in family if p.is_running() and p.status() != "zombie"]
        assert not survivors, f"left behind: {survivors}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for leftover in family:
            if leftover.is_running():
                leftover.kill()
