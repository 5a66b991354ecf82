"""The embedded engine: a vLLM OpenAI server run as a child process on the prepared model.

The gateway only ever talks to it over HTTP, exactly as it talks to remote replicas. The child
gets a process group of its own (vLLM spawns an engine-core process under it), so stopping
signals the whole group and leaves no orphan; on Linux it also dies with its parent. Its output
goes through a pipe into a log file that rotates by size (a long-lived engine logs a line per
request batch). ``gateway.supervisor`` restarts it when it exits or stops answering.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import logging.handlers
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from gateway.settings import Settings

logger = logging.getLogger("tuneloop.engine")

_PR_SET_PDEATHSIG = 1


class EngineFailed(RuntimeError):
    """The embedded engine exited or did not become ready; the message quotes its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _pump(stream: IO[bytes], log: logging.Handler) -> None:
    """Copy the child's output into ``log`` line by line until the pipe closes."""
    with contextlib.closing(stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            log.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))


class EmbeddedEngine:
    """Start, wait for and stop one vLLM OpenAI server child process (restartable: the port
    is fixed at construction, so a restarted engine answers at the same URL)."""

    def __init__(self, settings: Settings, *, log_path: Path | None = None) -> None:
        self.settings = settings
        self.port = settings.engine_port or free_port(settings.engine_host)
        self.log_path = log_path or settings.data_dir / "logs" / "engine.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._log: logging.Handler | None = None
        self._abort = threading.Event()  # set by stop(): a readiness wait gives up at once

    @property
    def url(self) -> str:
        return f"http://{self.settings.engine_host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        s = self.settings
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(s.base_model_path),
            "--served-model-name", s.model_name,
            "--host", s.engine_host,
            "--port", str(self.port),
            "--dtype", s.engine_dtype,
            "--max-model-len", str(s.engine_max_model_len),
            "--enable-lora",
            "--max-loras", str(s.engine_max_loras),
            "--max-lora-rank", str(s.engine_max_lora_rank),
            "--scheduling-policy", s.engine_scheduling_policy,
            "--disable-uvicorn-access-log",
            *shlex.split(s.engine_extra_args),
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.settings.engine_kv_cache_gib))
        env.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for a hub
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("VLLM_DO_NOT_TRACK", "1")
        return env

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("engine already started")
        if not (self.settings.base_model_path / "config.json").is_file():
            raise EngineFailed(
                f"no model at {self.settings.base_model_path}: run 'tuneloop model prepare'"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._abort.clear()
        if self._log is None:
            # stdlib rotation: engine.log, engine.log.1, ... each at most engine_log_max_bytes.
            self._log = logging.handlers.RotatingFileHandler(
                self.log_path,
                maxBytes=self.settings.engine_log_max_bytes,
                backupCount=self.settings.engine_log_backups,
                encoding="utf-8",
            )
            self._log.setFormatter(logging.Formatter("%(message)s"))
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        assert self._process.stdout is not None
        self._pump = threading.Thread(
            target=_pump, args=(self._process.stdout, self._log), name="engine-log", daemon=True
        )
        self._pump.start()
        logger.info(
            "event=engine_starting pid=%d url=%s model=%s log=%s",
            self._process.pid,
            self.url,
            self.settings.base_model_path,
            self.log_path,
        )

    def poll(self) -> int | None:
        """The child's exit code, or ``None`` while it runs (or was never started)."""
        return self._process.poll() if self._process is not None else None

    def wait_ready(self, *, tick: Callable[[float], None] | None = None) -> None:
        """Block until ``/health`` answers 200; raise ``EngineFailed`` if the child dies first
        (or ``stop`` is called meanwhile, from another thread)."""
        process = self._process
        if process is None:
            raise RuntimeError("engine not started")
        started = time.monotonic()
        deadline = started + self.settings.engine_startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self._abort.is_set():
                    raise EngineFailed("stopped while starting")
                if (code := process.poll()) is not None:
                    raise EngineFailed(f"vLLM exited with code {code}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise EngineFailed(
                        f"vLLM not ready after {self.settings.engine_startup_timeout:.0f}s:\n"
                        f"{self.log_tail()}"
                    )
                if tick is not None:
                    tick(time.monotonic() - started)
                time.sleep(0.5)
        logger.info("event=engine_ready url=%s seconds=%.1f", self.url, time.monotonic() - started)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the child's process group, then SIGKILL whatever is left after ``timeout``."""
        self._abort.set()
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "event=engine_kill pid=%d reason='no exit %.0fs after SIGTERM'",
                process.pid,
                timeout,
            )
        # The group outlives its leader if the engine core lingers: make sure it is gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)  # the pipe closed with the group: the last lines are in
            self._pump = None
        logger.info("event=engine_stopped pid=%d code=%s", process.pid, process.returncode)

    def close(self) -> None:
        """Stop the child and close the log file."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no engine log)"

    def __enter__(self) -> EmbeddedEngine:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
