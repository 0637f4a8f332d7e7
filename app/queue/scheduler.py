"""The scheduler: the database decides which job runs next; the broker only carries it.

A pass, serialised across every process by ``repository.lock``:
1. requeues the jobs whose worker was lost (their lease ran out), to resume from their last
   checkpoint, or fails them with ``worker_lost`` after ``max_attempts`` starts;
2. forgets dispatches the broker lost (Redis restarted or flushed), so they are handed out again;
3. counts the free worker slots (live workers minus running and dispatched jobs) and hands that
   many jobs to the broker, in the fair-share order of ``app.queue.fair_share``.

Passes run after a submit, after a job ends (in the worker), when a worker arrives, and every few
seconds in each API process (``SchedulerThread``). Messages go out after the pass commits, so a
worker always finds its job marked; one that fails to go out is handed out again later.
"""

import heapq
import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from itertools import islice
from typing import Any

from sqlalchemy.orm import Session

from app import broker
from app.config import Settings, get_settings
from app.db import session_scope
from app.jobs import lifecycle
from app.jobs import repository as job_repository
from app.models import Job, JobStatus
from app.models.base import utcnow
from app.queue import fair_share, repository
from app.queue.fair_share import TeamState

log = logging.getLogger(__name__)

USAGE_WINDOW = timedelta(hours=24)
FORGET_WORKERS_AFTER = timedelta(hours=1)


def gpu_seconds(
    spans: Sequence[Any], now: datetime, half_life: timedelta | None
) -> dict[str, float]:
    """Each team's GPU-seconds of ``spans`` (``repository.run_spans_since``) within the usage
    window, decayed when ``half_life`` is given."""
    by_team: dict[str, list[tuple[datetime, datetime | None]]] = {}
    for team_id, started, finished in spans:
        by_team.setdefault(team_id, []).append((started, finished))
    return {
        team_id: fair_share.decayed_usage(team_spans, now, half_life, USAGE_WINDOW)
        for team_id, team_spans in by_team.items()
    }


class QueueView:
    """The queue as one session reads it: each team's numbers read once, then any number of
    exact positions from them."""

    def __init__(self, session: Session, now: datetime | None = None):
        self.session, self.now = session, now or utcnow()

    @cached_property
    def team_rows(self) -> Sequence[Any]:
        return repository.team_rows(self.session)

    @cached_property
    def spans(self) -> Sequence[Any]:
        return repository.run_spans_since(self.session, self.now - USAGE_WINDOW)

    @cached_property
    def states(self) -> dict[str, TeamState]:
        half_life = timedelta(seconds=get_settings().fair_share_half_life_seconds)
        usage = gpu_seconds(self.spans, self.now, half_life)
        return {
            row.id: TeamState(
                team_id=row.id,
                queued=int(row.queued),
                running=int(row.running) + int(row.dispatched),
                max_running_jobs=row.max_running_jobs,
                weight=row.weight,
                usage=usage.get(row.id, 0.0),
                dispatched=int(row.dispatched),
            )
            for row in self.team_rows
        }

    def position(self, job: Job) -> int:
        """The job's exact place in the dispatch order: the jobs already handed to the broker
        first, in the order they were handed out, then the rest in fair-share order."""
        if job.dispatched_at is not None:
            return repository.dispatched_before(self.session, job)
        return self.position_at(job.team_id, repository.rank_in_team(self.session, job))

    def position_at(self, team_id: str, rank: int) -> int:
        """The place of ``team_id``'s job ``rank`` (in its team's own order) not yet handed out."""
        dispatched = sum(state.dispatched for state in self.states.values())
        cost = get_settings().fair_share_job_seconds
        return dispatched + fair_share.position(self.states, team_id, rank, cost)

    def first(self, limit: int) -> list[tuple[str, str]]:
        """(job id, team id) of the first ``limit`` queued jobs in dispatch order: those handed
        out, then the others, whose teams' shares of the first places follow from the teams'
        numbers alone, so only the ids shown are read."""
        order = [
            (job_id, team_id) for job_id, team_id in repository.dispatched(self.session, limit)
        ]
        cost = get_settings().fair_share_job_seconds
        taken = dict.fromkeys(self.states, 0)
        places = [(fair_share.place(s, 0, cost).sort_key(), s.team_id)
                  for s in self.states.values() if s.queued]  # fmt: skip
        heapq.heapify(places)
        sequence: list[str] = []
        while places and len(order) + len(sequence) < limit:
            _, team_id = heapq.heappop(places)
            sequence.append(team_id)
            taken[team_id] += 1
            state = self.states[team_id]
            if taken[team_id] < state.queued:
                heapq.heappush(
                    places, (fair_share.place(state, taken[team_id], cost).sort_key(), team_id)
                )
        heads = {t: iter(ids) for t, ids in repository.head_ids(self.session, taken).items()}
        return order + [(next(heads[team_id]), team_id) for team_id in sequence]


def run_pass() -> list[str]:
    """One scheduling pass; returns the ids of the jobs it handed to the broker."""
    settings = get_settings()
    with session_scope() as session:
        picked = _pass(session, settings, utcnow())
    for job_id in picked:
        try:
            broker.send_run_job(job_id)
        except Exception:  # the dispatch times out and the job is handed out again
            log.warning(
                "could not hand %s to the broker; it will be retried", job_id, exc_info=True
            )
    return picked


def try_pass() -> None:
    """A pass whose failure is only logged: callers (a submit, a job's end) must not fail
    because the scheduler could not run; the next pass catches up."""
    try:
        run_pass()
    except Exception:
        log.warning("scheduling pass failed", exc_info=True)


def _pass(session: Session, settings: Settings, now: datetime) -> list[str]:
    repository.lock(session)
    _requeue_lost(session, settings, now)
    _forget_lost_dispatches(session, now - timedelta(seconds=settings.dispatch_timeout_seconds))
    repository.remove_workers_silent_since(session, now - FORGET_WORKERS_AFTER)
    live = repository.live_workers(
        session, now - timedelta(seconds=settings.worker_offline_seconds)
    )
    free = live - repository.busy_slots(session, now)
    if free <= 0:
        return []
    states = QueueView(session, now).states
    picked: list[str] = []
    for team_id in islice(fair_share.dispatch_order(states, settings.fair_share_job_seconds), free):
        job = repository.next_in_team(session, team_id)
        if job is None:  # another pass holds it (cannot happen under the lock, but be safe)
            continue
        job.dispatched_at = now
        session.flush()
        picked.append(job.id)
    return picked


def _requeue_lost(session: Session, settings: Settings, now: datetime) -> None:
    for job in repository.expired_leases(session, now):
        if job.cancel_requested:  # its worker died before it could stop it
            lifecycle.finish(
                session, job, JobStatus.cancelled, message="Job cancelled; its worker was lost."
            )
        elif job.attempts >= settings.max_attempts:
            message = (
                f"The worker running this job stopped answering, {job.attempts} times in all; "
                "giving up."
            )
            error = {"code": "worker_lost", "message": message}
            lifecycle.finish(
                session, job, JobStatus.failed, message=f"Job failed: {message}", error=error
            )
        else:
            lifecycle.requeue(session, job, max_attempts=settings.max_attempts)
    session.flush()


def _forget_lost_dispatches(session: Session, before: datetime) -> None:
    """Jobs handed to the broker before ``before`` and never taken: their message was lost (Redis
    restarted or flushed), so they are handed out again."""
    for job in repository.lost_dispatches(session, before):
        job.dispatched_at = None
        job_repository.add_event(
            session, job.id, "log", "The broker lost this job's message; handing it out again.",
            level="warning",
        )  # fmt: skip


class SchedulerThread(threading.Thread):
    """Runs a pass every ``scheduler_interval_seconds`` until stopped."""

    def __init__(self) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = get_settings().scheduler_interval_seconds
        while not self.stopping.wait(interval):
            try_pass()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
