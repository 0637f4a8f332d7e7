"""``distill worker`` running several worker processes: real Celery workers, each registered in
the workers table, supervised, restarted, and stopped by one SIGTERM. GPUs are planned the same
way (tests/app/test_supervisor.py); this machine has none, so these are CPU workers."""

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def registered() -> dict[str, int]:
    """Worker id -> the pid of its Celery pool process (ids are host:pid)."""
    with session_scope() as session:
        ids = session.scalars(select(Worker.id)).all()
    return {worker_id: int(worker_id.rsplit(":", 1)[1]) for worker_id in ids}


def under(supervisor: int) -> dict[str, int]:
    """The registered workers whose pool process is a grandchild of ``supervisor``: supervisor
    -> Celery's main process -> its pool process."""
    return {
        worker_id: pid
        for worker_id, pid in registered().items()
        if parent_of(parent_of(pid) or 0) == supervisor
    }


class Supervised:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path):
        self.proc, self.log = proc, log

    def wait_for(self, condition: Callable[[], bool], timeout: float = 180) -> None:
        """The workers' registration is a row in the database: poll it."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)


@pytest.fixture
def supervised(service_env: dict[str, str], tmp_path: Path) -> Iterator[Supervised]:
    env = {
        **os.environ,
        **service_env,
        "DISTILL_DEVICE": "cpu",
        "DISTILL_QUEUE_NAME": f"distill-test-workers-{secrets.token_hex(4)}",  # nobody sends here
    }
    log = tmp_path / "workers.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--processes", "2", "--name", "many@%h"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield Supervised(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()  # its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            proc.wait()


def test_two_worker_processes_register_and_stop_cleanly_on_sigterm(supervised: Supervised) -> None:
    supervisor = supervised.proc.pid
    supervised.wait_for(lambda: len(under(supervisor)) == 2)
    workers = under(supervisor)
    mains = {parent_of(pid) for pid in workers.values()}
    assert len(mains) == 2  # two Celery workers, not one with two pool processes

    supervised.proc.send_signal(signal.SIGTERM)

    assert supervised.proc.wait(timeout=60) == 0, supervised.log.read_text()
    assert not workers.keys() & registered().keys()  # each unregistered on its way out
    assert all(parent_of(pid) is None for pid in [*workers.values(), *mains])


def test_a_worker_process_that_dies_is_restarted(supervised: Supervised) -> None:
    supervisor = supervised.proc.pid
    supervised.wait_for(lambda: len(under(supervisor)) == 2)
    workers = under(supervisor)
    victim_id, victim = next(iter(workers.items()))
    victim_main = parent_of(victim)
    assert victim_main is not None

    os.kill(victim_main, signal.SIGKILL)  # the whole Celery worker, as a crash would

    supervised.wait_for(lambda: len(under(supervisor)) == 2 and victim_id not in under(supervisor))
    assert "restarting" in supervised.log.read_text()
    supervised.wait_for(lambda: parent_of(victim) is None)  # its pool process went with it
    supervised.proc.send_signal(signal.SIGTERM)
    assert supervised.proc.wait(timeout=60) == 0, supervised.log.read_text()


def test_a_killed_supervisor_takes_its_workers_with_it(supervised: Supervised) -> None:
    """SIGKILL leaves the supervisor no time to stop anything: the kernel does (a warm stop)."""
    supervisor = supervised.proc.pid
    supervised.wait_for(lambda: len(under(supervisor)) == 2)
    pools = list(under(supervisor).values())
    processes = [*pools, *(parent_of(pid) or 0 for pid in pools)]

    supervised.proc.kill()
    supervised.proc.wait()

    deadline = time.monotonic() + 60
    while alive := [pid for pid in processes if running(pid)]:
        assert time.monotonic() < deadline, f"outlived their supervisor: {alive}"
        time.sleep(0.1)


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie only awaits its reaping
