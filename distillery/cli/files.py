"""``distill files``: upload, list, show, delete."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from distillery import Client
from distillery.cli._common import Json, console, friendly, print_json
from distillery.display import file_table, files_table

app = typer.Typer(help="Teachers and data sets on the server.", no_args_is_help=True)


class Purpose(StrEnum):
    teacher = "teacher"
    dataset = "dataset"


@app.command("upload")
@friendly
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    purpose: Annotated[Purpose, typer.Option(help="teacher or dataset.")],
    as_json: Json = False,
) -> None:
    """Upload a teacher or a data set; the server detects its format."""
    with Client() as client:
        file = client.files.upload(path, purpose.value)
    if as_json:
        print_json(file)
    else:
        console().print(f"{file.id}  {file.purpose} {file.format}  {file.bytes:,} bytes")


@app.command("list")
@friendly
def list_files(
    purpose: Annotated[
        Purpose | None, typer.Option(help="Only teachers, or only data sets.")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many; 0 lists all.")] = 20,
    as_json: Json = False,
) -> None:
    """Your team's files, newest first."""
    with Client() as client:
        files = list(client.files.list(purpose.value if purpose else None, limit=limit or None))
    if as_json:
        print_json(files)
    else:
        console().print(files_table(files))


@app.command("show")
@friendly
def show(file_id: str, as_json: Json = False) -> None:
    """One file's details."""
    with Client() as client:
        file = client.files.get(file_id)
    if as_json:
        print_json(file)
    else:
        console().print(file_table(file))


@app.command("delete")
@friendly
def delete(file_id: str, as_json: Json = False) -> None:
    """Delete a file (refused while a queued or running job needs it)."""
    with Client() as client:
        client.files.delete(file_id)
    if as_json:
        print_json({"id": file_id, "deleted": True})
    else:
        console().print(f"Deleted {file_id}.")
