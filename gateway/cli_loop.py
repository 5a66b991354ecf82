"""``tuneloop datasets|retrain|jobs``: the loop from the command line (over HTTP)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)

from gateway.cli_admin import UrlOption, admin_call, print_json

datasets_app = typer.Typer(
    help="Versioned training datasets per alias (scrubbed, deduplicated, frozen test set).",
    no_args_is_help=True,
)
console = Console(stderr=True)
_TERMINAL = {"failed", "cancelled", "rejected", "promoted", "rolled_back"}


@datasets_app.command("import")
def datasets_import(
    alias: Annotated[str, typer.Argument(help="Alias the examples train.")],
    file: Annotated[Path, typer.Argument(help="Chat-format JSONL ({'messages': [...]}).")],
    url: UrlOption = None,
) -> None:
    """Import FILE as ALIAS's next dataset version; the first import freezes its test set."""
    result = admin_call(
        "POST",
        f"/admin/datasets/{alias}?source={file.name}",
        url,
        text=file.read_text(),
        content_type="application/x-ndjson",
    )
    print_json(result)


@datasets_app.command("list")
def datasets_list(
    alias: Annotated[str | None, typer.Argument(help="Only this alias.")] = None,
    url: UrlOption = None,
) -> None:
    """List dataset versions with their hash, lineage and counts."""
    query = f"?alias={alias}" if alias else ""
    print_json(admin_call("GET", f"/admin/datasets{query}", url)["data"])


@datasets_app.command("show")
def datasets_show(
    alias: Annotated[str, typer.Argument(help="Alias.")],
    version: Annotated[int, typer.Argument(help="Dataset version number.")],
    url: UrlOption = None,
) -> None:
    """Show one dataset version."""
    print_json(admin_call("GET", f"/admin/datasets/{alias}/{version}", url))


@datasets_app.command("diff")
def datasets_diff(
    alias: Annotated[str, typer.Argument(help="Alias.")],
    a: Annotated[int, typer.Argument(help="Older version.")],
    b: Annotated[int, typer.Argument(help="Newer version.")],
    url: UrlOption = None,
) -> None:
    """What changed between two versions of ALIAS's dataset."""
    print_json(admin_call("GET", f"/admin/datasets/{alias}/{a}/diff/{b}", url))


def retrain(
    alias: Annotated[str, typer.Argument(help="Alias to retrain.")],
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Training steps (default: TUNELOOP_LOOP_TRAIN_STEPS).")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(min=0, help="Learning rate (default: TUNELOOP_LOOP_TRAIN_LR)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    url: UrlOption = None,
) -> None:
    """Retrain ALIAS now: dataset, challenger, gate on the frozen set, canary, promotion."""
    body: dict[str, object] = {"alias": alias}
    if max_steps is not None:
        body["max_steps"] = max_steps
    if lr is not None:
        body["lr"] = lr
    job = admin_call("POST", "/admin/retrain", url, body)
    if not wait:
        print_json(job)
        return
    job = _follow(job, url)
    print_json(job)
    if job["state"] != "promoted":
        raise typer.Exit(1)


def _follow(job: dict, url: str | None) -> dict:
    """Poll the job until it ends, with a progress bar of its training steps; its last record."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"job {job['id']}: {job['state']}", total=None)
        while job["state"] not in _TERMINAL:
            time.sleep(2)
            job = admin_call("GET", f"/admin/jobs/{job['id']}", url)
            progress = (job.get("detail") or {}).get("progress") or {}
            loss = progress.get("loss")
            said = f" · step {progress['step']}, loss {loss:.4f}" if loss is not None else ""
            bar.update(task, description=f"job {job['id']}: {job['state']}{said}",
                       completed=progress.get("step", 0), total=progress.get("total"))  # fmt: skip
    return job


def jobs(
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    watch: Annotated[
        bool,
        typer.Option(help="Follow the newest job (of --alias) to its end, with a progress bar."),
    ] = False,
    cancel: Annotated[
        int | None,
        typer.Option(
            metavar="JOB", help="Cancel this active job: its trainer, gate or canary stops."
        ),
    ] = None,
    url: UrlOption = None,
) -> None:
    """List retrain jobs with their state, timings and gate verdict (or cancel one)."""
    if cancel is not None:
        print_json(admin_call("POST", f"/admin/jobs/{cancel}/cancel", url))
        return
    query = f"?limit={1 if watch else limit}" + (f"&alias={alias}" if alias else "")
    found = admin_call("GET", f"/admin/jobs{query}", url)["data"]
    if not watch:
        print_json(found)
        return
    if not found:
        console.print("no retrain job" + (f" for {alias}" if alias else ""))
        raise typer.Exit(1)
    print_json(_follow(found[0], url))
