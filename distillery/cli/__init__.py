"""The ``distill`` client commands, on the typer app of ``app/cli.py``: ``login``, ``logout``,
``queue``, ``files ...`` and ``jobs ...``. They talk to a server through ``distillery.Client``
only, so they load neither the service's code nor torch.

Exit status: 0 done; 1 an error (the server's message, and its code, on stderr); 2 a usage
error; for ``jobs watch`` and ``jobs submit --wait``: 3 the job failed, 4 it was cancelled.
"""

import typer

from distillery.cli import account, files, jobs


def register(app: typer.Typer) -> None:
    account.register(app)
    app.add_typer(files.app, name="files")
    app.add_typer(jobs.app, name="jobs")
