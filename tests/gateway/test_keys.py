"""Managed API keys through the admin API, the CLI, the real vLLM server and the openai client.

A real gateway over real HTTP with a real SQLite file: keys are created, used, limited,
counted and revoked as an operator and a client would, and the database and /metrics are read
to see what was kept (only hashes; usage per key per hour; metrics labelled by the key's name).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.keys.limits import RateLimiter
from gateway.keys.principal import ApiKeyPrincipal
from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, MODEL, ROOT, running_gateway, scrape, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
STATIC_KEY = "static-inference-key-0123456789"
HELLO = [{"role": "user", "content": "Say hi."}]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@dataclass
class Gateway:
    url: str
    db: Path

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers=ADMIN, timeout=60, **kwargs)

    def create(self, **body: Any) -> dict[str, Any]:
        response = self.admin("POST", "/admin/keys", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def chat(self, key: str | None, model: str = MODEL, **extra: Any) -> httpx.Response:
        headers = bearer(key) if key else {}
        body = {"model": model, "messages": HELLO, "max_tokens": 2, "temperature": 0, **extra}
        return httpx.post(
            f"{self.url}/v1/chat/completions", json=body, headers=headers, timeout=120
        )

    def models(self, key: str | None) -> httpx.Response:
        return httpx.get(f"{self.url}/v1/models", headers=bearer(key) if key else {}, timeout=30)

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as connection:
            return connection.execute(query, args).fetchall()


def settings_for(upstream: str, data_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        upstreams=[upstream], admin_token=ADMIN_TOKEN, data_dir=data_dir, health_interval=1,
        key_sync_interval=1, **overrides,
    )  # fmt: skip


@pytest.fixture(scope="module")
def gateway(engine_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with a static key as well (TUNELOOP_API_KEYS), so both kinds coexist."""
    data_dir = tmp_path_factory.mktemp("keys")
    settings = settings_for(engine_url, data_dir, api_keys=[STATIC_KEY])
    with running_gateway(settings) as url:
        yield Gateway(url, data_dir / "tuneloop.db")


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    return scrape(f"{gateway.url}/metrics")[(name, frozenset(labels.items()))]


def assert_openai_error(response: httpx.Response, status: int, **fields: Any) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    for name, value in fields.items():
        assert error[name] == value, (name, error)
    return error


# ---------------------------------------------------------------- create, store, show once


def test_create_shows_the_key_once_and_the_database_holds_only_its_hash(gateway: Gateway) -> None:
    created = gateway.create(name="alice", requests_per_minute=100, tokens_per_minute=100000)
    key = created["key"]
    assert key.startswith("tl-") and len(key) > 40
    assert created["prefix"] == key[:8] and created["status"] == "active"
    assert created["id"].startswith("key_") and created["models"] == []
    assert (created["requests_per_minute"], created["tokens_per_minute"]) == (100, 100000)

    listed = gateway.admin("GET", "/admin/keys")
    assert listed.status_code == 200
    [record] = [k for k in listed.json()["data"] if k["name"] == "alice"]
    assert "key" not in record and key not in listed.text
    one = gateway.admin("GET", f"/admin/keys/{created['id']}")
    assert one.status_code == 200 and "key" not in one.json() and key not in one.text
    assert gateway.admin("GET", "/admin/keys/alice").json()["id"] == created["id"]  # by name

    [(stored_hash, prefix)] = gateway.rows(
        "SELECT key_hash, prefix FROM api_keys WHERE name = ?", "alice"
    )
    assert stored_hash == hashlib.sha256(key.encode()).hexdigest()
    assert prefix == key[:8]
    for path in gateway.db.parent.glob("tuneloop.db*"):  # the file, its WAL and shm
        assert key.encode() not in path.read_bytes(), path


def test_a_managed_key_works_with_the_openai_client_next_to_static_keys(gateway: Gateway) -> None:
    key = gateway.create(name="bob")["key"]
    reply = gateway.client(key).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=2, temperature=0
    )
    assert reply.choices[0].message.content is not None
    assert gateway.chat(STATIC_KEY).status_code == 200  # the static key works as before
    assert_openai_error(gateway.chat(None), 401, type="authentication_error")
    assert_openai_error(gateway.chat("tl-not-a-key"), 401, code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        gateway.client("tl-wrong").models.list()


def test_revoked_and_expired_keys_get_401(gateway: Gateway) -> None:
    created = gateway.create(name="carol")
    assert gateway.models(created["key"]).status_code == 200
    revoked = gateway.admin("DELETE", f"/admin/keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert revoked.json()["revoked_at"] is not None
    error = assert_openai_error(
        gateway.models(created["key"]), 401, type="authentication_error", code="invalid_api_key"
    )
    assert "revoked" in error["message"]
    again = gateway.admin("DELETE", "/admin/keys/carol")  # idempotent, by name; first time kept
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]

    expiring = gateway.create(name="dave", expires_in=1)
    wait_until(
        lambda: gateway.models(expiring["key"]).status_code == 401, timeout=10, what="expiry"
    )
    error = assert_openai_error(gateway.models(expiring["key"]), 401, code="invalid_api_key")
    assert "expired" in error["message"]
    statuses = {k["name"]: k["status"] for k in gateway.admin("GET", "/admin/keys").json()["data"]}
    assert statuses["carol"] == "revoked" and statuses["dave"] == "expired"
    # Both are kept for the audit.
    assert len(gateway.rows("SELECT id FROM api_keys WHERE name IN ('carol', 'dave')")) == 2


# ---------------------------------------------------------------- models a key may use


def test_a_model_the_key_may_not_use_is_as_unknown_as_a_missing_one(gateway: Gateway) -> None:
    narrow = gateway.create(name="erin", models=["some-alias"])["key"]
    allowed = gateway.create(name="frank", models=[MODEL])["key"]

    hidden = gateway.chat(narrow, MODEL)
    unknown = gateway.chat(STATIC_KEY, "no-such-model")
    assert_openai_error(hidden, 404, code="model_not_found", param="model")
    assert hidden.json() == json.loads(unknown.text.replace("no-such-model", MODEL))
    assert gateway.chat(allowed, MODEL).status_code == 200

    with pytest.raises(openai.NotFoundError):
        gateway.client(narrow).completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    assert gateway.models(narrow).json()["data"] == []
    assert [m["id"] for m in gateway.models(allowed).json()["data"]] == [MODEL]
    assert MODEL in [m["id"] for m in gateway.models(STATIC_KEY).json()["data"]]


# ---------------------------------------------------------------- limits


def test_over_its_requests_per_minute_a_key_gets_429_in_openais_shape(gateway: Gateway) -> None:
    key = gateway.create(name="grace", requests_per_minute=2)["key"]
    # Every /v1 request counts; quick ones, so the window cannot turn while a slow engine works.
    assert [gateway.models(key).status_code for _ in range(2)] == [200, 200]
    refused = gateway.chat(key)
    error = assert_openai_error(
        refused, 429, type="requests", code="rate_limit_exceeded", param=None
    )
    assert "requests per min" in error["message"] and "grace" in error["message"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    with pytest.raises(openai.RateLimitError):
        gateway.client(key).models.list()
    assert gateway.chat(STATIC_KEY).status_code == 200  # other callers are not limited

    assert metric(gateway, "tuneloop_key_rate_limited_total", key="grace", limit="requests") == 2


def test_over_its_tokens_per_minute_a_key_gets_429_once_the_tokens_are_used(
    gateway: Gateway,
) -> None:
    key = gateway.create(name="heidi", tokens_per_minute=3)["key"]
    first = gateway.chat(key)  # admitted: the tokens are counted when it ends
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] > 3
    refused = gateway.chat(key)
    error = assert_openai_error(refused, 429, type="tokens", code="rate_limit_exceeded")
    assert "tokens per min" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60


# ---------------------------------------------------------------- usage


def test_usage_is_written_to_the_database_and_labelled_by_name_in_metrics(
    gateway: Gateway,
) -> None:
    created = gateway.create(name="ivan")
    key = created["key"]
    usages = [gateway.chat(key).json()["usage"] for _ in range(2)]
    stream = gateway.client(key).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=2, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    usages += [chunk.usage.model_dump() for chunk in stream if chunk.usage is not None]
    assert len(usages) == 3
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)

    def stored() -> tuple[int, int, int]:
        [row] = gateway.rows(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0) FROM api_key_usage WHERE key_id = ?",
            created["id"],
        )
        return row

    # Written by the background flush (every TUNELOOP_KEY_SYNC_INTERVAL), not per request.
    wait_until(lambda: stored() == (3, prompt, completion), timeout=15, what="usage flushed")
    listed = gateway.admin("GET", "/admin/keys").json()["data"]
    [record] = [k for k in listed if k["name"] == "ivan"]
    totals = {"requests": 3, "prompt_tokens": prompt, "completion_tokens": completion}
    assert record["usage"] == totals

    usage = gateway.admin("GET", f"/admin/keys/{created['id']}/usage", params={"hours": 2})
    assert usage.status_code == 200
    body = usage.json()
    assert body["name"] == "ivan" and body["totals"] == record["usage"]
    assert sum(b["requests"] for b in body["data"]) == 3
    for bucket in body["data"]:
        start = datetime.fromisoformat(bucket["start"])
        assert start.minute == start.second == 0
        assert datetime.now(UTC) - start < timedelta(hours=2)

    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert key not in text and created["prefix"] not in text
    assert metric(gateway, "tuneloop_key_requests_total", key="ivan", status="200") == 3
    assert metric(gateway, "tuneloop_key_tokens_total", key="ivan", kind="prompt") == prompt
    assert metric(gateway, "tuneloop_key_tokens_total", key="ivan", kind="completion") == completion


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "body, param",
    [
        ({"name": "has space"}, "body.name"),
        ({"name": ""}, "body.name"),
        ({"name": "a" * 65}, "body.name"),
        ({"name": "a/b"}, "body.name"),
        ({"name": "neg", "requests_per_minute": -1}, "body.requests_per_minute"),
        ({"name": "zero", "tokens_per_minute": 0}, "body.tokens_per_minute"),
        ({"name": "ttl", "expires_in": -5}, "body.expires_in"),
        ({"name": "both", "expires_in": 60, "expires_at": "2999-01-01T00:00:00Z"}, "body"),
        ({"name": "past", "expires_at": "2001-01-01T00:00:00Z"}, "body.expires_at"),
        ({"name": "naive", "expires_at": "2999-01-01T00:00:00"}, "body.expires_at"),
        ({"name": "typo", "rpm": 5}, "body.rpm"),
        ({"name": "models", "models": "all"}, "body.models"),
    ],
)
def test_bad_input_is_an_openai_shaped_400_and_nothing_is_written(
    gateway: Gateway, body: dict[str, Any], param: str
) -> None:
    before = gateway.rows("SELECT COUNT(*) FROM api_keys")
    assert_openai_error(
        gateway.admin("POST", "/admin/keys", json=body), 400, type="invalid_request_error",
        param=param,
    )  # fmt: skip
    assert gateway.rows("SELECT COUNT(*) FROM api_keys") == before


def test_taken_names_and_unknown_keys_are_refused(gateway: Gateway) -> None:
    gateway.create(name="judy")
    before = gateway.rows("SELECT COUNT(*) FROM api_keys")
    assert_openai_error(gateway.admin("POST", "/admin/keys", json={"name": "judy"}), 409,
                        code="exists", param="name")  # fmt: skip
    assert gateway.rows("SELECT COUNT(*) FROM api_keys") == before
    for method, path in [
        ("GET", "/admin/keys/key_0000000000000000"),
        ("DELETE", "/admin/keys/nobody"),
        ("GET", "/admin/keys/nobody/usage"),
    ]:
        assert_openai_error(gateway.admin(method, path), 404, code="not_found")
    no_hours = gateway.admin("GET", "/admin/keys/judy/usage", params={"hours": 0})
    assert_openai_error(no_hours, 400, param="query.hours")
    # Inference keys never open the admin API.
    judy = gateway.create(name="judy2")["key"]
    response = httpx.get(f"{gateway.url}/admin/keys", headers=bearer(judy), timeout=10)
    assert response.status_code == 401


# ---------------------------------------------------------------- the command line


def test_the_cli_creates_lists_and_revokes_keys(gateway: Gateway) -> None:
    env = {**os.environ, "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN}

    def tuneloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "keys", *args, "--url", gateway.url],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    made = tuneloop("create", "mallory", "--model", MODEL, "--rpm", "50", "--expires-in", "1h")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert "cannot be shown again" in made.stderr
    assert created["models"] == [MODEL] and created["requests_per_minute"] == 50
    expires = datetime.fromisoformat(created["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=58) < expires <= timedelta(hours=1)
    assert gateway.chat(created["key"]).status_code == 200

    listed = tuneloop("list")
    assert listed.returncode == 0, listed.stderr
    assert created["key"] not in listed.stdout
    assert "mallory" in {k["name"] for k in json.loads(listed.stdout)}
    usage = tuneloop("usage", "mallory")
    assert usage.returncode == 0 and json.loads(usage.stdout)["totals"]["requests"] == 1

    revoked = tuneloop("revoke", created["id"])
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["status"] == "revoked"
    assert gateway.chat(created["key"]).status_code == 401

    bad = tuneloop("create", "bad name")
    assert bad.returncode == 1 and "error 400" in bad.stderr
    missing = tuneloop("revoke", "key_nope")
    assert missing.returncode == 1 and "error 404" in missing.stderr
    duration = tuneloop("create", "oscar", "--expires-in", "soon")
    assert duration.returncode == 2 and "expires-in" in duration.stderr
    assert not gateway.rows("SELECT id FROM api_keys WHERE name IN ('bad name', 'oscar')")


# ---------------------------------------------------------------- several gateways, one database


def test_open_until_a_key_exists_and_gateways_sharing_a_database_converge(
    engine_url: str, tmp_path: Path
) -> None:
    with (
        running_gateway(settings_for(engine_url, tmp_path)) as first,
        running_gateway(settings_for(engine_url, tmp_path)) as second,
    ):
        db = tmp_path / "tuneloop.db"
        one, two = Gateway(first, db), Gateway(second, db)
        assert two.models(None).status_code == 200  # no key of any kind: open, as on a laptop
        created = one.create(name="shared", models=[MODEL])
        assert one.models(None).status_code == 401  # at once on the gateway that made it
        wait_until(lambda: two.models(None).status_code == 401, timeout=10, what="second closes")
        assert two.chat(created["key"]).status_code == 200
        one.admin("DELETE", f"/admin/keys/{created['id']}")
        wait_until(
            lambda: two.models(created["key"]).status_code == 401, timeout=10, what="revocation"
        )
        assert two.models(None).status_code == 401  # revoking every key does not reopen /v1


# ---------------------------------------------------------------- the window itself


def test_the_rate_window_turns_after_sixty_seconds() -> None:
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    key = ApiKeyPrincipal(id="k", name="k", requests_per_minute=1, tokens_per_minute=10)
    assert limiter.admit(key) is None
    refusal = limiter.admit(key)
    assert refusal is not None and (refusal.limit, refusal.retry_after) == ("requests", 60)
    now[0] += 59.5
    assert limiter.admit(key).retry_after == 1  # type: ignore[union-attr]
    now[0] += 0.5
    assert limiter.admit(key) is None
    limiter.add_tokens(key, 12)
    now[0] += 60
    assert limiter.admit(key) is None  # a new window: the tokens are forgotten
    limiter.add_tokens(key, 10)
    assert limiter.admit(key).limit == "tokens"  # type: ignore[union-attr]
    unlimited = ApiKeyPrincipal(id="u", name="u")
    assert all(limiter.admit(unlimited) is None for _ in range(1000))
