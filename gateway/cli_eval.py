"""``tuneloop rubrics|eval``: continuous evaluation from the command line (over HTTP)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli_admin import UrlOption, admin_call, print_json

rubrics_app = typer.Typer(
    help="Set and show the rubric an alias is scored by.", no_args_is_help=True
)
eval_app = typer.Typer(
    help="Read evaluation results: summary, samples, drift, reports.", no_args_is_help=True
)


@rubrics_app.command("set")
def rubrics_set(
    alias: Annotated[str, typer.Argument(help="Alias (or base model) the rubric scores.")],
    file: Annotated[
        Path | None, typer.Argument(help="Rubric YAML file; '-' or omitted: standard input.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Store a new rubric version for ALIAS (a changed rubric starts a new score epoch)."""
    text = sys.stdin.read() if file is None or str(file) == "-" else file.read_text()
    print_json(admin_call("PUT", f"/admin/rubrics/{alias}", url, text=text))


@rubrics_app.command("show")
def rubrics_show(
    alias: Annotated[str, typer.Argument(help="Alias whose rubric to show.")],
    url: UrlOption = None,
) -> None:
    """Show the rubric in force for ALIAS, with its version and epoch."""
    print_json(admin_call("GET", f"/admin/rubrics/{alias}", url))


@eval_app.command("summary")
def eval_summary(url: UrlOption = None) -> None:
    """Per alias and version: samples, mean score vs baseline, pass rates, drift state."""
    print_json(admin_call("GET", "/admin/eval/summary", url))


@eval_app.command("samples")
def eval_samples(
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    score_below: Annotated[float | None, typer.Option(help="Only scores below this.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    url: UrlOption = None,
) -> None:
    """List scrubbed samples, newest first, with their scores and feedback."""
    query = f"?limit={limit}"
    if alias:
        query += f"&alias={alias}"
    if score_below is not None:
        query += f"&score_below={score_below}"
    print_json(admin_call("GET", f"/admin/eval/samples{query}", url)["data"])


@eval_app.command("drift-check")
def eval_drift_check(url: UrlOption = None) -> None:
    """Run the drift check now and print each alias's state."""
    print_json(admin_call("POST", "/admin/eval/drift-check", url)["data"])


@eval_app.command("ack")
def eval_ack(
    alias: Annotated[str, typer.Argument(help="Alias whose drift to acknowledge.")],
    url: UrlOption = None,
) -> None:
    """Acknowledge drift on ALIAS: its baseline restarts from the next samples."""
    print_json(admin_call("POST", f"/admin/eval/ack/{alias}", url))


@eval_app.command("report")
def eval_report(url: UrlOption = None) -> None:
    """Write today's quality report now and list the reports."""
    admin_call("POST", "/admin/eval/reports", url)
    print_json(admin_call("GET", "/admin/eval/reports", url)["data"])
