"""The ``tuneloop`` command line."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from adapters.base_model import BundledModelMissing, is_prepared, prepare_base_model
from gateway.engine import EmbeddedEngine, EngineFailed
from gateway.settings import Settings

app = typer.Typer(
    name="tuneloop",
    help="OpenAI-compatible gateway for vLLM with LoRA adapters and continuous evaluation.\n\n"
    "Every option can also be set by a TUNELOOP_* environment variable (see README).",
    no_args_is_help=True,
    add_completion=False,
)
model_app = typer.Typer(help="Manage the bundled base model.", no_args_is_help=True)
app.add_typer(model_app, name="model")

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
            help="Base URL of a vLLM OpenAI server; repeat for replicas [TUNELOOP_UPSTREAMS]. "
            "Without any, an embedded vLLM engine is started on the bundled model.",
        ),
    ] = None,
) -> None:
    """Serve the OpenAI-compatible gateway (and, without upstreams, an embedded vLLM engine)."""
    settings = load_settings(host=host, port=port, upstreams=upstream or None)
    configure_logging(settings.log_level)
    settings.warn_if_exposed()

    engine: EmbeddedEngine | None = None
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if not settings.upstreams:
            _prepare(settings)
            engine = EmbeddedEngine(settings)
            engine.start()
            _wait_for_engine(engine)
            settings = settings.model_copy(update={"upstreams": [engine.url]})
        # uvicorn handles SIGINT/SIGTERM itself, shuts down gracefully, restores our handler and
        # raises the signal again: that lands in the KeyboardInterrupt below, so the engine is
        # always stopped by us and the exit status is 0.
        _run_gateway(settings)
    except EngineFailed as exc:
        console.print(f"[red]embedded engine failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print("interrupted")
    finally:
        if engine is not None:
            engine.stop()
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait_for_engine(engine: EmbeddedEngine) -> None:
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"starting vLLM at {engine.url} (log: {engine.log_path})")
        engine.wait_ready(tick=lambda _elapsed: progress.update(task))


def _run_gateway(settings: Settings) -> None:
    import uvicorn

    from gateway.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,  # tuneloop logs one line per inference request itself
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":  # pragma: no cover
    app()
