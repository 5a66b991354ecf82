"""``kill -9`` of a gateway while samples are being written: the store stays whole.

At most what was still in the queue is lost; every stored sample has its score (they are
written in one transaction), SQLite's integrity check passes, and a new gateway on the same
data dir reads the samples and keeps sampling.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from gateway.engine import free_port
from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, MODEL, ROOT, http_ok, running_gateway, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def count(url: str) -> int:
    response = httpx.get(f"{url}/admin/eval/samples?limit=500", headers=ADMIN, timeout=30)
    return len(response.json()["data"])


def test_kill_9_while_writing_samples_never_corrupts_the_store(
    engine_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ, "TUNELOOP_DATA_DIR": str(tmp_path), "TUNELOOP_PORT": str(port),
        "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_EVAL_SAMPLE_RATE": "1",
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--upstream", engine_url],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/readyz"), timeout=120, what="gateway")
        rubric = {"checks": [{"type": "length", "max": 1000}, {"type": "json_valid"}]}
        assert httpx.put(f"{url}/admin/rubrics/{MODEL}", json=rubric, headers=ADMIN).is_success
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)

        def ask(n: int) -> None:
            try:
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"Count to {n}."}],
                    max_tokens=6,
                )  # fmt: skip
            except openai.APIError:
                pass  # the gateway is killed under some of them

        pool = concurrent.futures.ThreadPoolExecutor(8)
        futures = [pool.submit(ask, n) for n in range(64)]
        wait_until(lambda: count(url) >= 4, timeout=120, what="samples being written")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        concurrent.futures.wait(futures, timeout=120)
        pool.shutdown()
    finally:
        process.kill()

    db = tmp_path / "tuneloop.db"
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        samples = connection.execute("SELECT count(*) FROM eval_samples").fetchone()[0]
        unscored = connection.execute(
            "SELECT count(*) FROM eval_samples s LEFT JOIN eval_scores c ON c.sample_id = s.id "
            "WHERE c.id IS NULL"
        ).fetchone()[0]
    assert samples >= 4 and unscored == 0

    settings = Settings(
        upstreams=[engine_url], data_dir=tmp_path, admin_token=ADMIN_TOKEN, eval_sample_rate=1
    )
    with running_gateway(settings) as restarted:
        assert count(restarted) == samples
        client = openai.OpenAI(base_url=f"{restarted}/v1", api_key="x", max_retries=0)
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        wait_until(lambda: count(restarted) == samples + 1, timeout=60, what="a new sample")
