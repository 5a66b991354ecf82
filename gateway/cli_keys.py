"""``tuneloop keys create|list|revoke|usage``: managed API keys through the admin API (HTTP)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from gateway.cli_admin import UrlOption, admin_call, print_json

keys_app = typer.Typer(
    help="Create, list and revoke API keys that belong to someone (models, limits, usage).",
    no_args_is_help=True,
)
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> int:
    """Seconds from ``3600``, ``90s``, ``15m``, ``12h`` or ``30d``."""
    match = _DURATION.match(value.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{value!r}: use a positive number of s, m, h or d (e.g. 30d)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who the key is for (A-Z a-z 0-9 . _ -).")],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="A model or alias the key may call; repeat. None: all."),
    ] = None,
    rpm: Annotated[
        int | None, typer.Option("--rpm", help="Requests per minute (default: unlimited).")
    ] = None,
    tpm: Annotated[
        int | None, typer.Option("--tpm", help="Tokens per minute (default: unlimited).")
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option(
            "--expires-in",
            parser=parse_duration,
            metavar="DURATION",
            help="Lifetime: 3600 (seconds), 90m, 12h or 30d.",
        ),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Create a key for NAME and print it: the key is shown this once, only its hash is kept."""
    body: dict[str, Any] = {"name": name, "models": model or None}
    if rpm is not None:
        body["requests_per_minute"] = rpm
    if tpm is not None:
        body["tokens_per_minute"] = tpm
    if expires_in is not None:
        body["expires_in"] = expires_in
    print_json(admin_call("POST", "/admin/keys", url, body))
    typer.echo("Store the key now: it cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list(url: UrlOption = None) -> None:
    """List keys (never their secrets) with status, limits and usage totals."""
    print_json(admin_call("GET", "/admin/keys", url)["data"])


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id (key_…) or name.")],
    url: UrlOption = None,
) -> None:
    """Revoke a key: refused from now on, kept for the audit."""
    print_json(admin_call("DELETE", f"/admin/keys/{key}", url))


@keys_app.command("usage")
def keys_usage(
    key: Annotated[str, typer.Argument(help="Key id (key_…) or name.")],
    hours: Annotated[int, typer.Option(help="Hours back from now.", min=1)] = 24,
    url: UrlOption = None,
) -> None:
    """A key's requests and tokens per hour, and its totals."""
    print_json(admin_call("GET", f"/admin/keys/{key}/usage?hours={hours}", url))
