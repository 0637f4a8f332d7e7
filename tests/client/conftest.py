"""A real ``distill serve`` process (on the suite's throwaway database and queue) for the
client and CLI tests, clients of it, a real teacher and data, and one real job that trains."""

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from distillery import Client, Job
from tests.client.proxy import FaultyProxy
from tests.conftest import ADMIN_KEY, make_team
from tests.conftest import Client as KeyedClient
from tests.helpers.teachers import Digits, save_digits
from tests.integration.cluster import distill_serve

CLIENT_ENV = ("DISTILL_URL", "DISTILL_API_KEY", "DISTILL_CONFIG")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="session")
def server(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with distill_serve(service_env, log) as (url, proc):
        yield Server(url, proc, log)


@pytest.fixture(autouse=True)
def client_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No user's config or DISTILL_URL/DISTILL_API_KEY leaks in; the config file goes to a
    folder of the test's own."""
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "config-home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def admin(server: Server) -> Iterator[Client]:
    with Client(server.url, ADMIN_KEY) as client:
        yield client


def new_team(admin: Client, max_running_jobs: int = 1) -> tuple[str, str]:
    """A fresh team's (id, key), made as every test makes one (``tests.conftest.make_team``)."""
    with httpx.Client(base_url=admin.base_url) as http:
        team = make_team(KeyedClient(http, admin.api_key, "team_default"), max_running_jobs)
    return team.team_id, team.key


@pytest.fixture
def team(admin: Client, server: Server) -> Iterator[Client]:
    """A client of a fresh team, so tests never see each other's files or jobs."""
    with Client(server.url, new_team(admin)[1]) as client:
        yield client


@pytest.fixture
def paused_team(admin: Client, server: Server) -> Iterator[Client]:
    """A team that may run nothing (max_running_jobs 0): its jobs stay queued."""
    with Client(server.url, new_team(admin, max_running_jobs=0)[1]) as client:
        yield client


@pytest.fixture
def proxy(server: Server) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(server.url)
    try:
        yield faulty
    finally:
        faulty.close()


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """The session's MLP trained on sklearn's digits (TorchScript) and its data as npz."""
    return save_digits(tmp_path_factory.mktemp("digits"), "mlp", formats=("torchscript",))


SMALL_JOB = {
    "student": {"arch": "mlp", "hidden_sizes": [32]},
    "hyperparameters": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01},
}


@dataclass
class Finished:
    client: Client
    job: Job
    events: list
    job_before_wait: Job


@pytest.fixture(scope="session")
def finished(
    admin: Client, server: Server, digits: Digits, worker_process: object
) -> Iterator[Finished]:
    """One real job, distilled by a real worker, followed to its end with ``jobs.wait``."""
    with Client(server.url, new_team(admin)[1]) as client:
        job = client.distil(
            digits.teacher, digits.train, digits.validation, name="client-tests", **SMALL_JOB
        )
        seen: list = []
        final = client.jobs.wait(job.id, timeout=240, on_event=seen.append)
        yield Finished(client, final, seen, job)
