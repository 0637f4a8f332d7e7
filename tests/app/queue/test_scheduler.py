"""Scheduling passes on a database of their own (real PostgreSQL), where the test alone decides
which workers are alive and which jobs wait; no messages are sent."""

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings
from app.db import make_engine
from app.ids import new_id
from app.jobs import lifecycle
from app.models import Job, JobEvent, JobStatus, Team, Worker
from app.models.base import utcnow
from app.queue import scheduler
from app.queue.service import snapshot
from migrations import upgrade
from tests.services import throwaway_database

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def sessions(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    """PostgreSQL, as in production, and SQLite, the embedded default (some reads differ)."""
    with ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(throwaway_database())
        else:
            url = f"sqlite:///{tmp_path_factory.mktemp('queue') / 'distill.db'}"
            upgrade(url)
        engine = make_engine(url)
        yield sessionmaker(bind=engine, expire_on_commit=False)
        engine.dispose()


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """An empty queue: no jobs, teams or workers left by the test before."""
    yield sessions
    with sessions.begin() as session:
        for table in (Job, Worker, Team):
            session.execute(table.__table__.delete())


def add_team(
    db: sessionmaker[Session], quota: int = 10, weight: float = 1.0, devices: int | None = None
) -> str:
    team_id = new_id("team")
    with db.begin() as session:
        session.add(Team(id=team_id, name=team_id, max_running_jobs=quota, weight=weight,
                         max_running_devices=devices))  # fmt: skip
    return team_id


def add_jobs(
    db: sessionmaker[Session], team_id: str, n: int = 1, priority: int = 0, devices: int = 1
) -> list[str]:
    ids = [new_id("job") for _ in range(n)]
    with db.begin() as session:
        for job_id in ids:
            session.add(
                Job(id=job_id, team_id=team_id, spec={}, teacher_file_id="file_t",
                    train_file_id="file_d", priority=priority, devices=devices)
            )  # fmt: skip
            session.flush()  # distinct created_at, in order
    return ids


def add_workers(db: sessionmaker[Session], n: int, host: str = "h") -> list[str]:
    ids = [f"{host}:{new_id('w')}" for _ in range(n)]
    with db.begin() as session:
        for worker_id in ids:
            session.add(Worker(id=worker_id, hostname=host, device="cpu", device_name="cpu",
                               queue=f"distill.{worker_id}"))  # fmt: skip
    return ids


def run_pass(db: sessionmaker[Session]) -> list[str]:
    with db.begin() as session:
        return [job_id for job_id, _ in scheduler._pass(session, get_settings(), utcnow())]


def placement(db: sessionmaker[Session], job_id: str) -> list[str] | None:
    with db.begin() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.placement


def end(db: sessionmaker[Session], job_id: str, seconds: float = 60) -> None:
    """The running job ends, having run ``seconds``."""
    with db.begin() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.finished_at = JobStatus.succeeded, utcnow()
        job.started_at = job.finished_at - timedelta(seconds=seconds)


def used_gpu(db: sessionmaker[Session], team_id: str, seconds: float) -> None:
    """A finished job of ``team_id`` that ran for ``seconds`` just now."""
    now = utcnow()
    with db.begin() as session:
        session.add(
            Job(id=new_id("job"), team_id=team_id, spec={}, teacher_file_id="f",
                train_file_id="f", status=JobStatus.succeeded,
                started_at=now - timedelta(seconds=seconds), finished_at=now)
        )  # fmt: skip


def start(db: sessionmaker[Session], job_id: str) -> None:
    """The job's leader (the first worker of its placement) claims it."""
    now = utcnow()
    with db.begin() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.placement
        assert lifecycle.start(session, job_id, job.placement[0], now, now + HOUR)


def positions(db: sessionmaker[Session]) -> dict[str, int]:
    with db.begin() as session:
        view = scheduler.QueueView(session)
        queued = session.scalars(select(Job).where(Job.status == JobStatus.queued)).all()
        return {job.id: view.position(job) for job in queued}


def test_jobs_go_out_only_to_free_slots(db: sessionmaker[Session]) -> None:
    team = add_team(db)
    jobs = add_jobs(db, team, 5)
    assert run_pass(db) == []  # no worker, no dispatch
    add_workers(db, 2)
    assert run_pass(db) == jobs[:2]
    assert run_pass(db) == []  # both slots taken by jobs on their way
    start(db, jobs[0])
    assert run_pass(db) == []  # running now: still one slot
    with db.begin() as session:
        job = session.get(Job, jobs[0])
        assert job is not None
        job.status = JobStatus.succeeded
    assert run_pass(db) == [jobs[2]]


def test_order_within_a_team_is_priority_then_age(db: sessionmaker[Session]) -> None:
    team = add_team(db)
    old, new = add_jobs(db, team, 2)
    (urgent,) = add_jobs(db, team, 1, priority=5)
    add_workers(db, 3)
    assert run_pass(db) == [urgent, old, new]


def test_the_team_that_used_less_goes_first(db: sessionmaker[Session]) -> None:
    heavy, light = add_team(db), add_team(db)
    used_gpu(db, heavy, 3600)
    heavy_jobs = add_jobs(db, heavy, 3)
    light_jobs = add_jobs(db, light, 2)
    add_workers(db, 1)
    assert run_pass(db) == [light_jobs[0]]
    assert positions(db)[light_jobs[1]] == 1 and positions(db)[heavy_jobs[0]] == 2


def test_weight_buys_share(db: sessionmaker[Session]) -> None:
    big, small = add_team(db, weight=10.0), add_team(db)
    used_gpu(db, big, 3600)
    used_gpu(db, small, 600)
    (big_job,) = add_jobs(db, big, 1)
    add_jobs(db, small, 1)
    add_workers(db, 1)
    assert run_pass(db) == [big_job]  # 3600 / 10 < 600 / 1


def test_a_team_at_its_quota_waits_and_a_raised_quota_frees_it(db: sessionmaker[Session]) -> None:
    from app.teams import service as teams
    from app.teams.schemas import TeamUpdate

    capped, other = add_team(db, quota=1), add_team(db)
    capped_jobs = add_jobs(db, capped, 3)
    other_jobs = add_jobs(db, other, 1)
    add_workers(db, 4)
    assert sorted(run_pass(db)) == sorted([capped_jobs[0], other_jobs[0]])
    assert run_pass(db) == []  # two slots free, but the capped team is at its quota
    assert positions(db)[capped_jobs[1]] == 2  # after the two handed out
    with db.begin() as session:
        teams.update_team(session, capped, TeamUpdate(max_running_jobs=3))
    assert run_pass(db) == capped_jobs[1:]


def a_mixed_queue(db: sessionmaker[Session]) -> None:
    teams = [add_team(db, quota=q, weight=w) for q, w in [(3, 1), (2, 2), (5, 1), (1, 1)]]
    used_gpu(db, teams[0], 900)
    used_gpu(db, teams[2], 300)
    for i, team in enumerate(teams):
        add_jobs(db, team, 3 + i)
        add_jobs(db, team, 1, priority=i)


def test_queue_positions_are_the_order_a_pass_hands_jobs_out(db: sessionmaker[Session]) -> None:
    a_mixed_queue(db)
    before = positions(db)
    add_workers(db, 100)
    picked = run_pass(db)
    assert len(picked) == 3 + 2 + 5 + 1  # every team up to its quota
    assert picked == sorted(before, key=before.__getitem__)[: len(picked)]


def test_the_next_job_out_is_always_the_one_at_position_zero(db: sessionmaker[Session]) -> None:
    a_mixed_queue(db)
    add_workers(db, 1)
    for _ in range(6):  # one slot: each job ends (having used some GPU) before the next starts
        head = [job_id for job_id, place in positions(db).items() if place == 0]
        picked = run_pass(db)
        assert picked == head
        start(db, picked[0])
        end(db, picked[0], seconds=120)


def test_the_queue_listing_is_in_dispatch_order(db: sessionmaker[Session]) -> None:
    teams = [add_team(db, quota=2), add_team(db, quota=1), add_team(db, quota=4)]
    used_gpu(db, teams[2], 1200)
    for team in teams:
        add_jobs(db, team, 4)
    add_workers(db, 2)
    run_pass(db)
    expected = positions(db)
    with db.begin() as session:
        listed = scheduler.QueueView(session).first(100)
        assert [expected[job_id] for job_id, _ in listed] == list(range(len(expected)))
        short = scheduler.QueueView(session).first(5)
        assert short == listed[:5]
        queue = snapshot(session, teams[0], limit=100, all_names=False)
    assert [entry.queue_position for entry in queue.queued] == list(range(len(expected)))
    mine = [entry for entry in queue.queued if entry.team_id == teams[0]]
    others = [entry for entry in queue.queued if entry.team_id != teams[0]]
    assert all(entry.job is not None and entry.id for entry in mine)
    assert all(entry.job is None and entry.id is None for entry in others)
    counts = {row.team_id: (row.queued, row.running) for row in queue.teams}
    assert counts == {teams[0]: (4, 0), teams[1]: (4, 0), teams[2]: (4, 0)}
    named = {row.team_id: row.name is not None for row in queue.teams}
    assert named == {teams[0]: True, teams[1]: False, teams[2]: False}  # others' names hidden


def test_concurrent_passes_never_hand_out_a_job_or_a_slot_twice(
    db: sessionmaker[Session],
) -> None:
    for _ in range(4):
        add_jobs(db, add_team(db), 10)
    add_workers(db, 7)
    barrier = threading.Barrier(8)
    results: list[list[str]] = []

    def one_pass() -> None:
        barrier.wait()
        results.append(run_pass(db))

    threads = [threading.Thread(target=one_pass) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    picked = [job_id for result in results for job_id in result]
    assert len(picked) == 7 and len(set(picked)) == 7


def test_a_dispatch_the_broker_lost_is_handed_out_again(db: sessionmaker[Session]) -> None:
    team = add_team(db)
    (job_id,) = add_jobs(db, team, 1)
    add_workers(db, 1)
    assert run_pass(db) == [job_id]
    assert run_pass(db) == []
    timeout = timedelta(seconds=get_settings().dispatch_timeout_seconds)
    with db.begin() as session:  # the message never reached a worker
        job = session.get(Job, job_id)
        assert job is not None
        job.dispatched_at = utcnow() - timeout - timedelta(seconds=1)
    assert run_pass(db) == [job_id]


def test_silent_workers_give_no_slot(db: sessionmaker[Session]) -> None:
    team = add_team(db)
    add_jobs(db, team, 1)
    with db.begin() as session:
        silent = utcnow() - timedelta(seconds=get_settings().worker_offline_seconds + 1)
        session.add(Worker(id="gone", hostname="h", device="cpu", device_name="cpu",
                           last_heartbeat=silent))  # fmt: skip
    assert run_pass(db) == []


# Jobs of several devices (resources.devices): gangs on one host, all at once or not at all.


def test_a_gang_takes_all_its_devices_on_one_host_or_waits(db: sessionmaker[Session]) -> None:
    team = add_team(db)
    big = add_workers(db, 2, host="big")
    add_workers(db, 1, host="small")
    first, second = add_jobs(db, team, 2, devices=2)
    assert run_pass(db) == [first]
    assert sorted(placement(db, first) or []) == sorted(big)  # both of one host's devices
    with db.begin() as session:
        listed = snapshot(session, team, limit=10, all_names=False)
    busy = {w.id: (w.status, w.job_id) for w in listed.workers if w.id in big}
    assert busy == dict.fromkeys(big, ("busy", first))  # the idle member shows its gang's job
    (mine,) = [t for t in listed.teams if t.team_id == team]
    assert (mine.queued, mine.running_devices) == (2, 2)  # handed out still counts as queued
    assert run_pass(db) == []  # "small" has one free device of the two the next gang needs
    assert placement(db, second) is None  # nothing is held for it while it waits
    start(db, first)
    end(db, first)
    assert run_pass(db) == [second]


def test_the_message_goes_to_the_leader_and_only_it_may_start_the_job(
    db: sessionmaker[Session],
) -> None:
    team = add_team(db)
    add_workers(db, 2)
    (job_id,) = add_jobs(db, team, 1, devices=2)
    with db.begin() as session:
        ((picked, queue),) = scheduler._pass(session, get_settings(), utcnow())
    leader, other = placement(db, job_id) or []
    assert picked == job_id and queue == f"distill.{leader}"
    now = utcnow()
    with db.begin() as session:
        assert not lifecycle.start(session, job_id, other, now, now + HOUR)
    with db.begin() as session:
        assert lifecycle.start(session, job_id, leader, now, now + HOUR)


def host_of(db: sessionmaker[Session], job_id: str) -> str:
    leader = (placement(db, job_id) or ["?:"])[0]
    return leader.split(":")[0]


def test_a_waiting_gang_keeps_its_host_and_small_jobs_fill_the_others(
    db: sessionmaker[Session],
) -> None:
    early, gangs, late = add_team(db), add_team(db), add_team(db)
    used_gpu(db, late, 60)  # the gang comes first in the order
    add_workers(db, 2, host="a")
    add_workers(db, 3, host="b")
    busy = add_jobs(db, early, 4)  # best fit: both of a's devices, then two of b's
    assert run_pass(db) == busy
    for job_id in busy:
        start(db, job_id)
    assert [host_of(db, job_id) for job_id in busy] == ["a", "a", "b", "b"]
    (gang,) = add_jobs(db, gangs, 1, devices=2)
    singles = add_jobs(db, late, 2)
    # b's one free device is kept for the gang, which b will fit first: no single job takes it.
    assert run_pass(db) == []
    # A job on a ends: a single job fills that device (backfill), and the gang still waits.
    end(db, busy[0])
    assert run_pass(db) == [singles[0]]
    assert host_of(db, singles[0]) == "a"
    start(db, singles[0])
    # A job on b ends: the gang starts there, ahead of the single job behind it.
    end(db, busy[2])
    assert run_pass(db) == [gang]
    assert host_of(db, gang) == "b"


def test_two_waiting_gangs_never_hold_each_other_up(db: sessionmaker[Session]) -> None:
    early, gangs = add_team(db), add_team(db, quota=2)
    add_workers(db, 2, host="a")
    add_workers(db, 2, host="b")
    busy = add_jobs(db, early, 2)
    assert run_pass(db) == busy  # best fit: both on a
    for job_id in busy:
        start(db, job_id)
    first, second = add_jobs(db, gangs, 2, devices=2)
    assert run_pass(db) == [first]  # b is free whole: the first gang; the second waits for a
    assert host_of(db, first) == "b"
    end(db, busy[0])
    assert run_pass(db) == []  # half of a is free: nothing is given out in halves
    end(db, busy[1])
    assert run_pass(db) == [second]
    assert host_of(db, second) == "a"


def test_a_job_larger_than_any_host_waits_with_one_warning_and_blocks_nobody(
    db: sessionmaker[Session],
) -> None:
    team = add_team(db)
    add_workers(db, 2, host="a")
    add_workers(db, 1, host="b")
    (huge,) = add_jobs(db, team, 1, devices=3)
    small = add_jobs(db, team, 2)
    assert run_pass(db) == small  # nothing can be kept for the huge job: the others go ahead
    assert run_pass(db) == []
    with db.begin() as session:
        events = session.scalars(
            select(JobEvent).where(JobEvent.job_id == huge, JobEvent.level == "warning")
        ).all()
        assert [e.data for e in events] == [
            {"code": "devices_unavailable", "devices": 3, "largest_host": 2}
        ]
        assert "asks for 3 devices of one host" in events[0].message


def test_a_device_quota_counts_each_jobs_devices(db: sessionmaker[Session]) -> None:
    capped, other = add_team(db, devices=3), add_team(db)
    used_gpu(db, other, 60)  # the capped team first in the order
    add_workers(db, 8)
    (gang,) = add_jobs(db, capped, 1, devices=2)
    too_big, one = add_jobs(db, capped, 1, devices=2) + add_jobs(db, capped, 1)
    (theirs,) = add_jobs(db, other, 1)
    before = positions(db)
    # 2 devices in use leave 1 of the 3: the team's next job (2 devices) waits, and so does
    # the 1-device job behind it in the team's own order.
    assert run_pass(db) == [gang, theirs]
    assert [before[gang], before[theirs]] == [0, 1]
    after = positions(db)  # the two handed out first, then the capped team's
    assert [after[gang], after[theirs], after[too_big], after[one]] == [0, 1, 2, 3]
    start(db, gang)
    end(db, gang)
    assert run_pass(db) == [too_big, one]


def test_usage_counts_device_seconds(db: sessionmaker[Session]) -> None:
    wide, narrow = add_team(db), add_team(db)
    with db.begin() as session:
        now = utcnow()
        for team_id, devices, seconds in [(wide, 4, 600), (narrow, 1, 1800)]:
            session.add(
                Job(id=new_id("job"), team_id=team_id, spec={}, teacher_file_id="f",
                    train_file_id="f", status=JobStatus.succeeded, devices=devices,
                    started_at=now - timedelta(seconds=seconds), finished_at=now)
            )  # fmt: skip
    with db.begin() as session:
        usage = {t: s.usage for t, s in scheduler.QueueView(session).states.items()}
    assert usage[wide] == pytest.approx(4 * 600, rel=0.05)  # 4 devices x 600 s, a little decayed
    assert usage[narrow] < usage[wide]
    (narrow_job,) = add_jobs(db, narrow, 1)
    add_jobs(db, wide, 1)
    add_workers(db, 1)
    assert run_pass(db) == [narrow_job]


def test_a_gang_behind_another_that_keeps_the_only_big_host_hears_of_no_shortfall(
    db: sessionmaker[Session],
) -> None:
    early, gangs = add_team(db), add_team(db, quota=2)
    add_workers(db, 2, host="a")
    (busy,) = add_jobs(db, early, 1)
    assert run_pass(db) == [busy]
    add_workers(db, 1, host="b")  # free, but too small for a gang: the pass looks further
    first, _ = add_jobs(db, gangs, 2, devices=2)
    assert run_pass(db) == []  # the first keeps "a"; the second finds no host left to keep
    with db.begin() as session:
        warned = session.scalars(select(JobEvent).where(JobEvent.level == "warning")).all()
    assert warned == []  # a host of 2 exists: both wait for it, neither is told otherwise
    start(db, busy)
    end(db, busy)
    assert run_pass(db) == [first]
