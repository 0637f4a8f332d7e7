"""What every client command shares: ``--json``, the client, output, and errors as messages."""

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console

from distillery import Client
from distillery.errors import DistilleryError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_FAILED = 3
EXIT_CANCELLED = 4
OUTCOME_EXIT = {"succeeded": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}

Json = Annotated[
    bool, typer.Option("--json", help="Machine-readable JSON on stdout, and nothing else.")
]


def console() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def client() -> Client:
    return Client()


def to_json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_json(value), ensure_ascii=False))


def fail(message: str, *, code: str | None = None, as_json: bool = False) -> typer.Exit:
    """Say what went wrong on stderr; the caller raises what this returns."""
    if as_json:
        body = {"error": {"code": code or "error", "message": message}}
        typer.echo(json.dumps(body, ensure_ascii=False), err=True)
    else:
        suffix = f" [dim]({code})[/]" if code else ""
        stderr().print(f"[red]error:[/] {message}{suffix}", markup=True, soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


def friendly(command: F) -> F:
    """Errors as the server's message and code on stderr, exit 1; never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return command(*args, **kwargs)
        except DistilleryError as e:
            raise fail(e.message, code=e.code, as_json=as_json) from None
        except BrokenPipeError:  # stdout closed early (`| head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_ERROR) from None
        except OSError as e:  # a file to upload or a folder to write that is not there
            raise fail(str(e), code="os_error", as_json=as_json) from None
        except KeyboardInterrupt:
            print(file=sys.stderr)
            raise typer.Exit(130) from None

    return run  # type: ignore[return-value]
