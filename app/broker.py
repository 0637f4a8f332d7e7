"""Celery configuration shared by the API (a producer) and the workers (consumers).

The API sends tasks by name, so it never imports worker/ or torch.
"""

from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Celery

from app.config import Settings, get_settings

RUN_JOB_TASK = "distill.run_job"
# Redis redelivers an unacked message after this; a long GPU job must not be handed out twice,
# so it is far longer than any job, and the database lease refuses a redelivery anyway.
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600


def is_filesystem(url: str) -> bool:
    return url.startswith("filesystem://")


def filesystem_folder(settings: Settings, name: str = "queue") -> Path:
    folder = settings.broker_folder.resolve() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_default_queue": settings.queue_name,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
    }
    if is_filesystem(settings.broker_url):
        folder = str(filesystem_folder(settings, "queue"))
        config["broker_transport_options"] = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "control_folder": str(filesystem_folder(settings, "control")),
            "polling_interval": 0.05,
        }
        # The filesystem transport has no fanout exchange, so no remote control or events.
        config["worker_enable_remote_control"] = False
    return config


@lru_cache
def producer() -> Celery:
    celery = Celery("distill")
    celery.conf.update(celery_config(get_settings()))
    return celery


def worker_queue(nodename: str) -> str:
    """The queue only the Celery worker ``nodename`` consumes: the scheduler sends each job to
    its placement's leader there (``app.queue.scheduler``)."""
    return f"{get_settings().queue_name}.{nodename}"


def send_run_job(job_id: str, queue: str | None = None) -> None:
    """Hand the job to the worker consuming ``queue`` (by default the shared queue, which every
    worker also consumes)."""
    producer().send_task(RUN_JOB_TASK, args=[job_id], queue=queue or get_settings().queue_name)


def ping() -> None:
    """Raise if the broker does not answer within a couple of seconds."""
    with producer().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
