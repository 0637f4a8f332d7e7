from collections import defaultdict
from datetime import timedelta

from sqlalchemy.orm import Session

from app.jobs import service as jobs
from app.models import Job, JobStatus, Worker
from app.models.base import utcnow
from app.queue import repository
from app.queue.schemas import QueuedJob, QueueOut, TeamUsage, WorkerOut

OFFLINE_AFTER = timedelta(seconds=30)
USAGE_WINDOW = timedelta(hours=24)


def _worker(worker: Worker) -> WorkerOut:
    if utcnow() - worker.last_heartbeat > OFFLINE_AFTER:
        status = "offline"
    else:
        status = "busy" if worker.job_id else "idle"
    return WorkerOut(
        id=worker.id,
        hostname=worker.hostname,
        device=worker.device,
        device_name=worker.device_name,
        status=status,
        job_id=worker.job_id,
        last_heartbeat=worker.last_heartbeat,
    )


def _entry(session: Session, job: Job, team_id: str, position: int | None) -> QueuedJob:
    if job.team_id != team_id:
        return QueuedJob(id=None, team_id=job.team_id, status=job.status, queue_position=position)
    return QueuedJob(
        id=job.id,
        team_id=job.team_id,
        status=job.status,
        queue_position=position,
        job=jobs.render(session, job),
    )


def _gpu_seconds(session: Session) -> dict[str, float]:
    now = utcnow()
    since = now - USAGE_WINDOW
    used: dict[str, float] = defaultdict(float)
    for team_id, started, finished in repository.run_spans_since(session, since):
        used[team_id] += ((finished or now) - max(started, since)).total_seconds()
    return used


def snapshot(session: Session, team_id: str) -> QueueOut:
    running = repository.jobs_with_status(session, JobStatus.running)
    queued = repository.jobs_with_status(session, JobStatus.queued)
    used = _gpu_seconds(session)
    return QueueOut(
        workers=[_worker(w) for w in repository.workers(session)],
        running=[_entry(session, job, team_id, None) for job in running],
        queued=[_entry(session, job, team_id, i) for i, job in enumerate(queued)],
        teams=[
            TeamUsage(
                team_id=tid,
                name=name,
                running=int(n_running),
                queued=int(n_queued),
                max_running_jobs=limit,
                gpu_seconds_24h=round(used.get(tid, 0.0), 3),
            )
            for tid, name, limit, n_running, n_queued in repository.team_counts(session)
        ],
    )
