"""Session fixtures: the real ``tuneloop serve`` (gateway + embedded vLLM) started once.

Slow parts start once per session: the model is prepared by ``make test`` before pytest runs
(the fixture prepares it too when run alone), and one ``tuneloop serve`` process with its vLLM
child serves every test. Gateways with special settings are started in-process (uvicorn in a
thread, real HTTP) in front of that same vLLM server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import psutil
import pytest

from adapters.base_model import prepare_base_model
from gateway.engine import free_port
from gateway.settings import Settings
from tests.helpers import (
    ADMIN_TOKEN,
    EXAMPLE_DATA,
    PROSE_DATA,
    ROOT,
    http_ok,
    train_adapter,
    wait_until,
)
from tests.postgres import database_url, postgres_server  # noqa: F401  (fixtures)
from tests.ray_cluster import ray_address, ray_head  # noqa: F401  (fixtures)


def pytest_configure(config: pytest.Config) -> None:
    """Keep the developer's data dir out of the tests: only the prepared model is shared.

    Every ``Settings()`` made during the session sees a throwaway data dir (database, indexes,
    adapters, logs) and the model that ``make test`` prepared where the developer's settings
    say.
    """
    model = Settings().base_model_path
    os.environ["TUNELOOP_MODEL_PATH"] = str(model)
    os.environ["TUNELOOP_DATA_DIR"] = tempfile.mkdtemp(prefix="tuneloop-tests-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("TUNELOOP_DATA_DIR", ""), ignore_errors=True)


@dataclass(frozen=True)
class ServeProcess:
    gateway_url: str
    engine_url: str
    pid: int


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings from the environment (TUNELOOP_DATA_DIR etc.), model prepared."""
    settings = Settings()
    prepare_base_model(settings.base_model_path)
    return settings


@pytest.fixture(scope="session")
def serve(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, adapter_root: Path
) -> Iterator[ServeProcess]:
    """``tuneloop serve`` as a user runs it: gateway plus embedded vLLM, stopped by SIGTERM.

    Teardown checks what users rely on at Ctrl-C/SIGTERM: a clean exit and no orphan process.
    """
    port, engine_port = free_port(), free_port()
    data_dir = tmp_path_factory.mktemp("serve")
    log = data_dir / "serve.log"
    env = {
        **os.environ,
        "TUNELOOP_PORT": str(port),
        "TUNELOOP_ENGINE_PORT": str(engine_port),
        # A data dir of its own (database, logs); only the prepared model is shared.
        "TUNELOOP_DATA_DIR": str(data_dir),
        "TUNELOOP_MODEL_PATH": str(base_settings.base_model_path),
        "TUNELOOP_HEALTH_INTERVAL": "1",
        # The admin API (the core-split test retrains on this engine's host) and the adapters
        # the session trains.
        "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "TUNELOOP_ADAPTER_ROOT": str(adapter_root),
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    gateway_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: process.poll() is not None or http_ok(f"{gateway_url}/readyz"),
            timeout=600,
            what="tuneloop serve to be ready",
        )
        if process.poll() is not None:
            raise RuntimeError(f"tuneloop serve exited:\n{log.read_text()[-4000:]}")
    except BaseException:
        process.kill()
        raise
    family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    yield ServeProcess(gateway_url, f"http://127.0.0.1:{engine_port}", process.pid)

    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    survivors = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert code == 0, f"tuneloop serve exited with {code} on SIGTERM:\n{log.read_text()[-3000:]}"
    assert not survivors, f"processes left behind after SIGTERM: {survivors}"


@pytest.fixture(scope="session")
def engine_url(serve: ServeProcess) -> str:
    return serve.engine_url


@pytest.fixture(scope="session")
def client(serve: ServeProcess) -> openai.OpenAI:
    """The official OpenAI client pointed at the real gateway."""
    return openai.OpenAI(base_url=f"{serve.gateway_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="session")
def trained_adapters(base_settings: Settings, adapter_root: Path) -> dict[str, Path]:
    """Two adapters trained by ``tuneloop train`` (its own process) on the example task."""
    return {
        label: train_adapter(
            base_settings, EXAMPLE_DATA, adapter_root / f"extract-{label}", steps=4, seed=seed
        )
        for label, seed in (("v1", 1), ("v2", 2))
    }


@pytest.fixture(scope="session")
def prose_adapter(base_settings: Settings, adapter_root: Path) -> Path:
    """An adapter trained on the same inputs answered in prose ("format B"): served where the
    JSON adapter was, it fails a JSON rubric, which plants drift for real."""
    return train_adapter(base_settings, PROSE_DATA, adapter_root / "extract-prose", steps=8, seed=3)
