"""Typed results, mirroring the contract's objects. Unknown fields are kept (``extra="allow"``),
so a newer server never breaks an older client; read them as attributes or with
``model_dump()``."""

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from distillery.client import Client

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


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
    """A job as the server last described it. ``wait``, ``events``, ``download`` and ``refresh``
    ask the server again through the client that returned it."""

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

    _client: "Client | None" = PrivateAttr(default=None)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def _bound(self) -> "Client":
        if self._client is None:
            raise RuntimeError("this Job was not returned by a Client; use client.jobs instead")
        return self._client

    def refresh(self) -> "Job":
        """The job as it is now (a new object)."""
        return self._bound().jobs.get(self.id)

    def events(self, after: str | None = None) -> "Iterator[Event]":
        """The job's events, live, until its final status (see ``client.jobs.events``)."""
        return self._bound().jobs.events(self.id, after=after)

    def wait(
        self, timeout: float | None = None, on_event: "Callable[[Event], Any] | None" = None
    ) -> "Job":
        """Follow the job's events until it is final; return it refreshed. ``on_event`` sees
        each event as it comes; ``timeout`` (seconds) raises ``WaitTimeoutError``."""
        return self._bound().jobs.wait(self.id, timeout=timeout, on_event=on_event)

    def cancel(self) -> "Job":
        return self._bound().jobs.cancel(self.id)

    def download(self, directory: str | Path = ".") -> list[Path]:
        """Every artifact into ``directory``, each checked against its sha256."""
        return self._bound().jobs.download_all(self.id, directory)


class Team(Model):
    id: str
    object: str = "team"
    name: str
    max_running_jobs: int
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
    gpu_seconds_24h: float


class QueueSnapshot(Model):
    workers: list[Worker]
    running: list[QueueEntry]
    queued: list[QueueEntry]
    teams: list[TeamUsage]
