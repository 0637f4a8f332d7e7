"""Each worker process registers itself and heartbeats, so the queue can show who is there."""

import importlib.metadata
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown

from app.config import get_settings
from app.db import session_scope
from app.models import Worker
from app.models.base import utcnow

_stop = threading.Event()
log = logging.getLogger(__name__)
# The queue only this worker consumes (set in the Celery main process, inherited by its pool
# process); None outside a Celery worker.
_own_queue: str | None = None


def heartbeat_seconds() -> float:
    """Three beats within the time after which the queue calls a worker offline."""
    return get_settings().worker_offline_seconds / 3


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself when it registers."""

    device: str  # "cpu", "cuda:2"
    device_name: str
    memory_bytes: int  # the GPU's, or the machine's for a CPU worker
    version: str  # Distillery's


def worker_info() -> WorkerInfo:
    from worker.device import describe_device, device_memory_bytes

    setting = get_settings().device
    device, device_name = describe_device(setting)
    try:
        version = importlib.metadata.version("distillery")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return WorkerInfo(device, device_name, device_memory_bytes(setting), version)


def set_current_job(job_id: str | None) -> None:
    with session_scope() as session:
        worker = session.get(Worker, worker_id())
        if worker is not None:
            worker.job_id = job_id
            worker.last_heartbeat = utcnow()


def _beat() -> None:
    while not _stop.wait(heartbeat_seconds()):
        try:
            with session_scope() as session:
                worker = session.get(Worker, worker_id())
                if worker is not None:
                    worker.last_heartbeat = utcnow()
        except Exception:  # a database blip must not kill the worker; the next beat retries
            continue


@celeryd_after_setup.connect
def consume_own_queue(sender: str, instance: Any, **_: object) -> None:
    """Besides the shared queue, consume one named after this worker's node, where the scheduler
    sends the jobs it places on this worker (the way Celery's docs route to one worker)."""
    global _own_queue
    from app.broker import worker_queue

    _own_queue = worker_queue(sender)
    instance.app.amqp.queues.select_add(_own_queue)


@worker_process_init.connect
def register(**_: object) -> None:
    from app.db import get_engine

    get_engine().dispose()  # connections inherited across fork are not ours to use
    info = worker_info()
    log.info(
        "worker %s: %s (%s), %.1f GiB, Distillery %s",
        worker_id(), info.device, info.device_name, info.memory_bytes / 2**30, info.version,
    )  # fmt: skip
    with session_scope() as session:
        session.merge(
            Worker(
                id=worker_id(),
                hostname=socket.gethostname(),
                device=info.device,
                device_name=info.device_name,
                memory_bytes=info.memory_bytes,
                version=info.version[:40],
                queue=_own_queue,
                job_id=None,
                started_at=utcnow(),
                last_heartbeat=utcnow(),
            )
        )
    threading.Thread(target=_beat, name="heartbeat", daemon=True).start()
    from app.queue import scheduler

    scheduler.try_pass()  # a new slot: hand it a job


@worker_process_shutdown.connect
def unregister(**_: object) -> None:
    _stop.set()
    try:
        with session_scope() as session:
            worker = session.get(Worker, worker_id())
            if worker is not None:
                session.delete(worker)
    except Exception:
        pass
