"""The lifecycle: each transition writes the job's status and exactly one status event in the
caller's transaction (both or neither), and a submit's scheduling pass runs after the request
has committed, so it sees the job."""

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from app.db import after_commit, read_scope, session_scope
from app.ids import new_id
from app.jobs import lifecycle, repository
from app.models import File, Job, JobEvent, JobStatus, Team, Worker
from app.models.base import utcnow
from tests.conftest import ADMIN_KEY, Client, make_team, service_environment

LEASE = timedelta(seconds=30)
WEBHOOK = "http://127.0.0.1:9/hook"


class RolledBack(Exception):
    """Raised inside a unit of work to roll it back."""


@dataclass
class Transition:
    name: str
    before: JobStatus | None  # None: no job yet
    after: JobStatus
    apply: Callable[[Session, str, str], object]  # (session, job id, team id)
    columns: dict[str, Any] = field(default_factory=dict)  # the job's, before

    def __str__(self) -> str:
        return self.name


def _enqueue(session: Session, job_id: str, team_id: str) -> None:
    job = lifecycle.enqueue(session, **_new_job(job_id, team_id))
    assert job is not None


def _start(session: Session, job_id: str, _team_id: str) -> None:
    now = utcnow()
    assert lifecycle.start(session, job_id, "worker-a", now, now + LEASE)


def _loaded(apply: Callable[[Session, Job], object]) -> Callable[[Session, str, str], object]:
    def on_job(session: Session, job_id: str, _team_id: str) -> object:
        job = repository.get_job_for_update(session, job_id)
        assert job is not None
        return apply(session, job)

    return on_job


def _finish(status: JobStatus) -> Callable[[Session, str, str], object]:
    error = {"code": "x", "message": "y"} if status == JobStatus.failed else None
    return _loaded(lambda s, job: lifecycle.finish(s, job, status, message=".", error=error))


# A live lease: the scheduler running in this process must not requeue the job meanwhile.
RUNNING = {"status": JobStatus.running, "worker_id": "worker-a", "attempts": 1,
           "started_at": utcnow(), "lease_expires_at": utcnow() + timedelta(hours=1)}  # fmt: skip
TRANSITIONS = [
    Transition("enqueue", None, JobStatus.queued, _enqueue),
    Transition("start", JobStatus.queued, JobStatus.running, _start,
               {"dispatched_at": utcnow()}),
    Transition("requeue", JobStatus.running, JobStatus.queued,
               _loaded(lambda s, job: lifecycle.requeue(s, job, max_attempts=3)), RUNNING),
    Transition("cancel while queued", JobStatus.queued, JobStatus.cancelled,
               _finish(JobStatus.cancelled)),
    *[Transition(f"finish {status}", JobStatus.running, status, _finish(status), RUNNING)
      for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)],
]  # fmt: skip


def _new_job(job_id: str, team_id: str) -> dict[str, Any]:
    return {"id": job_id, "team_id": team_id, "spec": {"webhook_url": WEBHOOK},
            "teacher_file_id": "file_t", "train_file_id": "file_d"}  # fmt: skip


@pytest.fixture
def team_id(service_env: dict[str, str]) -> Iterator[str]:
    """A team with no quota: the scheduler running in this process never hands its jobs out.
    Its jobs go with it: running under a live lease, they would hold the suite's worker slot."""
    team_id = new_id("team")
    with session_scope() as session:
        session.add(Team(id=team_id, name=team_id, max_running_jobs=0))
    yield team_id
    with session_scope() as session:  # their events and webhooks go with them (ON DELETE CASCADE)
        session.execute(delete(Job).where(Job.team_id == team_id))
        session.execute(delete(Team).where(Team.id == team_id))


def _job_before(transition: Transition, team_id: str) -> str:
    job_id = new_id("job")
    if transition.before is not None:
        with session_scope() as session:
            columns = {"status": transition.before, **transition.columns}
            session.add(Job(**_new_job(job_id, team_id), **columns))
    return job_id


def _seen(job_id: str) -> tuple[str | None, list[str]]:
    """What another connection sees: the job's status, and the statuses its events name."""
    with read_scope() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        events = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "status")
        ).all()
        return status, [event.data["status"] for event in events if event.data]


@pytest.mark.parametrize("transition", TRANSITIONS, ids=str)
def test_a_transition_commits_its_status_with_exactly_one_event(
    transition: Transition, team_id: str
) -> None:
    job_id = _job_before(transition, team_id)
    with session_scope() as session:
        transition.apply(session, job_id, team_id)
        session.flush()
        assert _seen(job_id) == (transition.before, [])  # nothing shows before the commit
    assert _seen(job_id) == (transition.after, [transition.after])


@pytest.mark.parametrize("transition", TRANSITIONS, ids=str)
def test_a_transition_rolled_back_leaves_neither_status_nor_event(
    transition: Transition, team_id: str
) -> None:
    job_id = _job_before(transition, team_id)
    with pytest.raises(RolledBack), session_scope() as session:
        transition.apply(session, job_id, team_id)
        session.flush()
        raise RolledBack
    assert _seen(job_id) == (transition.before, [])


def test_a_final_status_puts_its_webhook_in_the_outbox_with_it(team_id: str) -> None:
    from app.webhooks import repository as webhooks

    [finish] = [t for t in TRANSITIONS if t.name == "finish failed"]
    job_id = _job_before(finish, team_id)
    with pytest.raises(RolledBack), session_scope() as session:
        finish.apply(session, job_id, team_id)
        raise RolledBack
    with read_scope() as session:
        assert webhooks.deliveries_of_job(session, job_id) == []
    with session_scope() as session:
        finish.apply(session, job_id, team_id)
    with read_scope() as session:
        [delivery] = webhooks.deliveries_of_job(session, job_id)
    assert delivery.type == "job.failed"


def test_a_job_already_under_its_idempotency_key_is_not_enqueued_twice(team_id: str) -> None:
    """Two submits race with one Idempotency-Key: the second waits for the first's commit, then
    enqueues nothing, and its transaction still reads the winner."""
    first, second = new_id("job"), new_id("job")
    key = f"key-{first}"
    outcome: list[tuple[Job | None, str | None]] = []

    def loser() -> None:
        with session_scope() as session:
            job = lifecycle.enqueue(session, idempotency_key=key, **_new_job(second, team_id))
            existing = repository.get_by_idempotency_key(session, team_id, key)
            outcome.append((job, existing and existing.id))

    with session_scope() as winner:
        assert lifecycle.enqueue(winner, idempotency_key=key, **_new_job(first, team_id))
        backend = winner.scalar(text("SELECT pg_backend_pid()"))
        thread = threading.Thread(target=loser)
        thread.start()
        _wait_until_blocked_by(backend, thread)
    thread.join(timeout=30)
    assert outcome == [(None, first)]
    assert _seen(first) == (JobStatus.queued, [JobStatus.queued])
    assert _seen(second) == (None, [])


def _wait_until_blocked_by(backend: int, thread: threading.Thread) -> None:
    """Until ``thread``'s session waits on a lock that ``backend`` holds (PostgreSQL's own view);
    a thread that never waits ends, and the test then fails on what it did."""
    with read_scope() as session:
        blocked = text(
            "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
        )
        while thread.is_alive() and not session.scalar(blocked, {"pid": backend}):
            session.execute(text("SELECT pg_sleep(0.01)"))


def test_after_commit_runs_once_committed_and_never_after_a_rollback(team_id: str) -> None:
    seen: list[str | None] = []
    job_id = new_id("job")
    with session_scope() as session:
        lifecycle.enqueue(session, **_new_job(job_id, team_id))
        after_commit(session, lambda: seen.append(_seen(job_id)[0]))
        assert seen == []
    assert seen == [JobStatus.queued]  # it ran after the commit: another connection saw the job
    with pytest.raises(RolledBack), session_scope() as session:
        after_commit(session, lambda: seen.append("ran"))
        raise RolledBack
    assert seen == [JobStatus.queued]


def _inputs(team_id: str) -> dict[str, Any]:
    """A teacher and a dataset as the upload checks would have recorded them."""
    teacher, train = new_id("file"), new_id("file")
    with session_scope() as session:
        for file_id, purpose, format_, meta in (
            (teacher, "teacher", "state_dict", {}),
            (train, "dataset", "npz", {"has_labels": True, "num_classes": 10}),
        ):
            file = File(id=file_id, team_id=team_id, filename=f"{file_id}.bin", bytes=1,
                        sha256="0" * 64, purpose=purpose, format=format_, meta=meta)  # fmt: skip
            session.add(file)
    arch = {"arch": "mlp", "hidden_sizes": [8]}
    return {"teacher": {"file_id": teacher, "arch": arch}, "data": {"train_file_id": train}}


def test_the_submit_s_scheduling_pass_runs_after_the_commit_and_sees_the_job(
    tmp_path: Path,
) -> None:
    """On a database of its own, where the one free slot can only go to this job, and with no
    periodic pass: only the pass that follows the request's commit can hand it out."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with (
        service_environment(tmp_path),
        TestClient(create_app(run_scheduler=False)) as api,
    ):
        team = make_team(Client(api, ADMIN_KEY, "team_default"))
        with session_scope() as session:  # a worker slot, as a registered worker gives one
            session.add(Worker(id=new_id("worker"), hostname="h", device="cpu", device_name="cpu"))
        response = team.post("/v1/jobs", json=_inputs(team.team_id))
        assert response.status_code == 201, response.text
        with read_scope() as session:
            job = session.get(Job, response.json()["id"])
            assert job is not None and job.dispatched_at is not None
