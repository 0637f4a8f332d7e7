"""Thin adapters: job id -> claim -> engine -> persist."""

import logging

import torch
from celery.signals import setup_logging, worker_init, worker_process_init

from app import logs
from app.broker import RUN_JOB_TASK
from app.config import get_settings
from app.db import read_scope
from app.hardening import make_undumpable
from app.jobs import repository
from worker import presence
from worker.celery_app import celery_app
from worker.runner import JobRunner
from worker.sandbox import confine

log = logging.getLogger(__name__)


@worker_init.connect
@worker_process_init.connect
def protect_environment(**_: object) -> None:
    """The worker's environment holds its secrets; its training processes must not read them
    through /proc (see app/hardening.py)."""
    make_undumpable()


@worker_init.connect
def report_sandbox(**_: object) -> None:
    """Say at start whether training processes will be sandboxed, and what follows if not."""
    settings = get_settings()
    problem = "DISTILL_SANDBOX=off" if settings.sandbox == "off" else confine.sandbox_problem()
    if problem is None:
        log.info("sandbox: training processes run in bubblewrap (worker/sandbox/confine.py)")
    elif settings.sandbox == "bwrap":
        log.error("sandbox: none can be built (%s); every job will fail (DISTILL_SANDBOX=bwrap)",
                  problem)  # fmt: skip
    elif settings.allow_unconfined_code_teachers:
        log.warning("sandbox: none (%s); teachers that are programs run unconfined "
                    "(DISTILL_ALLOW_UNCONFINED_CODE_TEACHERS=true)", problem)  # fmt: skip
    else:
        log.warning("sandbox: none (%s); jobs whose teacher is a program (TorchScript, "
                    "torch.export) will be refused", problem)  # fmt: skip


@setup_logging.connect
def configure_logging(**_: object) -> None:
    """With a receiver here Celery leaves logging alone: the API's format and level
    (DISTILL_LOG_FORMAT, DISTILL_LOG_LEVEL), one handler on the root logger."""
    logs.configure()


@worker_process_init.connect
def configure_torch(**_: object) -> None:
    if threads := get_settings().torch_threads:
        torch.set_num_threads(threads)


@celery_app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> str:
    """Run one distillation job. Idempotent: a job already claimed elsewhere is skipped."""
    with read_scope() as session:
        team_id = repository.job_team(session, job_id)
    with logs.job_context(job_id, team_id):  # every line logged for this job names it
        outcome = JobRunner(job_id, presence.worker_id()).run()
        log.info("job %s: %s", job_id, outcome)
    return outcome
