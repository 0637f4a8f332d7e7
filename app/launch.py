"""What ``distill serve``, ``distill worker`` and ``distill up`` do: migrate, serve the API, run the
Celery workers. app/cli.py imports this module only once the command's packages are known to be
installed (the server or worker extra), so the client commands never load it."""

import logging
import os
import secrets
import signal
import subprocess
import sys
from functools import partial

import typer
import uvicorn

from app import logs
from app.config import VAR_DIR, get_settings
from app.gpus import detect_gpus
from app.hardening import die_with_parent
from app.supervisor import PlanError, Supervisor, plan_workers

ADMIN_KEY_FILE = VAR_DIR / "admin_key"
# Where the client (distillery/config.py) finds a running `distill up`, next to its admin key.
URL_FILE = VAR_DIR / "url"

log = logging.getLogger("distill.cli")


def serve(host: str, port: int) -> None:
    if not get_settings().admin_key:
        typer.echo("DISTILL_ADMIN_KEY is not set: refusing to serve an API nobody can administer.")
        raise typer.Exit(2)
    logs.configure()  # the migration's lines too; uvicorn's: log_config=None leaves them to us
    _migrate()
    _serve(host, port)


def worker(name: str, gpus: str, processes: int) -> None:
    logs.configure()  # for the warning below; the worker sets up its own
    _warn_if_root("distill worker")
    device = get_settings().device
    skip_detection = gpus == "none" or (gpus == "auto" and device == "cpu")
    try:
        specs = plan_workers(
            gpus, [] if skip_detection else detect_gpus(), device=device, processes=processes,
            name=name, visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
        )  # fmt: skip
    except PlanError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    if len(specs) == 1:  # no supervisor needed: become the worker
        argv = _celery_worker_argv(specs[0].name)
        os.execve(argv[0], argv, {**os.environ, **specs[0].env})
    raise typer.Exit(Supervisor(specs, lambda spec: _celery_worker_argv(spec.name)).run())


def up(host: str, port: int) -> None:
    _ensure_admin_key()
    logs.configure()  # as in serve; the worker sets up its own, from the same settings
    _warn_if_root("distill up")
    _migrate()
    worker_proc = subprocess.Popen(
        _celery_worker_argv(),
        env=os.environ.copy(),
        # A killed `up` (SIGKILL, the OOM killer) runs no `finally`: the kernel stops the worker
        # instead, warmly, as `_stop` would. Its pool process goes with it (Celery sets the same
        # flag there).
        preexec_fn=partial(die_with_parent, signal.SIGTERM, os.getpid()),
    )
    url = local_url(host, port)
    _write_url(url)
    typer.echo(f"Distillery is up at {url} (worker pid {worker_proc.pid}).")
    typer.echo(f"Clients started in this folder find it through {URL_FILE} and {ADMIN_KEY_FILE}.")
    # uvicorn shuts down on SIGTERM and then raises the signal again for the handler it found:
    # with the default one, this process would die there and leave the worker running.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        _serve(host, port)
    finally:
        _forget_url(url)
        _stop(worker_proc)


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to ``host``."""
    if host in {"0.0.0.0", ""}:
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _write_url(url: str) -> None:
    URL_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = URL_FILE.with_name(URL_FILE.name + ".tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, URL_FILE)


def _forget_url(url: str) -> None:
    """Remove the URL file, unless another `distill up` has written its own since."""
    try:
        if URL_FILE.read_text().strip() == url:
            URL_FILE.unlink()
    except OSError:
        pass


def _celery_worker_argv(hostname: str = "distill@%h") -> list[str]:
    settings = get_settings()
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
        "--loglevel", settings.log_level, "--pool", "prefork", "--concurrency", "1",
        "-Q", settings.queue_name, "-n", hostname,
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def _migrate() -> None:
    from migrations import upgrade

    upgrade(get_settings().database_url)


def _ensure_admin_key() -> str:
    """The admin key from the environment, or one kept in ./var/admin_key (owner-only)."""
    if key := os.environ.get("DISTILL_ADMIN_KEY"):
        return key
    if ADMIN_KEY_FILE.exists():
        key = ADMIN_KEY_FILE.read_text().strip()
    else:
        ADMIN_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
        key = "dk_admin_" + secrets.token_urlsafe(32)
        fd = os.open(ADMIN_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        typer.echo(f"Created an admin key in {ADMIN_KEY_FILE} (readable by you only):")
        typer.echo(f"  {key}")
    os.environ["DISTILL_ADMIN_KEY"] = key
    get_settings.cache_clear()
    return key


def _serve(host: str, port: int) -> None:
    level = get_settings().log_level.lower()
    uvicorn.run(
        "app.main:app", host=host, port=port, log_level=level, access_log=False, log_config=None
    )


def _warn_if_root(command: str) -> None:
    """Workers never need root, and a job's training process runs the teacher's code."""
    if os.geteuid() != 0:
        return
    log.warning("%s is running as root: run workers as an ordinary user", command)
    typer.echo(
        f"WARNING: {command} is running as root, and workers never need root.\n"
        "Each job runs its teacher's code (a pickled or TorchScript model is a program) in a\n"
        "training process: as root, a teacher that escapes the training sandbox owns this\n"
        "machine, and can read the worker's secrets (the database and broker URLs).\n"
        "Run workers as an ordinary user, e.g. `useradd --system --create-home distill` and\n"
        "`sudo -u distill distill worker`; the Docker image runs as the user distill\n"
        "(docs/deploy.md).",
        err=True,
    )


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask Celery for a warm shutdown, then insist."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
