from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from app.jobs.schemas import JobOut


class WorkerOut(BaseModel):
    id: str
    hostname: str
    device: str
    device_name: str
    memory_bytes: int | None = None
    version: str | None = None
    status: Literal["idle", "busy", "offline"]
    job_id: str | None
    last_heartbeat: datetime


class QueuedJob(BaseModel):
    """A job in the queue: full details for the caller's own team, just the place for others."""

    id: str | None
    team_id: str
    status: str
    queue_position: int | None = None
    job: JobOut | None = None


class TeamUsage(BaseModel):
    team_id: str
    # Null for another team's row unless DISTILL_QUEUE_SHOWS_TEAM_NAMES (or the admin key).
    name: str | None
    running: int
    queued: int
    max_running_jobs: int
    running_devices: int  # the devices its running (and dispatched) jobs hold
    max_running_devices: int | None
    weight: float
    gpu_seconds_24h: float  # device-seconds: a job on N devices counts N a second
    fair_share_usage: float  # device-seconds, decayed: what the scheduler compares


class QueueOut(BaseModel):
    workers: list[WorkerOut]
    running: list[QueuedJob]
    queued: list[QueuedJob]
    teams: list[TeamUsage]
