"""The Python client of Distillery: ``from distillery import Client``.

    with Client() as client:
        job = client.distil("teacher.pt", "train.npz", student={"arch": "mlp"})
        job = client.jobs.wait(job.id, on_event=print)
        client.jobs.download_all(job.id, "student/")

See docs/client.md.
"""

from distillery.client import Client
from distillery.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ChecksumMismatchError,
    ConfigurationError,
    ConflictError,
    DistilleryError,
    InvalidSpecError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RangeNotSatisfiableError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableError,
    WaitTimeoutError,
)
from distillery.types import (
    FINAL_STATUSES,
    ApiKey,
    Artifact,
    Event,
    File,
    Job,
    JobError,
    JobProgress,
    MetricPoint,
    QueueEntry,
    QueueSnapshot,
    Team,
    TeamUsage,
    Worker,
)

__all__ = [
    "FINAL_STATUSES",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ApiKey",
    "Artifact",
    "AuthenticationError",
    "BadRequestError",
    "ChecksumMismatchError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "DistilleryError",
    "Event",
    "File",
    "InvalidSpecError",
    "Job",
    "JobError",
    "JobProgress",
    "MetricPoint",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QueueEntry",
    "QueueSnapshot",
    "RangeNotSatisfiableError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "Team",
    "TeamUsage",
    "UnprocessableError",
    "WaitTimeoutError",
    "Worker",
]
