"""Typed results, mirroring the contract's objects. Unknown fields are kept (``extra="allow"``),
so a newer server never breaks an older client; read them as attributes or with
``model_dump()``."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
SHOWN_NUMBERS = ("train_loss", "val_accuracy")  # what an event's line shows of its data


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class File(Model):
    id: str
    object: str = "file"
    filename: str
    bytes: int
    sha256: str
    purpose: str
    format: str
    created_at: datetime


class JobProgress(Model):
    phase: str = "student"
    epoch: int
    epochs: int
    step: int
    total_steps: int
    fraction: float
    eta_seconds: float | None = None


class JobError(Model):
    code: str
    message: str


class Event(Model):
    id: str
    object: str = "event"
    created_at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None = None

    @property
    def status(self) -> str | None:
        """The job's new status, on a ``status`` event."""
        return (self.data or {}).get("status") if self.type == "status" else None

    def __str__(self) -> str:
        """One line to read (``on_event=print``): local time, level, message, and the latest
        loss and accuracy a progress event carries, e.g.
        ``12:03:04 info    Student epoch 3/10, step 90/300. train_loss=0.31 val_accuracy=0.95``."""
        data = self.data or {}
        numbers = " ".join(
            f"{key}={data[key]:.4g}"
            for key in SHOWN_NUMBERS
            if isinstance(data.get(key), int | float) and not isinstance(data[key], bool)
        )
        line = f"{self.created_at.astimezone():%H:%M:%S} {self.level:<7} {self.message}"
        return f"{line} {numbers}" if numbers else line


class MetricPoint(Model):
    step: int
    epoch: int
    train_loss: float | None = None
    kd_loss: float | None = None
    ce_loss: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None


class Artifact(Model):
    name: str
    bytes: int
    sha256: str


class Job(Model):
    """A job as the server last described it: plain data. To ask the server again, use
    ``client.jobs`` (``get``, ``wait``, ``events``, ``cancel``, ``download_all``)."""

    id: str
    object: str = "job"
    name: str | None = None
    team_id: str
    status: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    spec: dict[str, Any] = {}
    progress: JobProgress | None = None
    metrics: dict[str, Any] | None = None
    error: JobError | None = None
    queue_position: int | None = None
    cancel_requested: bool = False
    attempts: int = 0

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class Team(Model):
    id: str
    object: str = "team"
    name: str
    max_running_jobs: int
    max_running_devices: int | None = None
    weight: float | None = None
    created_at: datetime


class ApiKey(Model):
    id: str
    object: str = "api_key"
    name: str
    team_id: str
    key: str
    created_at: datetime


class Worker(Model):
    id: str
    hostname: str
    device: str
    device_name: str
    status: str
    job_id: str | None = None
    last_heartbeat: datetime


class QueueEntry(Model):
    """A running or queued job: ``job`` holds the details for the caller's own team only."""

    id: str | None = None
    team_id: str
    status: str
    queue_position: int | None = None
    job: Job | None = None


class TeamUsage(Model):
    team_id: str
    name: str | None = None  # another team's name is hidden unless the server shows it
    running: int
    queued: int
    max_running_jobs: int
    running_devices: int | None = None  # None from a server before jobs of several devices
    max_running_devices: int | None = None
    gpu_seconds_24h: float


class QueueSnapshot(Model):
    workers: list[Worker]
    running: list[QueueEntry]
    queued: list[QueueEntry]
    teams: list[TeamUsage]
