"""``tuneloop adapters|aliases|events|ingest``: the admin API from the command line (HTTP).

The running gateway owns loading and routing, so these commands talk to it; they read the
admin token from ``TUNELOOP_ADMIN_TOKEN`` and the address from ``--url`` or
``TUNELOOP_HOST``/``TUNELOOP_PORT``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.settings import Settings

adapters_app = typer.Typer(help="Register, list and retire adapter versions.", no_args_is_help=True)
aliases_app = typer.Typer(
    help="Point aliases at versions, canary, roll back.", no_args_is_help=True
)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Gateway URL (default: http://TUNELOOP_HOST:TUNELOOP_PORT)."),
]


def admin_call(
    method: str,
    path: str,
    url: str | None,
    body: dict[str, Any] | None = None,
    *,
    text: str | None = None,
    content_type: str = "application/yaml",
) -> Any:
    settings = Settings()
    if settings.admin_token is None:
        typer.echo("TUNELOOP_ADMIN_TOKEN is not set", err=True)
        raise typer.Exit(2)
    base = url or f"http://{settings.host}:{settings.port}"
    headers = {"authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
    if text is not None:
        headers["content-type"] = content_type
    try:
        response = httpx.request(
            method, f"{base}{path}", json=body, content=text, headers=headers, timeout=300
        )
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the gateway at {base}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        typer.echo(f"error {response.status_code}: {message}", err=True)
        raise typer.Exit(1)
    return response.json() if response.content else None


def print_json(data: Any) -> None:
    if data is not None:
        typer.echo(json.dumps(data, indent=2))


@adapters_app.command("register")
def adapters_register(
    name: Annotated[str, typer.Argument(help="Adapter name (versions are numbered under it).")],
    path: Annotated[str, typer.Argument(help="Folder inside the adapter root.")],
    url: UrlOption = None,
) -> None:
    """Register the next version of NAME from PATH and load it on every replica."""
    print_json(admin_call("POST", "/admin/adapters", url, {"name": name, "path": path}))


@adapters_app.command("list")
def adapters_list(url: UrlOption = None) -> None:
    """List adapter versions with their lineage and status."""
    print_json(admin_call("GET", "/admin/adapters", url)["data"])


@adapters_app.command("delete")
def adapters_delete(
    served_name: Annotated[str, typer.Argument(help="Version to retire, e.g. extract@v1.")],
    url: UrlOption = None,
) -> None:
    """Retire a version (refused while an alias points at it)."""
    print_json(admin_call("DELETE", f"/admin/adapters/{served_name}", url))


def parse_targets(targets: list[str]) -> dict[str, int]:
    """``extract@v2`` (all traffic) or ``extract@v1=90 extract@v2=10`` (a canary)."""
    if len(targets) == 1 and "=" not in targets[0]:
        return {targets[0]: 100}
    parsed: dict[str, int] = {}
    for item in targets:
        name, sep, weight = item.partition("=")
        if not sep or not weight.isdigit():
            raise typer.BadParameter(f"{item!r}: use SERVED_NAME=WEIGHT")
        parsed[name] = int(weight)
    return parsed


@aliases_app.command("set")
def aliases_set(
    alias: Annotated[str, typer.Argument(help="Alias clients call, e.g. extract.")],
    targets: Annotated[
        list[str], typer.Argument(help="extract@v2, or weighted: extract@v1=90 extract@v2=10.")
    ],
    url: UrlOption = None,
) -> None:
    """Point ALIAS at one version, or split it between versions (weights sum to 100)."""
    print_json(
        admin_call("PUT", f"/admin/aliases/{alias}", url, {"targets": parse_targets(targets)})
    )


@aliases_app.command("list")
def aliases_list(url: UrlOption = None) -> None:
    """List aliases with their current and previous targets."""
    print_json(admin_call("GET", "/admin/aliases", url)["data"])


@aliases_app.command("rollback")
def aliases_rollback(
    alias: Annotated[str, typer.Argument(help="Alias to point back at its previous targets.")],
    url: UrlOption = None,
) -> None:
    """Point ALIAS back at its previous targets."""
    print_json(admin_call("POST", f"/admin/aliases/{alias}/rollback", url))


def events(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    url: UrlOption = None,
) -> None:
    """Show the audit log: registrations, loads, swaps, rollbacks, deletions."""
    print_json(admin_call("GET", f"/admin/events?limit={limit}", url)["data"])


def read_documents(paths: list[Path]) -> list[dict[str, Any]]:
    """Documents from .txt/.md files (id and source: the path) and .jsonl files (a line each)."""
    documents: list[dict[str, Any]] = []
    for path in paths:
        if path.suffix == ".jsonl":
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise typer.BadParameter(f"{path}:{number}: not JSON ({exc.msg})") from exc
                if not isinstance(record, dict) or not {"id", "text"} <= record.keys():
                    raise typer.BadParameter(f"{path}:{number}: needs 'id' and 'text'")
                documents.append(record)
        else:
            documents.append(
                {"id": str(path), "text": path.read_text(encoding="utf-8"), "source": str(path)}
            )
    return documents


def ingest(
    collection: Annotated[str, typer.Argument(help="Collection to upsert into.")],
    files: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help=".txt, .md or .jsonl files.")
    ],
    batch: Annotated[int, typer.Option(help="Documents per request.", min=1, max=1000)] = 32,
    create: Annotated[bool, typer.Option(help="Create the collection if it is missing.")] = True,
    url: UrlOption = None,
) -> None:
    """Upsert documents into a collection (by id: a changed document replaces its old chunks)."""
    documents = read_documents(files)
    names = {c["name"] for c in admin_call("GET", "/admin/collections", url)["data"]}
    if collection not in names:
        if not create:
            typer.echo(f"collection {collection} does not exist", err=True)
            raise typer.Exit(1)
        admin_call("POST", "/admin/collections", url, {"name": collection})
    chunks = 0
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as progress:
        task = progress.add_task(f"ingesting into {collection}", total=len(documents))
        for start in range(0, len(documents), batch):
            part = documents[start : start + batch]
            result = admin_call("POST", f"/admin/collections/{collection}/documents", url,
                           {"documents": part})  # fmt: skip
            chunks += result["chunks"]
            progress.advance(task, len(part))
    typer.echo(f"{len(documents)} documents, {chunks} chunks in {collection}")
