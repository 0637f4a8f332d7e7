"""Every query the shared queue and its scheduler make. A job's status is written by
``app.jobs.lifecycle`` alone."""

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from app.models import Job, JobEvent, JobStatus, SchedulerLock, Team, Worker
from app.models.scheduler import SCHEDULER_ROW

QUEUED = Job.status == JobStatus.queued
UNDISPATCHED = QUEUED & Job.dispatched_at.is_(None)
DISPATCHED = QUEUED & Job.dispatched_at.is_not(None)
# A team's own order: higher priority first, then oldest.
TEAM_ORDER = (Job.priority.desc(), Job.created_at, Job.id)


def lock(session: Session) -> None:
    """Serialise scheduling passes until this transaction ends (see ``SchedulerLock``)."""
    result = session.execute(
        update(SchedulerLock)
        .where(SchedulerLock.id == SCHEDULER_ROW)
        .values(passes=SchedulerLock.passes + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]  # a database made by create_all
        session.add(SchedulerLock(id=SCHEDULER_ROW, passes=1))
        session.flush()


def workers(session: Session) -> Sequence[Worker]:
    return session.scalars(select(Worker).order_by(Worker.id)).all()


def live_workers(session: Session, since: datetime) -> Sequence[Any]:
    """(id, hostname, queue) of the workers heard from since ``since``, by host then id."""
    stmt = select(Worker.id, Worker.hostname, Worker.queue).where(Worker.last_heartbeat >= since)
    return session.execute(stmt.order_by(Worker.hostname, Worker.id)).all()


def remove_workers_silent_since(session: Session, since: datetime) -> None:
    session.execute(
        delete(Worker)
        .where(Worker.last_heartbeat < since)
        .execution_options(synchronize_session=False)
    )


def holding(session: Session, now: datetime) -> Sequence[Any]:
    """(id, placement, worker_id) of the jobs that hold workers: running under a live lease, or
    handed to the broker and not yet taken. A placement lists every worker a job holds; a job
    from before placements has none, and holds its ``worker_id`` (None while on its way)."""
    running = Job.status == JobStatus.running
    stmt = select(Job.id, Job.placement, Job.worker_id).where(
        or_(running & (Job.lease_expires_at >= now), DISPATCHED)
    )
    return session.execute(stmt).all()


def expired_leases(session: Session, now: datetime) -> Sequence[Job]:
    return session.scalars(
        select(Job)
        .where(Job.status == JobStatus.running, Job.lease_expires_at < now)
        .with_for_update()
    ).all()


def lost_dispatches(session: Session, before: datetime) -> Sequence[Job]:
    """Queued jobs handed to the broker before ``before`` and never taken: the message is lost.
    Locked, so a worker's claim on one waits, then finds it no longer handed out."""
    return session.scalars(
        select(Job).where(QUEUED, Job.dispatched_at < before).with_for_update()
    ).all()


class TeamRow(NamedTuple):
    id: str
    name: str
    max_running_jobs: int
    weight: float
    max_running_devices: int | None
    queued: int  # not yet handed to the broker
    dispatched: int  # queued and handed to the broker
    running: int
    running_devices: int  # held by the dispatched and running jobs


def team_rows(session: Session) -> list[TeamRow]:
    """Every team with its quota and weight, and its job counts: one small grouped count over
    the queued and running jobs (from ``ix_jobs_dispatch`` alone), then the teams."""
    handed_out = Job.dispatched_at.is_not(None).label("handed_out")
    counts = session.execute(
        select(Job.team_id, Job.status, handed_out, func.count())
        .where(Job.status.in_([JobStatus.queued, JobStatus.running]))
        .group_by(Job.team_id, Job.status, handed_out)
    ).all()
    empty = {"queued": 0, "dispatched": 0, "running": 0, "running_devices": 0}
    by_team: dict[str, dict[str, int]] = {}
    for team_id, status, was_handed_out, n in counts:
        kind = (
            "running"
            if status == JobStatus.running
            else "dispatched"
            if was_handed_out
            else "queued"
        )
        team = by_team.setdefault(team_id, dict(empty))
        team[kind] += n
    # The devices held: a sum over the running and handed-out jobs alone (a few rows), so the
    # count above stays an index-only scan however long the queue.
    held = session.execute(
        select(Job.team_id, func.sum(Job.devices))
        .where(or_(Job.status == JobStatus.running, DISPATCHED))
        .group_by(Job.team_id)
    ).all()
    for team_id, devices in held:
        by_team.setdefault(team_id, dict(empty))["running_devices"] = int(devices or 0)
    teams = session.execute(
        select(
            Team.id, Team.name, Team.max_running_jobs, Team.weight, Team.max_running_devices
        ).order_by(Team.name)
    ).all()
    return [
        TeamRow(
            id=team.id,
            name=team.name,
            max_running_jobs=team.max_running_jobs,
            weight=team.weight,
            max_running_devices=team.max_running_devices,
            **by_team.get(team.id, empty),
        )
        for team in teams
    ]


def run_spans_since(session: Session, since: datetime) -> Sequence[Any]:
    """(team_id, started_at, finished_at, devices) of every job that ran at some point after
    ``since``: the running ones and those that ended since (two index scans, never the whole
    table)."""
    columns = (Job.team_id, Job.started_at, Job.finished_at, Job.devices)
    started = Job.started_at.is_not(None)
    running = select(*columns).where(Job.status == JobStatus.running, started)
    ended = select(*columns).where(Job.finished_at >= since, started)
    return session.execute(running.union_all(ended)).all()


def next_in_team(session: Session, team_id: str, passed: Collection[str] = ()) -> Job | None:
    """The team's first job not yet handed out, but for ``passed`` (gangs left waiting)."""
    stmt = select(Job).where(UNDISPATCHED, Job.team_id == team_id)
    if passed:
        stmt = stmt.where(Job.id.not_in(list(passed)))
    return session.scalar(stmt.order_by(*TEAM_ORDER).limit(1).with_for_update(skip_locked=True))


def has_event_code(session: Session, job_id: str, code: str) -> bool:
    """Whether the job already has an event whose data carries ``code``."""
    stmt = select(JobEvent.id).where(
        JobEvent.job_id == job_id, JobEvent.data["code"].as_string() == code
    )
    return session.scalar(stmt.limit(1)) is not None


def rank_in_team(session: Session, job: Job) -> int:
    """How many of its team's undispatched queued jobs come before ``job`` in the team's order."""
    before = or_(
        Job.priority > job.priority,
        and_(
            Job.priority == job.priority,
            or_(
                Job.created_at < job.created_at,
                and_(Job.created_at == job.created_at, Job.id < job.id),
            ),
        ),
    )
    stmt = select(func.count()).where(UNDISPATCHED, Job.team_id == job.team_id, before)
    return int(session.scalar(stmt) or 0)


def dispatched_before(session: Session, job: Job) -> int:
    assert job.dispatched_at is not None
    before = or_(
        Job.dispatched_at < job.dispatched_at,
        and_(Job.dispatched_at == job.dispatched_at, Job.id < job.id),
    )
    return int(session.scalar(select(func.count()).where(DISPATCHED, before)) or 0)


def dispatched(session: Session, limit: int) -> Sequence[Any]:
    """(id, team_id) of the jobs handed to the broker and not yet taken, in the order handed out."""
    stmt = select(Job.id, Job.team_id).where(DISPATCHED).order_by(Job.dispatched_at, Job.id)
    return session.execute(stmt.limit(limit)).all()


# One plan for every team's walk (PostgreSQL plans a UNION of 20 such parts in ~15 ms, and runs
# it in ~1): each team's first n ids by the scheduler's index, in the team's order.
HEADS_SQL = text(
    "SELECT t.team_id, j.id, j.devices FROM unnest(CAST(:teams AS text[]), CAST(:counts AS int[]))"
    " WITH ORDINALITY AS t(team_id, n, ord)"
    " CROSS JOIN LATERAL (SELECT id, priority, created_at, devices FROM jobs"
    "  WHERE status = 'queued' AND dispatched_at IS NULL AND team_id = t.team_id"
    "  ORDER BY priority DESC, created_at, id LIMIT t.n) AS j"
    " ORDER BY t.ord, j.priority DESC, j.created_at, j.id"
)


def head_ids(session: Session, counts: dict[str, int]) -> dict[str, list[str]]:
    """The ids of each team's first ``counts[team]`` undispatched queued jobs, in the team's
    order, each team an index range scan."""
    heads: dict[str, list[str]] = {team_id: [] for team_id in counts}
    for team_id, job_id, _ in _heads(session, counts):
        heads[team_id].append(job_id)
    return heads


def head_devices(session: Session, counts: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """The devices of each team's first ``counts[team]`` undispatched queued jobs, in the
    team's order (one statement for every team, as ``head_ids``)."""
    heads: dict[str, list[int]] = {team_id: [] for team_id in counts}
    for team_id, _, devices in _heads(session, counts):
        heads[team_id].append(devices)
    return {team_id: tuple(devices) for team_id, devices in heads.items()}


def _heads(session: Session, counts: dict[str, int]) -> Iterable[Any]:
    """(team id, job id, devices) of each team's first ``counts[team]`` undispatched queued
    jobs, team by team in the team's order."""
    wanted = {team_id: n for team_id, n in counts.items() if n > 0}
    if not wanted:
        return []
    if session.get_bind().dialect.name == "postgresql":
        params = {"teams": list(wanted), "counts": list(wanted.values())}
        return session.execute(HEADS_SQL, params).all()
    # SQLite plans each small query in microseconds
    return [
        (team_id, job_id, devices)
        for team_id, n in wanted.items()
        for job_id, devices in session.execute(
            select(Job.id, Job.devices)
            .where(UNDISPATCHED, Job.team_id == team_id)
            .order_by(*TEAM_ORDER)
            .limit(n)
        )
    ]


def jobs_by_id(session: Session, ids: Sequence[str]) -> dict[str, Job]:
    return {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}


def running_jobs(session: Session, limit: int = 1000) -> Sequence[Job]:
    return session.scalars(
        select(Job)
        .where(Job.status == JobStatus.running)
        .order_by(Job.started_at, Job.id)
        .limit(limit)
    ).all()
