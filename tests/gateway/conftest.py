"""A gateway with continuous evaluation switched fully on, shared by the eval tests and the
dashboard's browser test: real vLLM, real adapters trained by our trainer, sampling at 100%."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, MODEL, running_gateway, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
SYSTEM = "Extract the person's name, age and city from the text. Answer with JSON only."
PEOPLE = [
    ("Marta", 41, "Porto"), ("Jonas", 35, "Oslo"), ("Aiko", 29, "Kyoto"), ("Lena", 52, "Graz"),
    ("Omar", 38, "Cairo"), ("Sofia", 27, "Lima"), ("Piet", 61, "Ghent"), ("Ines", 33, "Braga"),
    ("Tomas", 45, "Brno"), ("Yara", 24, "Doha"),
]  # fmt: skip
JSON_RUBRIC = """\
description: extraction answers are JSON with name, age and city
checks:
  - type: json_valid
    weight: 2
  - type: json_schema
    schema: {type: object, required: [name, age, city]}
  - type: length
    unit: chars
    max: 300
"""


def messages(index: int) -> list[dict[str, str]]:
    name, age, city = PEOPLE[index % len(PEOPLE)]
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{name} is {age} years old and lives in {city}."},
    ]


@dataclass
class EvalGateway:
    url: str
    aliases: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers=ADMIN, timeout=120, **kwargs)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0)

    def ask(self, model: str, count: int, *, max_tokens: int = 32) -> list[str]:
        """``count`` extraction requests, 8 at a time; their request ids."""

        def one(index: int) -> str:
            raw = self.client().chat.completions.with_raw_response.create(
                model=model, messages=messages(index), max_tokens=max_tokens, temperature=0
            )
            return raw.headers["x-request-id"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(count)))

    def samples(self, **query: object) -> list[dict]:
        response = self.call("GET", "/admin/eval/samples", params=query)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def wait_sampled(self, request_ids: list[str]) -> None:
        """Until every one of ``request_ids`` is stored (the queue is consumed off-path)."""

        def stored() -> bool:
            return all(self.samples(request_id=rid) for rid in request_ids)

        wait_until(stored, timeout=120, what="samples to be stored", interval=0.5)

    def register(self, name: str, folder: Path) -> str:
        response = self.call("POST", "/admin/adapters", json={"name": name, "path": folder.name})
        assert response.status_code == 201, response.text
        return response.json()["served_name"]

    def point(self, alias: str, served_name: str) -> None:
        response = self.call("PUT", f"/admin/aliases/{alias}", json={"targets": {served_name: 100}})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="session")
def eval_gateway(
    engine_url: str,
    adapter_root: Path,
    trained_adapters: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EvalGateway]:
    """Alias ``evalx`` on a JSON adapter with a JSON rubric, every request sampled, and some
    traffic through it and through the base model already scored."""
    settings = Settings(
        upstreams=[engine_url],
        admin_token=ADMIN_TOKEN,
        adapter_root=adapter_root,
        data_dir=tmp_path_factory.mktemp("eval"),
        health_interval=1,
        eval_sample_rate=1.0,
        eval_drift_interval=3600,  # the tests run the check themselves
        eval_drift_baseline_samples=20,
        eval_drift_batch_size=5,
    )
    with running_gateway(settings) as url:
        gateway = EvalGateway(url, aliases=["evalx", MODEL])
        gateway.point("evalx", gateway.register("evalx", trained_adapters["v1"]))
        assert gateway.call("PUT", "/admin/rubrics/evalx", content=JSON_RUBRIC).status_code == 200
        gateway.wait_sampled(gateway.ask("evalx", 6) + gateway.ask(MODEL, 2))
        yield gateway
