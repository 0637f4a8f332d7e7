"""The ``distill`` command: the client commands (``login``, ``files``, ``jobs``, ``queue``:
distillery/cli/), which need the client's packages only, and ``serve``, ``worker`` and ``up``,
which need the server or worker extra and load it only when they run (app/launch.py).

``worker`` hands over to Celery in a fresh process image (or, with several GPUs, supervises one
Celery process per GPU), so this module never imports worker/ or torch.
"""

from importlib.util import find_spec

import typer

from distillery.cli import register as register_client_commands

cli = typer.Typer(help="Distillery: knowledge distillation as a service.", no_args_is_help=True)

# The modules each extra brings (pyproject.toml), as imported; looked up, never imported here.
SERVER_MODULES = (
    "fastapi", "uvicorn", "python_multipart", "sqlalchemy", "alembic", "psycopg",
    "pydantic_settings", "celery", "redis", "numpy", "boto3", "prometheus_client", "ulid",
)  # fmt: skip
WORKER_MODULES = (*SERVER_MODULES, "torch", "safetensors", "transformers", "pynvml")


def _require(command: str, extra: str, modules: tuple[str, ...]) -> None:
    """Stop with the install command when the extra that ``command`` runs on is missing."""
    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        typer.echo(
            f"distill {command} needs the {extra} extra, which is not installed "
            f"(missing: {', '.join(missing)}). Install it with:\n"
            f"  pip install 'distillery[{extra}]'",
            err=True,
        )
        raise typer.Exit(2)


@cli.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API (migrating the database first)."""
    _require("serve", "server", SERVER_MODULES)
    from app import launch

    launch.serve(host, port)


@cli.command()
def worker(
    name: str = typer.Option(
        "distill@%h", help="Celery node name; with several processes each gets a suffix."
    ),
    gpus: str = typer.Option(
        "auto",
        help="auto (every GPU, unless DISTILL_DEVICE names one or cpu), all, none, or indices "
        "like 0,2: one worker process per GPU, pinned with CUDA_VISIBLE_DEVICES.",
    ),
    processes: int = typer.Option(
        1, min=1, help="Worker processes per GPU, or on the machine's CPU without GPUs."
    ),
) -> None:
    """Run the workers that train students from the shared queue: one per GPU."""
    _require("worker", "worker", WORKER_MODULES)
    from app import launch

    launch.worker(name, gpus, processes)


@cli.command()
def up(host: str = "127.0.0.1", port: int = 8000) -> None:
    """API and a worker on one machine, with embedded defaults under ./var."""
    _require("up", "worker", WORKER_MODULES)  # the worker extra brings the server's too
    from app import launch

    launch.up(host, port)


register_client_commands(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
