"""The ``tuneloop`` command line."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from adapters.base_model import BundledModelMissing, is_prepared, prepare_base_model
from adapters.datasets import DatasetError
from adapters.progress import step_line
from gateway.cli_admin import adapters_app, aliases_app, events, ingest
from gateway.cli_eval import eval_app, rubrics_app
from gateway.cli_keys import keys_app
from gateway.cli_loop import datasets_app, jobs, retrain
from gateway.engine import EmbeddedEngine, EngineFailed
from gateway.settings import Settings
from gateway.workers import supervise

app = typer.Typer(
    name="tuneloop",
    help="OpenAI-compatible gateway for vLLM with LoRA adapters and continuous evaluation.\n\n"
    "Every option can also be set by a TUNELOOP_* environment variable (see README).",
    no_args_is_help=True,
    add_completion=False,
)
model_app = typer.Typer(help="Manage the bundled base model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(adapters_app, name="adapters")
app.add_typer(aliases_app, name="aliases")
app.add_typer(rubrics_app, name="rubrics")
app.add_typer(eval_app, name="eval")
app.add_typer(datasets_app, name="datasets")
app.add_typer(keys_app, name="keys")
app.command("retrain")(retrain)
app.command("jobs")(jobs)
app.command("events")(events)
app.command("ingest")(ingest)

console = Console(stderr=True)


def configure_logging(level: str) -> None:
    """One line per event: time, level, logger, then the event's key=value pairs."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # httpx (which polls the starting engine) logs every call at INFO: too chatty.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        console.print(f"[red]invalid configuration:[/red]\n{exc}")
        raise typer.Exit(2) from exc


def _prepare(settings: Settings, *, force: bool = False) -> None:
    target = settings.base_model_path
    if is_prepared(target) and not force:
        console.print(f"model ready: {target}")
        return
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("preparing the bundled model", total=None)
        try:
            prepare_base_model(
                target,
                force=force,
                progress=lambda stage: progress.update(task, description=f"model: {stage}"),
            )
        except BundledModelMissing as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    console.print(f"model ready: {target}")


@model_app.command("prepare")
def model_prepare(
    force: Annotated[bool, typer.Option(help="Convert again even if the folder exists.")] = False,
) -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into a safetensors folder (once)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    _prepare(settings, force=force)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [TUNELOOP_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [TUNELOOP_PORT].")] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream",
            help="Base URL of a vLLM OpenAI server; repeat (or comma-separate) for replicas "
            "[TUNELOOP_UPSTREAMS]. "
            "Without any, an embedded vLLM engine is started on the bundled model.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Gateway worker processes on the same port, each with its own SO_REUSEPORT "
            "listener; they share state through the database [TUNELOOP_WORKERS]."
        ),
    ] = None,
) -> None:
    """Serve the OpenAI-compatible gateway (and, without upstreams, an embedded vLLM engine)."""
    settings = load_settings(host=host, port=port, upstreams=upstream or None, workers=workers)
    configure_logging(settings.log_level)
    settings.warn_if_exposed()

    engine: EmbeddedEngine | None = None
    lost: list[str] = []
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if not settings.upstreams:
            _prepare(settings)
            engine = EmbeddedEngine(settings)
            engine.start()
            _wait_for_engine(engine)
            # The gateway's own requests yield to clients on the engine it started (priority).
            priority = settings.internal_priority_value(embedded=True)
            settings = settings.model_copy(update={
                "upstreams": [engine.url],
                "internal_priority": "off" if priority is None else str(priority),
            })  # fmt: skip
        if settings.workers > 1:
            signal.signal(signal.SIGTERM, previous)  # the worker supervisor handles signals
            if (reason := asyncio.run(supervise(settings, engine))) is not None:
                lost.append(reason)
        else:
            # uvicorn handles SIGINT/SIGTERM itself, shuts down gracefully, restores our
            # handler and raises the signal again: that lands in the KeyboardInterrupt below,
            # so the engine is always stopped by us and the exit status is 0.
            _run_gateway(settings, engine=engine, lost=lost)
    except EngineFailed as exc:
        console.print(f"[red]embedded engine failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print("interrupted")
    finally:
        if engine is not None:
            engine.close()
        signal.signal(signal.SIGTERM, previous)
    if lost:
        # A supervisor gave up (the engine, or workers that keep dying): exit non-zero so
        # systemd or Kubernetes take over.
        console.print(f"[red]gave up:[/red] {lost[0]}")
        raise typer.Exit(3)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Chat-format JSONL ({'messages': [...]} per line).")],
    out: Annotated[Path, typer.Option(help="Folder to write the adapter to (must not exist).")],
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 8,
    alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 3,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
    val_fraction: Annotated[float, typer.Option(help="Share held out for validation.")] = 0.1,
    eval_every: Annotated[int, typer.Option(help="Steps between validation passes.")] = 5,
    patience: Annotated[int, typer.Option(help="Passes without improvement to stop.")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train a LoRA adapter on the prepared base model (loss on assistant turns only)."""
    from adapters.training import TrainConfig
    from adapters.training import train as run_training

    settings = load_settings()
    configure_logging(settings.log_level)
    _prepare(settings)
    try:
        config = TrainConfig(
            data=data, out=out, base_model=settings.base_model_path, rank=rank, alpha=alpha,
            epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
            val_fraction=val_fraction, eval_every=eval_every, patience=patience, seed=seed,
        )  # fmt: skip
    except ValidationError as exc:
        console.print(f"[red]invalid training options:[/red] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from exc
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("loading model", total=None)
        began = time.monotonic()

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, description=f"loss {loss:.4f}")
            if not console.is_terminal:  # a job's log: one line per step (gateway.loop.progress)
                eta = (time.monotonic() - began) / step * (total - step)
                print(step_line(step, total, loss, eta), flush=True)

        try:
            report = run_training(config, on_step=on_step)
        except DatasetError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
    console.print(
        f"adapter written to {out}: {report.steps} steps, best validation loss "
        f"{report.best_val_loss}, dataset {report.dataset_hash[:19]}…"
    )


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait_for_engine(engine: EmbeddedEngine) -> None:
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"starting vLLM at {engine.url} (log: {engine.log_path})")
        engine.wait_ready(tick=lambda _elapsed: progress.update(task))


def _run_gateway(
    settings: Settings, *, engine: EmbeddedEngine | None = None, lost: list[str] | None = None
) -> None:
    """Serve until a signal, or until the engine supervisor gives up (its reason in ``lost``)."""
    import uvicorn

    from gateway.app import create_app

    server: uvicorn.Server | None = None

    def engine_lost(reason: str) -> None:
        if lost is not None:
            lost.append(reason)
        if server is not None:
            server.should_exit = True  # graceful shutdown, then serve() exits non-zero

    config = uvicorn.Config(
        create_app(settings, engine=engine, on_engine_lost=engine_lost),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,  # tuneloop logs one line per inference request itself
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # the lifespan failed: uvicorn has logged why (as uvicorn.run does)


if __name__ == "__main__":  # pragma: no cover
    app()
