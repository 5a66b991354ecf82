"""Faults survived, nothing lost.

- ``kill -9`` of a gateway while adapters are being registered, an alias flipped back and forth
  and documents ingested: after a restart the database passes SQLite's integrity check, every
  acknowledged write is there (each acknowledged adapter answers, the alias points at an
  acknowledged target or the one in flight, each acknowledged document is found by search),
  and nothing half-written shows (every listed adapter answers).
- Two gateways writing to one SQLite file at once never answer ``database is locked`` (a 500):
  every write succeeds.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.engine import free_port
from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, ROOT, http_ok, running_gateway, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
COLORS = ["red", "green", "blue", "amber", "violet", "teal", "olive", "coral", "ivory", "jade"]


def fact(index: int) -> str:
    return f"Locker {index} in hall {index * 7} is painted {COLORS[index % len(COLORS)]}."


def answers(url: str, model: str) -> bool:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).status_code == 200


class Writer(threading.Thread):
    """Repeats ``write(i)`` until stopped (or ``limit`` calls); remembers what each
    acknowledged call wrote."""

    def __init__(self, write: Callable[[int], str | None], limit: int = 1000) -> None:
        super().__init__(daemon=True)
        self._write = write
        self._limit = limit
        self.acked: list[str] = []
        self.in_flight: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        index = 0
        while not self.stop.is_set() and index < self._limit:
            try:
                done = self._write(index)
            except httpx.HTTPError:
                return  # the gateway was killed under this call
            if done is not None:
                self.acked.append(done)
            index += 1


def test_kill_9_mid_writes_keeps_every_acknowledged_write(
    engine_url: str, trained_adapters: dict[str, Path], adapter_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ, "TUNELOOP_DATA_DIR": str(tmp_path), "TUNELOOP_PORT": str(port),
        "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_ADAPTER_ROOT": str(adapter_root),
        "TUNELOOP_EVAL_SAMPLE_RATE": "0",
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--upstream", engine_url],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    folder = trained_adapters["v1"].name
    client = httpx.Client(base_url=url, headers=ADMIN, timeout=120)
    try:
        wait_until(lambda: http_ok(f"{url}/readyz"), timeout=120, what="gateway")
        versions = []
        for name in ("fa", "fb"):
            response = client.post("/admin/adapters", json={"name": name, "path": folder})
            assert response.status_code == 201, response.text
            versions.append(response.json()["served_name"])
        assert client.post("/admin/collections", json={"name": "lockers"}).status_code == 201

        def register(i: int) -> str | None:
            writer_reg.in_flight = f"reg{i}"
            response = client.post("/admin/adapters", json={"name": f"reg{i}", "path": folder})
            assert response.status_code == 201, response.text
            time.sleep(0.5)
            return response.json()["served_name"]

        def flip(i: int) -> str | None:
            target = versions[i % 2]
            writer_flip.in_flight = target
            response = client.put("/admin/aliases/flip", json={"targets": {target: 100}})
            assert response.status_code == 200, response.text
            return target

        def ingest(i: int) -> str | None:
            doc = {"id": f"locker-{i}", "text": fact(i)}
            response = client.post(
                "/admin/collections/lockers/documents", json={"documents": [doc]}
            )
            assert response.status_code == 200, response.text
            return doc["id"]

        # Paced and few registrations (after the restart each listed version must answer),
        # so one is likely in flight when the gateway is killed.
        writer_reg, writer_flip, writer_ingest = Writer(register, 6), Writer(flip), Writer(ingest)
        writers = (writer_reg, writer_flip, writer_ingest)
        for writer in writers:
            writer.start()
        wait_until(
            lambda: (
                len(writer_reg.acked) >= 1
                and len(writer_flip.acked) >= 3
                and len(writer_ingest.acked) >= 5
            ),
            timeout=300,
            what="writes acknowledged under load",
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        for writer in writers:
            writer.stop.set()
            writer.join(timeout=150)
    finally:
        process.kill()
        client.close()

    with sqlite3.connect(tmp_path / "tuneloop.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    settings = Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=adapter_root,
        data_dir=tmp_path, health_interval=1, eval_sample_rate=0,
    )  # fmt: skip
    with (
        running_gateway(settings) as url,
        httpx.Client(base_url=url, headers=ADMIN, timeout=120) as client,
    ):
        listed = {a["served_name"] for a in client.get("/admin/adapters").json()["data"]}
        assert set(writer_reg.acked) | set(versions) <= listed
        for served_name in listed:  # nothing half-registered: every listed version answers
            wait_until(lambda n=served_name: answers(url, n), 60, f"{served_name} to answer")

        alias = next(a for a in client.get("/admin/aliases").json()["data"] if a["name"] == "flip")
        assert set(alias["targets"]) <= {writer_flip.acked[-1], writer_flip.in_flight}

        for doc_id in writer_ingest.acked:
            index = int(doc_id.removeprefix("locker-"))
            hits = client.post(
                f"{url}/v1/collections/lockers/search", json={"query": fact(index), "top_k": 1}
            ).json()["data"]
            assert hits and hits[0]["doc_id"] == doc_id, (doc_id, hits)
        view = next(c for c in client.get("/admin/collections").json()["data"])
        assert view["documents"] >= len(writer_ingest.acked)


def test_two_gateways_writing_one_sqlite_file_never_500(
    engine_url: str, trained_adapters: dict[str, Path], adapter_root: Path, tmp_path: Path
) -> None:
    settings = Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=adapter_root,
        data_dir=tmp_path, health_interval=1, eval_sample_rate=0,
    )  # fmt: skip
    folder = trained_adapters["v2"].name
    with running_gateway(settings) as first, running_gateway(settings) as second:
        calls: list[tuple[str, str, str, dict]] = []
        for label, url in (("a", first), ("b", second)):
            calls += [(url, "POST", "/admin/adapters", {"name": f"two{label}{i}", "path": folder})
                      for i in range(2)]  # fmt: skip
            calls.append((url, "POST", "/admin/collections", {"name": f"notes-{label}"}))
            rubric = {"checks": [{"type": "length", "max": 100}]}
            calls += [(url, "PUT", f"/admin/rubrics/r{label}{i}", rubric) for i in range(6)]

        def call(item: tuple[str, str, str, dict]) -> httpx.Response:
            url, method, path, body = item
            return httpx.request(method, f"{url}{path}", json=body, headers=ADMIN, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, calls))
        failed = [(r.request.url.path, r.status_code, r.text) for r in responses if r.is_error]
        assert not failed
        # Then documents into both collections at once, through both gateways.
        ingests = [
            (url, "POST", f"/admin/collections/notes-{label}/documents",
             {"documents": [{"id": f"n{i}", "text": fact(i)}]})
            for label, url in (("a", first), ("b", second)) for i in range(8)
        ]  # fmt: skip
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, ingests))
        failed = [(r.request.url.path, r.status_code, r.text) for r in responses if r.is_error]
        assert not failed
