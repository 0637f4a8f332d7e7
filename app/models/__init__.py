"""SQLAlchemy tables, one module per table."""

from app.models.api_key import ApiKey
from app.models.artifact import Artifact
from app.models.base import Base
from app.models.event import JobEvent
from app.models.file import File
from app.models.job import Job, JobStatus
from app.models.metric import JobMetric
from app.models.scheduler import SchedulerLock
from app.models.team import Team
from app.models.webhook import DeliveryStatus, WebhookDelivery
from app.models.worker import Worker

__all__ = [
    "ApiKey",
    "Artifact",
    "Base",
    "DeliveryStatus",
    "File",
    "Job",
    "JobEvent",
    "JobMetric",
    "JobStatus",
    "SchedulerLock",
    "Team",
    "WebhookDelivery",
    "Worker",
]
