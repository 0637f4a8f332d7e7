"""A throwaway Distillery on the real servers, for benchmarks: a fresh PostgreSQL database,
Redis as the broker, and the API and a worker as real processes."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import services  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve(app: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """One uvicorn process, as ``distill serve`` runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        cwd=ROOT, env={**os.environ, **env},
    )  # fmt: skip


@contextmanager
def distillery(
    with_worker: bool = True, workers: int = 1, settings: dict[str, str] | None = None
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(base URL, admin key, settings) of a running service on PostgreSQL and Redis, with
    ``workers`` worker processes (none without ``with_worker``)."""
    services.require_redis(services.redis_url())
    with (
        services.throwaway_database("distill_bench") as db_url,
        tempfile.TemporaryDirectory() as storage,
    ):
        admin_key = "dk_bench_" + secrets.token_hex(8)
        env = {
            "DISTILL_DATABASE_URL": db_url,
            "DISTILL_BROKER_URL": services.redis_url(),
            "DISTILL_STORAGE_DIR": storage,
            "DISTILL_ADMIN_KEY": admin_key,
            "DISTILL_QUEUE_NAME": f"distill-bench-{secrets.token_hex(4)}",
            "DISTILL_DEVICE": "cpu",
            **(settings or {}),
        }
        os.environ.update(env)
        port = free_port()
        procs = [serve("app.main:app", env, port)]
        for i in range(workers if with_worker else 0):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--name", f"bench{i}@%h"],
                cwd=ROOT, env={**os.environ, **env},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz", procs[0])
            yield base, admin_key, env
        finally:
            for proc in procs:
                stop(proc)


def wait_workers(admin: httpx.Client, n: int, timeout: float = 120) -> None:
    """Until ``n`` workers have registered and heartbeat."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = admin.get("/v1/queue").raise_for_status().json()["workers"]
        if sum(w["status"] != "offline" for w in workers) >= n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{n} workers did not register within {timeout} s")
