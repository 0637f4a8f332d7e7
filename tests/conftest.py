"""Fixtures for tests that talk to the real service: a fresh PostgreSQL database, Redis as the
broker, the API in-process, and a real Celery worker process."""

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests import services
from tests.services import throwaway_database

ADMIN_KEY = "dk_test_admin_" + secrets.token_hex(8)
JOB_MEMORY_BYTES = 4 * 2**30
ROOT = Path(__file__).resolve().parent.parent


def _clear_caches() -> None:
    from app import broker, db, storage
    from app.config import get_settings

    get_settings.cache_clear()
    db.get_engine.cache_clear()
    db._session_factory.cache_clear()
    db._read_session_factory.cache_clear()
    broker.producer.cache_clear()
    storage.get_store.cache_clear()


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A throwaway database and queue on the real servers, and the settings that point at them."""
    with service_environment(tmp_path_factory.mktemp("storage")) as env:
        yield env


@contextmanager
def service_environment(storage_dir: Path, **settings: str) -> Iterator[dict[str, str]]:
    """A fresh database and queue name, and the settings (``settings`` on top) that point this
    process at them, until the block ends."""
    redis_url = services.redis_url()
    services.require_redis(redis_url)
    with throwaway_database() as database_url:
        env = {
            "DISTILL_DATABASE_URL": database_url,
            "DISTILL_BROKER_URL": redis_url,
            "DISTILL_STORAGE_DIR": str(storage_dir),
            "DISTILL_ADMIN_KEY": ADMIN_KEY,
            "DISTILL_QUEUE_NAME": f"distill-test-{secrets.token_hex(4)}",
            "DISTILL_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
            "DISTILL_DEVICE": "cpu",
            "DISTILL_LEASE_SECONDS": "30",
            # The worker shares two cores with this process and PostgreSQL.
            "DISTILL_TORCH_THREADS": "1",
            # A CPU job's address space: ample for the suite's jobs, and a bound that
            # tests/integration/test_sandbox.py's teacher goes past.
            "DISTILL_JOB_MEMORY_BYTES": str(JOB_MEMORY_BYTES),
            # The tests' webhook receivers listen on loopback, which webhooks may not reach
            # unless the operator allows it.
            "DISTILL_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            **settings,
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        _clear_caches()
        try:
            yield env
        finally:
            _restore(saved)


def _restore(saved: dict[str, str | None]) -> None:
    from app.db import get_engine

    get_engine().dispose()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _clear_caches()


@pytest.fixture(scope="session")
def api(service_env: dict[str, str]) -> Iterator[TestClient]:
    """The API in-process, unauthenticated; see ``admin`` and ``team`` for keys."""
    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


class Client:
    """An HTTP client (the in-process API's TestClient, or an httpx.Client of a served one) bound
    to one API key."""

    def __init__(self, api: httpx.Client, key: str, team_id: str):
        self.api, self.key, self.team_id = api, key, team_id
        self.headers = {"Authorization": f"Bearer {key}"}

    def __getattr__(self, method: str):  # get, post, delete, stream, ...
        call = getattr(self.api, method)

        def with_key(*args, **kwargs):
            kwargs["headers"] = {**self.headers, **(kwargs.get("headers") or {})}
            return call(*args, **kwargs)

        return with_key


@pytest.fixture(scope="session")
def admin(api: TestClient) -> Client:
    return Client(api, ADMIN_KEY, "team_default")


def make_team(admin: Client, max_running_jobs: int = 1) -> Client:
    """A fresh team, and a client with a key of its own on ``admin``'s API."""
    name = f"team-{secrets.token_hex(4)}"
    team = admin.post("/v1/teams", json={"name": name, "max_running_jobs": max_running_jobs})
    assert team.status_code == 201, team.text
    key = admin.post(f"/v1/teams/{team.json()['id']}/keys", json={"name": "tests"})
    assert key.status_code == 201, key.text
    return Client(admin.api, key.json()["key"], team.json()["id"])


@pytest.fixture
def team(admin: Client) -> Client:
    """A fresh team with its own key, so tests never see each other's jobs or files."""
    return make_team(admin)


def _worker_registered() -> bool:
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Worker

    with session_scope() as session:
        return session.scalar(select(Worker.id).limit(1)) is not None


@pytest.fixture(scope="session")
def worker_process(service_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process consuming this run's queue from Redis."""
    with celery_worker(service_env) as proc:
        yield proc


@contextmanager
def celery_worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on ``env``'s settings, registered before the block starts."""
    log = open(Path(env["DISTILL_STORAGE_DIR"]) / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--name", f"test-{secrets.token_hex(3)}@%h"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not _worker_registered():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"worker did not start; see {log.name}")
        time.sleep(0.1)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@dataclass
class S3Server:
    """moto's S3 in server mode: real HTTP on 127.0.0.1, as a worker process would reach it."""

    endpoint_url: str
    access_key_id: str = "moto-key"
    secret_access_key: str = "moto-secret"
    region: str = "us-east-1"

    def settings(self, bucket: str, **more: str) -> dict[str, str]:
        """The DISTILL_* settings of an S3 store in ``bucket``."""
        return {
            "DISTILL_STORAGE_BACKEND": "s3",
            "DISTILL_S3_ENDPOINT_URL": self.endpoint_url,
            "DISTILL_S3_BUCKET": bucket,
            "DISTILL_S3_REGION": self.region,
            "DISTILL_S3_ACCESS_KEY_ID": self.access_key_id,
            "DISTILL_S3_SECRET_ACCESS_KEY": self.secret_access_key,
            **more,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def new_bucket(self) -> str:
        name = f"distill-test-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
