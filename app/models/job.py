from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, utcnow


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("team_id", "idempotency_key"),
        Index("ix_jobs_status_priority", "status", "priority"),
        # The scheduler's walk through one team's queue: priority first, then age.
        Index(
            "ix_jobs_queue_order", "status", "team_id", text("priority DESC"), "created_at", "id"
        ),
        # The scheduler's counts per team, and the jobs handed out: read from the index alone.
        Index("ix_jobs_dispatch", "status", "dispatched_at", "team_id"),
        # GPU time of the last day: the jobs that ended recently.
        Index("ix_jobs_finished_at", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.queued)
    spec: Mapped[dict[str, Any]]
    priority: Mapped[int] = mapped_column(default=0)
    teacher_file_id: Mapped[str] = mapped_column(String(40), index=True)
    train_file_id: Mapped[str] = mapped_column(String(40), index=True)
    validation_file_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # A language model's pretrained student ({"file_id": ...}); the worker reads it from the spec.
    student_file_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any] | None]
    metrics: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The lease: which worker runs the job and until when its claim holds without a heartbeat.
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    # When the scheduler handed the queued job to the broker; cleared if the message is lost.
    dispatched_at: Mapped[datetime | None]
    # The devices it takes from one host (spec.resources.devices), and the workers holding them
    # from its dispatch on: the first, the leader, runs it; the others stand idle meanwhile.
    devices: Mapped[int] = mapped_column(default=1)
    placement: Mapped[list[str] | None] = mapped_column(JSONType)
