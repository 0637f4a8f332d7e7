"""The scheduler: the database decides which job runs next; the broker only carries it.

A pass, serialised across every process by ``repository.lock``:
1. requeues the jobs whose worker was lost (their lease ran out), to resume from their last
   checkpoint, or fails them with ``worker_lost`` after ``max_attempts`` starts;
2. forgets dispatches the broker lost (Redis restarted or flushed), so they are handed out again;
3. finds each host's free workers (live, and held by no running or dispatched job) and places
   jobs on them in the fair-share order of ``app.queue.fair_share``: a job of N devices
   (``resources.devices``) goes to one host with N free workers, all N at once (its
   ``placement``), or waits; nothing is held for a job while it waits.

Gangs and backfill. A job of N devices that no host can take now keeps the host nearest to N
free workers for itself: nothing else starts there in the pass, so that host only frees up and
the gang starts there at the latest when enough of its jobs end. Jobs behind it in the order
fill free workers on other hosts meanwhile (backfill), which never delays it. A job asking for
more devices than any live host has waits, with one ``warning`` event naming the shortfall (the
API refuses it at submit where the operator declared the fleet, ``DISTILL_FLEET_DEVICES_PER_HOST``).

Each worker consumes a queue of its own (``worker.presence``): the job's message goes to its
placement's first worker, the leader, which runs it on the placement's devices.

Passes run after a submit, after a job ends (in the worker), when a worker arrives, and every few
seconds in each API process (``SchedulerThread``). Messages go out after the pass commits, so a
worker always finds its job marked; one that fails to go out is handed out again later.
"""

import heapq
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, NamedTuple

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
# Gangs a pass leaves waiting before it stops looking further down the order.
MAX_WAITING_PER_PASS = 32
SHORTFALL = "devices_unavailable"


def gpu_seconds(
    spans: Sequence[Any], now: datetime, half_life: timedelta | None
) -> dict[str, float]:
    """Each team's device-seconds (GPU-seconds on GPU workers) of ``spans``
    (``repository.run_spans_since``: team, start, end, devices) within the usage window, decayed
    when ``half_life`` is given: a job on N devices counts N seconds a second."""
    by_team: dict[str, list[tuple[datetime, datetime | None, int]]] = {}
    for team_id, started, finished, devices in spans:
        by_team.setdefault(team_id, []).append((started, finished, devices or 1))
    return {
        team_id: sum(
            devices * fair_share.decayed_usage([(started, finished)], now, half_life, USAGE_WINDOW)
            for started, finished, devices in team_spans
        )
        for team_id, team_spans in by_team.items()
    }


class Dispatch(NamedTuple):
    job_id: str
    queue: str | None  # the leader's own queue; None: the shared one (a worker from before)


@dataclass
class Host:
    name: str
    live: int  # workers heard from
    free: list[Any] = field(default_factory=list)  # (id, hostname, queue) rows, by id
    kept: bool = False  # for a waiting gang: nothing else starts here in this pass


class Hosts:
    """The pass's view of the fleet: each host's free workers, taken as jobs are placed."""

    def __init__(self, live: Sequence[Any], held: set[str], unplaced: int):
        self.by_name: dict[str, Host] = {}
        for worker in live:
            host = self.by_name.setdefault(worker.hostname, Host(worker.hostname, 0))
            host.live += 1
            if worker.id not in held:
                host.free.append(worker)
        # Jobs handed out before placements hold a worker somewhere: count it off the freest.
        for _ in range(unplaced):
            freest = max(self.by_name.values(), key=lambda h: len(h.free), default=None)
            if freest is None or not freest.free:
                break
            freest.free.pop()

    @property
    def open(self) -> list[Host]:
        return [h for h in self.by_name.values() if not h.kept]

    def any_free(self) -> bool:
        return any(h.free for h in self.open)

    def largest(self) -> int:
        return max((h.live for h in self.by_name.values()), default=0)

    def take(self, devices: int) -> list[Any] | None:
        """``devices`` free workers of one host, the one they fit best (fewest free left over,
        so that larger holes stay for larger jobs); None when no open host has as many."""
        fits = [h for h in self.open if len(h.free) >= devices]
        if not fits:
            return None
        host = min(fits, key=lambda h: (len(h.free), h.name))
        taken, host.free = host.free[:devices], host.free[devices:]
        return taken

    def keep_for(self, devices: int) -> None:
        """Keep the open host nearest to ``devices`` free workers for a gang that waits (none
        when no open host has that many workers)."""
        able = [h for h in self.open if h.live >= devices]
        if able:
            max(able, key=lambda h: (len(h.free), h.name)).kept = True


def _startable_by_jobs(row: Any) -> int:
    """How many of the team's queued jobs its job quota alone would let start: with a device
    quota, the scheduler reads that many of its head jobs' devices."""
    return min(int(row.queued), row.max_running_jobs - int(row.running) - int(row.dispatched))


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
        heads = repository.head_devices(
            self.session, {row.id: _startable_by_jobs(row) for row in self.team_rows
                           if row.max_running_devices is not None}
        )  # fmt: skip
        return {
            row.id: TeamState(
                team_id=row.id,
                queued=int(row.queued),
                running=int(row.running) + int(row.dispatched),
                max_running_jobs=row.max_running_jobs,
                weight=row.weight,
                usage=usage.get(row.id, 0.0),
                dispatched=int(row.dispatched),
                running_devices=int(row.running_devices),
                max_running_devices=row.max_running_devices,
                head_devices=heads.get(row.id, ()),
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
    for job_id, queue in picked:
        try:
            broker.send_run_job(job_id, queue)
        except Exception:  # the dispatch times out and the job is handed out again
            log.warning(
                "could not hand %s to the broker; it will be retried", job_id, exc_info=True
            )
    return [job_id for job_id, _ in picked]


def try_pass() -> None:
    """A pass whose failure is only logged: callers (a submit, a job's end) must not fail
    because the scheduler could not run; the next pass catches up."""
    try:
        run_pass()
    except Exception:
        log.warning("scheduling pass failed", exc_info=True)


def _pass(session: Session, settings: Settings, now: datetime) -> list[Dispatch]:
    repository.lock(session)
    _requeue_lost(session, settings, now)
    _forget_lost_dispatches(session, now - timedelta(seconds=settings.dispatch_timeout_seconds))
    repository.remove_workers_silent_since(session, now - FORGET_WORKERS_AFTER)
    hosts = _hosts(session, settings, now)
    if not hosts.any_free():
        return []
    states = QueueView(session, now).states
    picked: list[Dispatch] = []
    waiting: dict[str, list[str]] = {}  # each team's gangs this pass leaves waiting
    for team_id in fair_share.dispatch_order(states, settings.fair_share_job_seconds):
        job = repository.next_in_team(session, team_id, waiting.get(team_id, ()))
        if job is None:  # only gangs left in this team, or another pass holds its job
            continue
        workers = hosts.take(job.devices)
        if workers is None:
            waiting.setdefault(team_id, []).append(job.id)
            if hosts.largest() < job.devices:
                _say_shortfall(session, job, hosts.largest())
            else:  # none when every host that could take it is kept for an earlier gang
                hosts.keep_for(job.devices)
            if sum(map(len, waiting.values())) >= MAX_WAITING_PER_PASS:
                break
        else:
            job.dispatched_at = now
            job.placement = [worker.id for worker in workers]
            session.flush()
            picked.append(Dispatch(job.id, workers[0].queue))
        if not hosts.any_free():
            break
    return picked


def _hosts(session: Session, settings: Settings, now: datetime) -> Hosts:
    live = repository.live_workers(
        session, now - timedelta(seconds=settings.worker_offline_seconds)
    )
    held: set[str] = set()
    unplaced = 0
    for _, placement, worker_id in repository.holding(session, now):
        if placement:
            held.update(placement)
        elif worker_id:
            held.add(worker_id)
        else:
            unplaced += 1
    return Hosts(live, held, unplaced)


def _say_shortfall(session: Session, job: Job, largest: int) -> None:
    """Once per job: it asks for more devices than any live host has, so it waits."""
    if repository.has_event_code(session, job.id, SHORTFALL):
        return
    job_repository.add_event(
        session, job.id, "log",
        f"This job asks for {job.devices} devices of one host, and the largest live worker "
        f"host has {largest}: it waits until a host with {job.devices} joins "
        f"(`distill worker --processes {job.devices}` on a CPU host, or {job.devices} GPUs).",
        level="warning",
        data={"code": SHORTFALL, "devices": job.devices, "largest_host": largest},
    )  # fmt: skip


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
        job.placement = None
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
