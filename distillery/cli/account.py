"""``distill login``, ``distill logout`` and ``distill queue``."""

import os
from typing import Annotated

import typer

from distillery import Client, config
from distillery.cli._common import Json, console, friendly, print_json, stderr
from distillery.display import queue_tables
from distillery.errors import PermissionDeniedError


@friendly
def login(
    url: Annotated[
        str | None, typer.Option(help="The server, e.g. https://distill.example.com.")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="The API key; asked for (hidden) when left out.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Check a server URL and API key, and save them for the client (mode 0600)."""
    saved = config.load_saved()
    url = config.normalise_url(
        url or os.environ.get("DISTILL_URL") or saved.url or config.DEFAULT_URL
    )
    if not key:
        key = typer.prompt(f"API key for {url}", hide_input=True, err=True).strip()
    with Client(url, key) as client:
        client.queue(limit=1)  # any key may read the queue: a 401 here means a wrong key
        try:
            next(iter(client.teams.list()), None)
            role = "admin"
        except PermissionDeniedError:
            role = "team"
    path = config.save(url, key)
    if as_json:
        print_json({"url": url, "role": role, "config": str(path)})
        return
    kind = "an admin" if role == "admin" else "a team"
    console().print(f"Logged in to [bold]{url}[/] with {kind} key; saved in {path}.")
    if os.environ.get("DISTILL_API_KEY") or os.environ.get("DISTILL_URL"):
        stderr().print("note: DISTILL_URL / DISTILL_API_KEY are set and take precedence.")


@friendly
def logout(as_json: Json = False) -> None:
    """Forget the saved server and key."""
    path = config.config_path()
    removed = config.forget(path)
    if as_json:
        print_json({"removed": removed, "config": str(path)})
    elif removed:
        console().print(f"Removed {path}.")
    else:
        console().print(f"Not logged in ({path} does not exist).")


@friendly
def queue(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Queued jobs to list.")] = 100,
    as_json: Json = False,
) -> None:
    """Workers, running and queued jobs (details of your team's), every team's use."""
    with Client() as client:
        snapshot = client.queue(limit=limit)
    if as_json:
        print_json(snapshot)
        return
    out = console()
    for table in queue_tables(snapshot):
        out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.command()(queue)
