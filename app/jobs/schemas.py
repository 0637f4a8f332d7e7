from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import Job, JobStatus
from jobspec.strict import Int


class Progress(BaseModel):
    phase: Literal["student", "baseline"] = "student"
    epoch: int
    epochs: int
    step: int
    total_steps: int
    fraction: float
    eta_seconds: float | None
    run: int | None = None  # a sweep's run under way, 0-based
    runs: int | None = None  # a sweep's number of runs


class JobUpdate(BaseModel):
    """What may change while a job waits: its priority among its team's queued jobs."""

    model_config = ConfigDict(extra="forbid")

    priority: Int = Field(ge=-1000, le=1000)


class JobWarning(BaseModel):
    """Something the job will do that its author may not expect; it still runs."""

    code: str
    message: str
    param: str | None = None


class JobValidation(BaseModel):
    """What ``POST /v1/jobs/validate`` answers for a spec that a submit would accept."""

    object: Literal["job_validation"] = "job_validation"
    spec: dict[str, Any] = Field(description="The full, defaulted spec, as the job would echo it.")
    task: str
    warnings: list[JobWarning]


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: str
    object: Literal["job"] = "job"
    name: str | None
    team_id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    progress: Progress | None
    metrics: dict[str, Any] | None
    error: JobError | None
    queue_position: int | None
    cancel_requested: bool
    attempts: int


def job_out(job: Job, queue_position: int | None = None) -> JobOut:
    """The job as the API shows it; a queued job's ``queue_position`` is the queue's to compute
    (``app.jobs.service.render``)."""
    return JobOut(
        id=job.id,
        name=job.name,
        team_id=job.team_id,
        status=JobStatus(job.status),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        spec=job.spec,
        progress=job.progress,
        metrics=job.metrics,
        error=job.error,
        queue_position=queue_position,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
    )


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["event"] = "event"
    created_at: datetime
    level: Literal["info", "warning", "error"]
    type: Literal["status", "progress", "metrics", "log"]
    message: str
    data: dict[str, Any] | None


class MetricPoint(BaseModel):
    model_config = ConfigDict(extra="allow")

    step: int
    epoch: int
    train_loss: float | None = None
    kd_loss: float | None = None
    ce_loss: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    bytes: int
    sha256: str
