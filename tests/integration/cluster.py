"""A deployment of its own for failure tests: its own PostgreSQL database, its own Redis server
(so a test may kill and restart it), the API as a real ``distill serve`` process and workers as
real ``distill worker`` processes, each of which a test may SIGKILL."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from tests.conftest import ROOT, Client, throwaway_database

STARTUP_S = 90

# Short enough that a lost worker, a lost message or a dead Redis is noticed within seconds.
FAST_FAILURE = {
    "DISTILL_LEASE_SECONDS": "3",
    "DISTILL_DISPATCH_TIMEOUT_SECONDS": "3",
    "DISTILL_SCHEDULER_INTERVAL_SECONDS": "0.5",
    "DISTILL_WORKER_OFFLINE_SECONDS": "6",
    "DISTILL_MAX_ATTEMPTS": "2",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = STARTUP_S) -> Any:
    """Poll ``condition`` until it returns something truthy: for processes starting up, which
    signal readiness no other way."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return result


@contextmanager
def distill_serve(
    env: dict[str, str], log_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``distill serve`` process on ``env``'s settings, answering /readyz; its base URL
    and process. Stopped with SIGTERM (killed if it lingers) when the block ends."""
    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, "distill serve")
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Cluster:
    def __init__(self, folder: Path, database_url: str):
        self.folder = folder
        self.redis_port = free_port()
        self.api_port = free_port()
        self.admin_key = "dk_cluster_" + secrets.token_hex(8)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")},
            "DISTILL_DATABASE_URL": database_url,
            "DISTILL_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DISTILL_STORAGE_DIR": str(folder / "storage"),
            "DISTILL_ADMIN_KEY": self.admin_key,
            "DISTILL_DEVICE": "cpu",
            "DISTILL_TORCH_THREADS": "1",
            "DISTILL_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",  # receivers on loopback
            **FAST_FAILURE,
        }
        self.redis: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=60)
        self.admin = Client(self.http, self.admin_key, "team_default")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        # A session of its own, so a kill takes the process and all its children.
        return subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def start_redis(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is needed (apt-get install redis-server)"
        self.redis = self._spawn(
            "redis",
            [server, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
        )  # fmt: skip
        client = redis.Redis(port=self.redis_port, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, "redis")

    def kill_redis(self) -> None:
        assert self.redis is not None
        os.killpg(self.redis.pid, signal.SIGKILL)
        self.redis.wait()

    def start_api(self) -> None:
        argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(self.api_port)]
        self.api = self._spawn("api", argv)

        def ready() -> bool:
            assert self.api is not None and self.api.poll() is None, self.log("api")[-4000:]
            try:
                return self.http.get("/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "the API")

    def start_worker(self, name: str, processes: int = 1) -> subprocess.Popen[bytes]:
        """``distill worker`` (with ``processes`` worker processes: one host of that many
        devices), once every one of them has registered."""
        node = f"{name}-{secrets.token_hex(3)}@%h"
        argv = [sys.executable, "-m", "app.cli", "worker", "--name", node]
        before = {w["id"] for w in self.queue()["workers"]}
        proc = self._spawn(name, [*argv, "--processes", str(processes)])
        wait_for(
            lambda: (
                len({w["id"] for w in self.queue()["workers"] if w["status"] != "offline"} - before)
                >= processes
            ),
            f"worker {name} to register",
        )
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def idle_worker(self) -> str:
        """The name of a live worker running no job. A worker's id ends in the pid of its pool
        process, whose parent is the process this cluster started."""
        for worker in self.queue()["workers"]:
            if worker["status"] == "idle":
                pid = worker["id"].rsplit(":", 1)[1]
                status = Path(f"/proc/{pid}/status").read_text()
                ppid = int(
                    next(ln for ln in status.splitlines() if ln.startswith("PPid:")).split()[1]
                )
                for name, proc in self.workers.items():
                    if proc.pid == ppid:
                        return name
        raise AssertionError("no idle worker")

    def dispatched_at(self, job_id: str) -> Any:
        with psycopg.connect(self.env["DISTILL_DATABASE_URL"]) as conn:
            row = conn.execute("SELECT dispatched_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return row[0] if row else None

    def queue(self) -> dict[str, Any]:
        response = self.admin.get("/v1/queue")
        assert response.status_code == 200, response.text
        return response.json()

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.http.close()
        procs = [*self.workers.values(), self.api, self.redis]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def cluster(folder: Path) -> Iterator[Cluster]:
    with throwaway_database() as database_url:
        deployment = Cluster(folder, database_url)
        try:
            deployment.start_redis()
            deployment.start_api()
            yield deployment
        finally:
            deployment.stop()
