"""One job on one worker: claim it, run the engine, write everything back.

The database is the only channel to the API: progress, events, cancellation and the lease all
go through it, so nothing depends on broker broadcast.
"""

import contextvars
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app import storage
from app.config import get_settings
from app.db import read_scope, session_scope
from app.jobs import lifecycle, repository
from app.models import Artifact, File, Job, JobStatus, Worker
from app.models.base import utcnow
from app.queue import scheduler
from jobspec import JobSpec
from worker import presence
from worker.device import device_setting
from worker.engine import (
    EngineError,
    EngineJob,
    EngineResult,
    JobCancelled,
    Progress,
)
from worker.engine.errors import RANK_LOST
from worker.sandbox.process import SandboxSettings, run_in_sandbox
from worker.staging import Staging, cache_inputs

log = logging.getLogger(__name__)

LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
WATCH_SECONDS = 1.0  # how often the watcher looks for a cancel request
LOST = "lost: another worker took the job over after this one's lease ran out"


class _Watcher(threading.Thread):
    """Renews the lease and notices cancel requests while the training process trains."""

    def __init__(self, job_id: str, worker_id: str, lease: timedelta):
        super().__init__(name=f"watch-{job_id}", daemon=True)
        self.job_id, self.worker_id, self.lease = job_id, worker_id, lease
        self.context = contextvars.copy_context()  # the job's, for what this thread logs
        self.stop_requested = threading.Event()
        self.lost = threading.Event()  # another worker holds the job now
        self.done = threading.Event()

    def run(self) -> None:
        self.context.run(self._watch)

    def _watch(self) -> None:
        last_renewal = time.monotonic()
        while not self.done.wait(WATCH_SECONDS):
            try:
                with session_scope() as session:
                    if repository.cancel_requested(session, self.job_id):
                        self.stop_requested.set()
                    if time.monotonic() - last_renewal >= self.lease.total_seconds() / 3:
                        until = utcnow() + self.lease
                        if not lifecycle.renew_lease(session, self.job_id, self.worker_id, until):
                            self.lost.set()
                            self.stop_requested.set()
                        last_renewal = time.monotonic()
            except Exception:
                log.warning("watcher could not reach the database", exc_info=True)


class _Reporter:
    """Engine callbacks that write progress, curve points and logs to the database. They run
    here, in the worker, as the training process reports: the child never sees the database."""

    def __init__(self, job_id: str, watcher: _Watcher):
        self.job_id, self.watcher = job_id, watcher

    def on_progress(self, progress: Progress, points: list[dict[str, Any]]) -> None:
        data: dict[str, Any] = progress.as_dict()
        if points:
            data.update({k: v for k, v in points[-1].items() if k not in data})
        message = (
            f"{progress.phase.capitalize()} epoch {progress.epoch}/{progress.epochs}, "
            f"step {progress.step}/{progress.total_steps}."
        )
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            if job is not None:
                job.progress = progress.as_dict()
            repository.add_metric_points(session, self.job_id, points)
            repository.add_event(session, self.job_id, "progress", message, data=data)

    def on_log(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        log.log(LEVELS.get(level, logging.INFO), "%s", message)  # the worker's log too
        with session_scope() as session:
            repository.add_event(session, self.job_id, "log", message, level=level, data=data)

    def should_stop(self) -> bool:
        return self.watcher.stop_requested.is_set()

    def on_checkpoint(self, path: Path) -> None:
        """Into the store at once, so that a machine taking the job over resumes from here. A
        checkpoint saves time, not the job: one that cannot be stored is only a warning."""
        try:
            Staging(self.job_id).put_checkpoint(path)
        except Exception as exc:
            log.warning("job %s: checkpoint not stored", self.job_id, exc_info=True)
            self.on_log("warning", f"The checkpoint could not be stored: {exc}")

    def on_teacher_cache(self, path: Path) -> None:
        try:
            with read_scope() as session:
                inputs = cache_inputs(session, self.job_id, device_setting(get_settings().device))
            Staging(self.job_id).put_teacher_cache(path, inputs)
        except Exception as exc:
            log.warning("job %s: teacher cache entry not stored", self.job_id, exc_info=True)
            self.on_log("warning", f"The teacher cache entry could not be stored: {exc}")


@dataclass(frozen=True)
class GangDevices:
    """The devices a job's placement gives it, as its training process sees them."""

    world_size: int = 1
    # One per rank; empty: every rank on the job's ``device``.
    devices: list[str] = field(default_factory=list)
    # The training process's CUDA_VISIBLE_DEVICES; None: the worker's.
    visible: str | None = None


def _gang(session: Session, job: Job, device: str) -> GangDevices:
    """A job of several devices runs its ranks on its placement's workers' devices: on the CPU
    every rank on the CPU; on GPUs rank r on the r-th worker's GPU (the training process sees
    those GPUs alone, renumbered from 0)."""
    if job.devices <= 1:
        return GangDevices()
    members = [session.get(Worker, worker_id) for worker_id in job.placement or []]
    if len(members) != job.devices or any(member is None for member in members):
        raise EngineError(
            f"This job needs {job.devices} devices and the workers the scheduler gave it are "
            "not all registered any more; it is queued again.",
            code=RANK_LOST,
        )
    if not device.startswith("cuda"):
        return GangDevices(world_size=job.devices)
    indices = [member.device.removeprefix("cuda:") for member in members if member is not None]
    return GangDevices(
        world_size=job.devices,
        devices=[f"cuda:{rank}" for rank in range(job.devices)],
        visible=",".join(indices),
    )


class JobRunner:
    def __init__(self, job_id: str, worker_id: str):
        self.job_id, self.worker_id = job_id, worker_id
        self.settings = get_settings()
        self.gang = GangDevices()

    def run(self) -> str:
        if not self._claim():
            return "skipped: not claimable (already running elsewhere, cancelled or finished)"
        try:
            return self._run()
        finally:
            scheduler.try_pass()  # this worker's slot is free: hand out the next job

    def _run(self) -> str:
        watcher = _Watcher(
            self.job_id, self.worker_id, timedelta(seconds=self.settings.lease_seconds)
        )
        watcher.start()
        presence.set_current_job(self.job_id)
        try:
            # In a process of its own: whatever the teacher does costs this job, not the worker.
            engine_job = self._engine_job()
            sandbox = dataclasses.replace(
                SandboxSettings.from_settings(self.settings), visible_devices=self.gang.visible
            )
            result = run_in_sandbox(
                engine_job,
                _Reporter(self.job_id, watcher),
                sandbox,
                abort=watcher.lost,  # another worker holds the job now: kill, do not checkpoint
            )
        except JobCancelled:
            return self._finish(JobStatus.cancelled, "Job cancelled; the last checkpoint is kept.")
        except EngineError as exc:
            if exc.code == RANK_LOST:
                return self._requeue(exc.message)
            error = {"code": exc.code, "message": exc.message}
            return self._finish(JobStatus.failed, f"Job failed: {exc.message}", error=error)
        except Exception as exc:
            log.exception("job %s crashed", self.job_id)
            error = {"code": "internal_error", "message": f"The worker failed: {exc!r}"}
            return self._finish(JobStatus.failed, "Job failed unexpectedly.", error=error)
        finally:
            watcher.done.set()
            presence.set_current_job(None)
        return self._succeed(result)

    def _claim(self) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        with session_scope() as session:
            return lifecycle.start(session, self.job_id, self.worker_id, now, until)

    def _engine_job(self) -> EngineJob:
        device = device_setting(self.settings.device)
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            assert job is not None
            teacher = session.get(File, job.teacher_file_id)
            train = session.get(File, job.train_file_id)
            validation = (
                session.get(File, job.validation_file_id) if job.validation_file_id else None
            )
            spec = JobSpec.model_validate(job.spec)
            self.gang = _gang(session, job, device)
            student_id = getattr(spec.student, "file_id", None)  # a pretrained student's file
            student = session.get(File, student_id) if student_id else None
            if teacher is None or train is None or (student_id and student is None):
                raise EngineError("A file this job needs was deleted.", code="file_missing")
            inputs = cache_inputs(session, self.job_id, device)
        # Out of the transaction: from S3 this downloads whatever this machine lacks.
        files = Staging(self.job_id)
        files.fetch_teacher_cache(inputs)
        return EngineJob(
            spec=spec,
            teacher_path=files.fetch_file(teacher),
            teacher_format=teacher.format,
            student_path=files.fetch_file(student) if student else None,
            student_format=student.format if student else None,
            train_path=files.fetch_file(train),
            train_format=train.format,
            validation_path=files.fetch_file(validation) if validation else None,
            validation_format=validation.format if validation else None,
            output_dir=files.output_dir,
            checkpoint_path=files.fetch_checkpoint(),
            device=device,
            world_size=self.gang.world_size,
            devices=self.gang.devices,
            cache_dir=files.cache_dir(inputs),
            teacher_sha256=teacher.sha256,
            max_unpacked_bytes=self.settings.max_unpacked_bytes,
            job_id=self.job_id,
            file_names=_file_names(
                teacher=teacher, student=student, train=train, validation=validation
            ),
        )

    def _succeed(self, result: EngineResult) -> str:
        files = Staging(self.job_id)
        try:  # every artifact is in the store before the job says it succeeded
            files.put_artifacts(result.artifacts)
        except Exception as exc:
            log.exception("job %s: artifacts not stored", self.job_id)
            error = {
                "code": "storage_failed",
                "message": f"The artifacts could not be stored: {exc}",
            }
            return self._finish(
                JobStatus.failed, "Job failed: its artifacts could not be stored.", error=error
            )
        with session_scope() as session:
            job = repository.get_job_for_update(session, self.job_id)
            if not self._owns(job):
                return LOST
            assert job is not None
            for path in result.artifacts:
                session.merge(
                    Artifact(
                        job_id=self.job_id,
                        name=path.name,
                        bytes=path.stat().st_size,
                        sha256=storage.sha256_of(Path(path)),
                    )
                )
            repository.add_event(
                session, self.job_id, "metrics", "Final metrics.", data=result.metrics
            )
            lifecycle.finish(
                session, job, JobStatus.succeeded, message="Job succeeded.", metrics=result.metrics
            )
        files.release()
        return "succeeded"

    def _finish(self, status: JobStatus, message: str, error: dict[str, Any] | None = None) -> str:
        with session_scope() as session:
            job = repository.get_job_for_update(session, self.job_id)
            if not self._owns(job):
                return LOST
            assert job is not None
            lifecycle.finish(session, job, status, message=message, error=error)
        return status.value

    def _requeue(self, message: str) -> str:
        """A rank of the job died: the whole gang has stopped, and the job goes back to the queue
        to resume from its last checkpoint, as a job whose worker was lost does (and, like it,
        fails after ``max_attempts`` starts)."""
        with session_scope() as session:
            job = repository.get_job_for_update(session, self.job_id)
            if not self._owns(job):
                return LOST
            assert job is not None
            if job.attempts >= self.settings.max_attempts:
                error = {
                    "code": RANK_LOST,
                    "message": f"{message} It happened {job.attempts} times in all; giving up.",
                }
                lifecycle.finish(
                    session, job, JobStatus.failed, message=f"Job failed: {message}", error=error
                )
                return JobStatus.failed.value
            lifecycle.requeue(session, job, max_attempts=self.settings.max_attempts, reason=message)
        return "queued again: a rank was lost"

    def _owns(self, job: Job | None) -> bool:
        """Whether the job is still ours to finish: a worker whose lease ran out and was taken
        over must not overwrite the run that replaced it."""
        return (
            job is not None and job.status == JobStatus.running and job.worker_id == self.worker_id
        )


def _file_names(**files: File | None) -> dict[str, str]:
    """The names the job's files were uploaded under, for its model card."""
    return {role: file.filename for role, file in files.items() if file is not None}
