"""Adapter lifecycle through the admin API, the real vLLM server and the openai client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, MODEL, ROOT, running_gateway, scrape, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
PROMPT = [
    {"role": "system", "content": "Extract the person's name, age and city from the text. "
     "Answer with JSON only."},
    {"role": "user", "content": "Marta is 41 years old and lives in Porto."},
]  # fmt: skip


@dataclass
class Admin:
    url: str
    db: Path

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers=ADMIN, timeout=120, **kwargs)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0)

    def register(self, name: str, folder: Path) -> dict:
        response = self.call("POST", "/admin/adapters", json={"name": name, "path": folder.name})
        assert response.status_code == 201, response.text
        return response.json()

    def events(self, subject: str | None = None) -> list[dict]:
        query = f"?subject={subject}" if subject else ""
        return self.call("GET", f"/admin/events{query}").json()["data"]


def settings_for(engine_url: str, root: Path, db: Path) -> Settings:
    return Settings(
        upstreams=[engine_url], admin_token=ADMIN_TOKEN, adapter_root=root,
        database_url=f"sqlite:///{db}", health_interval=1,
    )  # fmt: skip


@pytest.fixture(scope="module")
def admin(
    engine_url: str, adapter_root: Path, trained_adapters: dict[str, Path], tmp_path_factory
) -> Iterator[Admin]:
    db = tmp_path_factory.mktemp("registry") / "tuneloop.db"
    with running_gateway(settings_for(engine_url, adapter_root, db)) as url:
        admin = Admin(url, db)
        for label in ("v1", "v2"):
            admin.register("extract", trained_adapters[label])
        yield admin


def engine_models(engine_url: str) -> set[str]:
    return {card["id"] for card in httpx.get(f"{engine_url}/v1/models").json()["data"]}


def ask(client: openai.OpenAI, model: str, user: str | None = None) -> str:
    """The served name that answered (vLLM echoes it in ``model``)."""
    extra = {"user": user} if user else {}
    reply = client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=2, temperature=0, **extra
    )
    return reply.model


def test_registered_versions_are_ready_listed_and_served(admin: Admin, engine_url: str) -> None:
    adapters = admin.call("GET", "/admin/adapters").json()["data"]
    assert [(a["served_name"], a["status"], a["version"]) for a in adapters] == [
        ("extract@v1", "ready", 1),
        ("extract@v2", "ready", 2),
    ]
    assert adapters[0]["dataset_hash"].startswith("sha256:") and adapters[0]["rank"] == 8
    assert {"extract@v1", "extract@v2"} <= engine_models(engine_url)
    cards = {m.id: m for m in admin.client().models.list().data}
    assert cards["extract@v1"].parent == MODEL

    client = admin.client()
    reply = client.chat.completions.create(
        model="extract@v1", messages=PROMPT, max_tokens=24, temperature=0
    )
    assert reply.model == "extract@v1"
    base = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=24, temperature=0
    )
    assert reply.choices[0].message.content != base.choices[0].message.content
    assert json.loads(reply.choices[0].message.content)["city"] == "Porto"


def test_hot_swap_under_streaming_load_fails_nothing(admin: Admin, engine_url: str) -> None:
    assert (
        admin.call(
            "PUT", "/admin/aliases/extract", json={"targets": {"extract@v1": 100}}
        ).status_code
        == 200
    )
    results: list[tuple[float, str | None, str | None]] = []  # (started, model, error)
    stop = threading.Event()

    def stream_forever() -> None:
        client = admin.client()
        while not stop.is_set():
            started, model, error = time.monotonic(), None, None
            try:
                for chunk in client.chat.completions.create(
                    model="extract", messages=PROMPT, max_tokens=8, stream=True
                ):
                    model = chunk.model
            except openai.APIError as exc:
                error = repr(exc)
            results.append((started, model, error))

    workers = [threading.Thread(target=stream_forever) for _ in range(4)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(results) >= 4, timeout=120, what="requests on v1")
    flip = admin.call("PUT", "/admin/aliases/extract", json={"targets": {"extract@v2": 100}})
    flipped_at = time.monotonic()
    assert flip.status_code == 200 and flip.json()["previous_targets"] == {"extract@v1": 100}
    wait_until(lambda: sum(s > flipped_at for s, _, _ in results) >= 6, 120, "requests on v2")
    stop.set()
    for worker in workers:
        worker.join()

    assert [r for r in results if r[2]] == [], "no request may fail during the swap"
    samples = scrape(f"{admin.url}/metrics")
    assert samples[("tuneloop_alias_swaps_total", frozenset({"alias": "extract"}.items()))] >= 1
    for version in ("extract@v1", "extract@v2"):
        labels = {"model": "extract", "version": version, "endpoint": "chat", "status": "200"}
        assert samples[("tuneloop_requests_total", frozenset(labels.items()))] >= 1
    assert {m for _, m, _ in results} == {"extract@v1", "extract@v2"}
    assert {m for s, m, _ in results if s > flipped_at} == {"extract@v2"}
    wait_until(lambda: "extract@v1" not in engine_models(engine_url), 60, "v1 unloaded")
    assert any(e["kind"] == "adapter_unloaded" for e in admin.events("extract@v1"))


def test_rollback_points_back_and_reloads(admin: Admin, engine_url: str) -> None:
    for target in ("extract@v1", "extract@v2", "extract@v2"):  # the repeat changes nothing
        admin.call("PUT", "/admin/aliases/extract", json={"targets": {target: 100}})
    wait_until(lambda: "extract@v1" not in engine_models(engine_url), 60, "v1 unloaded")
    back = admin.call("POST", "/admin/aliases/extract/rollback")
    assert back.status_code == 200, back.text
    assert back.json()["targets"] == {"extract@v1": 100}
    assert "extract@v1" in engine_models(engine_url)
    assert ask(admin.client(), "extract") == "extract@v1"


def test_canary_split_is_sticky_per_user(admin: Admin) -> None:
    split = {"targets": {"extract@v1": 50, "extract@v2": 50}}
    assert admin.call("PUT", "/admin/aliases/canary", json=split).status_code == 200
    client = admin.client()
    seen: dict[str, str] = {}
    for index in range(8):
        user = f"user-{index}"
        seen[user] = ask(client, "canary", user)
        assert ask(client, "canary", user) == seen[user], "same user, same version"
    assert set(seen.values()) == {"extract@v1", "extract@v2"}
    assert admin.call("DELETE", "/admin/aliases/canary").status_code == 204


def test_invalid_adapters_are_refused_and_nothing_is_registered(
    admin: Admin, adapter_root: Path, trained_adapters: dict[str, Path], tmp_path: Path
) -> None:
    shutil.copytree(trained_adapters["v1"], adapter_root / "bad-rank")
    config = adapter_root / "bad-rank" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "r": 64}))
    shutil.copytree(trained_adapters["v1"], adapter_root / "bad-base")
    config = adapter_root / "bad-base" / "adapter_config.json"
    config.write_text(
        json.dumps(
            {**json.loads(config.read_text()), "base_model_name_or_path": "meta-llama/Llama-3-8B"}
        )
    )
    shutil.copytree(trained_adapters["v1"], adapter_root / "no-weights")
    (adapter_root / "no-weights" / "adapter_model.safetensors").unlink()
    shutil.copytree(trained_adapters["v1"], tmp_path / "elsewhere")

    before_adapters = admin.call("GET", "/admin/adapters").json()
    before_events = admin.events()
    cases = {
        "bad-rank": ("rank_too_high", "exceeds"),
        "bad-base": ("wrong_base", "Llama-3-8B"),
        "no-weights": ("no_weights", "no adapter weights"),
        str(tmp_path / "elsewhere"): ("outside_root", "outside the adapter root"),
        "../elsewhere": ("outside_root", "outside the adapter root"),
    }
    for path, (code, words) in cases.items():
        response = admin.call("POST", "/admin/adapters", json={"name": "broken", "path": path})
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == code and words in error["message"], (path, error)
    bad_body = admin.call("POST", "/admin/adapters", json={"name": "broken"})
    assert bad_body.status_code == 400 and bad_body.json()["error"]["param"]
    assert admin.call("GET", "/admin/adapters").json() == before_adapters
    assert admin.events() == before_events


def test_deleting_an_aliased_version_is_a_conflict(admin: Admin) -> None:
    aliases = {a["name"]: a for a in admin.call("GET", "/admin/aliases").json()["data"]}
    target = next(iter(aliases["extract"]["targets"]))
    response = admin.call("DELETE", f"/admin/adapters/{target}")
    assert response.status_code == 409 and response.json()["error"]["code"] == "in_use"
    assert admin.call("DELETE", "/admin/adapters/extract@v99").status_code == 404


def test_admin_needs_its_own_token(admin: Admin, engine_url: str, adapter_root: Path) -> None:
    assert httpx.get(f"{admin.url}/admin/adapters").status_code == 401
    wrong = httpx.get(f"{admin.url}/admin/adapters", headers={"authorization": "Bearer x"})
    assert wrong.status_code == 401
    closed = Settings(
        upstreams=[engine_url],
        api_keys="inference-key",
        adapter_root=adapter_root,
        database_url=f"sqlite:///{admin.db}",
    )
    with running_gateway(closed) as url:
        response = httpx.get(
            f"{url}/admin/adapters", headers={"authorization": "Bearer inference-key"}
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "admin_disabled"


def test_a_new_gateway_restores_aliases_and_reloads_them(
    admin: Admin, engine_url: str, adapter_root: Path
) -> None:
    target = next(iter(admin.call("GET", "/admin/aliases").json()["data"][0]["targets"]))
    # The replica lost the adapter (as after a restart of vLLM).
    httpx.post(f"{engine_url}/v1/unload_lora_adapter", json={"lora_name": target})
    assert target not in engine_models(engine_url)
    with running_gateway(settings_for(engine_url, adapter_root, admin.db)) as url:
        assert target in engine_models(engine_url)
        fresh = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        assert ask(fresh, "extract") == target


def test_cli_talks_to_the_admin_api(admin: Admin) -> None:
    env = {**os.environ, "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN}

    def tuneloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--url", admin.url],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    listed = tuneloop("aliases", "list")
    assert listed.returncode == 0, listed.stderr
    assert "extract" in {a["name"] for a in json.loads(listed.stdout)}
    refused = tuneloop("adapters", "register", "extract", "../../etc")
    assert refused.returncode == 1
    assert "error 400" in refused.stderr and "outside the adapter root" in refused.stderr


def test_capacity_unloads_idle_versions_and_calls_reload_them(
    engine_url: str, adapter_root: Path, trained_adapters: dict[str, Path], tmp_path: Path
) -> None:
    settings = settings_for(engine_url, adapter_root, tmp_path / "cap.db")
    settings.max_loaded_adapters = 1
    with running_gateway(settings) as url:
        admin = Admin(url, tmp_path / "cap.db")
        for label in ("v1", "v2"):
            admin.register("cap", trained_adapters[label])
        wait_until(lambda: "cap@v1" not in engine_models(engine_url), 30, "idle v1 unloaded")
        assert "cap@v2" in engine_models(engine_url)
        # Called by name, an unloaded version is loaded again on demand.
        assert ask(admin.client(), "cap@v1") == "cap@v1"
        wait_until(lambda: "cap@v2" not in engine_models(engine_url), 30, "idle v2 unloaded")


def test_a_replica_that_lost_an_adapter_gets_it_back(admin: Admin, engine_url: str) -> None:
    """As after a quick vLLM restart the health checks never saw: the next check reloads it."""
    target = next(iter(admin.call("GET", "/admin/aliases").json()["data"][0]["targets"]))
    httpx.post(f"{engine_url}/v1/unload_lora_adapter", json={"lora_name": target})
    assert target not in engine_models(engine_url)
    wait_until(lambda: target in engine_models(engine_url), 30, "the adapter reloaded")
    assert ask(admin.client(), "extract") == target
