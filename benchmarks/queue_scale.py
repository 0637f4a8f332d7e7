"""The queue at scale: 10,000 queued jobs across 20 teams against an empty queue.

    python benchmarks/queue_scale.py [--jobs 10000] [--teams 20] [--samples 200]

The API runs as a real process on PostgreSQL (Redis as the broker, no worker, so nothing
drains the queue). Three figures, p99 over ``--samples`` each, first with an empty queue, then
with the queue full, in the same run:
- submit: ``POST /v1/jobs`` (its answer carries the new job's exact ``queue_position``); each
  submitted job is cancelled right after, untimed, so the queue keeps its size;
- ``GET /v1/queue`` as a team's key (the first 100 queued jobs in dispatch order, every team's
  counts);
- one scheduling decision: a pass that finds one host with two free workers (rows added in the
  pass's own transaction, rolled back afterwards) and hands out what fits, run in this process.
Target: each at most 2x its empty-queue figure.

Then the same queue with gangs: a third of the queued jobs ask for 2 devices and every team has a
device quota (``max_running_devices`` 4), so each pass places gangs and reads the teams' head
jobs' devices. Target: ``GET /v1/queue`` and the decision at most 2x their single-device figures
with the queue full.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _service

from tests.helpers.teachers import save_npz, save_teacher, train_digits_teacher


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(0.99 * (len(ordered) - 1))]


def timed(action: Callable[[], object], samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        action()
        times.append(1000 * (time.perf_counter() - start))
    return times


def upload(client: httpx.Client, path: Path, purpose: str) -> str:
    with path.open("rb") as f:
        response = client.post("/v1/files", files={"file": f}, data={"purpose": purpose})
    return str(response.raise_for_status().json()["id"])


def fill_queue(database_url: str, teams: list[str], jobs: int, spec: dict) -> None:
    """``jobs`` queued jobs, spread over ``teams``, with mixed priorities and ages."""
    from app.ids import new_id
    from app.models.base import utcnow

    now = utcnow()
    rows = [
        (new_id("job"), teams[i % len(teams)], "queued", json.dumps(spec), (i * 7) % 5,
         spec["teacher"]["file_id"], spec["data"]["train_file_id"],
         now - timedelta(seconds=jobs - i), 0, False)
        for i in range(jobs)
    ]  # fmt: skip
    with psycopg.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO jobs (id, team_id, status, spec, priority, teacher_file_id,"
            " train_file_id, created_at, attempts, cancel_requested)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        conn.commit()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobs")  # what autovacuum does soon after such a load


def one_decision() -> None:
    from sqlalchemy.orm import Session

    from app.config import get_settings
    from app.db import get_engine
    from app.ids import new_id
    from app.models import Worker
    from app.models.base import utcnow
    from app.queue import scheduler

    with Session(get_engine()) as session:
        for _ in range(2):
            session.add(Worker(id=new_id("w"), hostname="bench", device="cpu", device_name="cpu"))
        session.flush()
        picked = scheduler._pass(session, get_settings(), utcnow())
        assert 1 <= len(picked) <= 2, picked
        session.rollback()


def mix_devices(database_url: str) -> None:
    """A third of the queued jobs ask for 2 devices; every team may hold 4 devices."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE jobs SET devices = 2 WHERE status = 'queued' AND hashtext(id) % 3 = 0")
        conn.execute("UPDATE teams SET max_running_devices = 4")
        conn.commit()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobs")


def measure(submit_client: httpx.Client, spec: dict, samples: int) -> dict[str, list[float]]:
    def submit() -> None:
        job = submit_client.post("/v1/jobs", json=spec).raise_for_status().json()
        assert job["queue_position"] is not None
        submitted.append(job["id"])

    submitted: list[str] = []
    figures = {"submit": timed(submit, samples)}
    for job_id in submitted:
        submit_client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
    figures["GET /v1/queue"] = timed(
        lambda: submit_client.get("/v1/queue").raise_for_status(), samples
    )
    figures["scheduling decision"] = timed(one_decision, samples)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    trained = train_digits_teacher(kind="mlp", epochs=2)
    with (
        tempfile.TemporaryDirectory() as tmp,
        _service.distillery(with_worker=False) as (base, key, env),
    ):
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
        team_ids, clients = [], []
        for i in range(args.teams):
            team = admin.post("/v1/teams", json={"name": f"t{i}", "max_running_jobs": 2})
            team_ids.append(team.raise_for_status().json()["id"])
            secret = admin.post(f"/v1/teams/{team_ids[-1]}/keys", json={"name": "b"}).json()["key"]
            clients.append(httpx.Client(base_url=base, timeout=60,
                                        headers={"Authorization": f"Bearer {secret}"}))  # fmt: skip
        probe = clients[0]
        spec = {
            "teacher": {"file_id": upload(probe, save_teacher(trained.model, Path(tmp) / "t.pt",
                                                              "torchscript"), "teacher")},
            "data": {"train_file_id": upload(probe, save_npz(Path(tmp) / "d.npz", trained.x_val,
                                                             trained.y_val), "dataset")},
        }  # fmt: skip
        one = probe.post("/v1/jobs", json=spec).raise_for_status().json()  # a decision's job
        warm = measure(probe, spec, 20)  # connections, caches
        empty = measure(probe, spec, args.samples)
        fill_queue(env["DISTILL_DATABASE_URL"], team_ids, args.jobs - 1, spec)
        queue = probe.get("/v1/queue").json()
        queued = sum(t["queued"] for t in queue["teams"])
        full = measure(probe, spec, args.samples)
        mix_devices(env["DISTILL_DATABASE_URL"])
        full_mixed = measure(probe, spec, args.samples)
        del warm, one
    print(f"{queued} queued jobs across {args.teams} teams vs 1; p99 over {args.samples} each")
    worst = 0.0
    for name in empty:
        ratio = p99(full[name]) / p99(empty[name])
        worst = max(worst, ratio)
        print(f"  {name:20s} empty p99 {p99(empty[name]):7.2f} ms (median "
              f"{statistics.median(empty[name]):6.2f})   full p99 {p99(full[name]):7.2f} ms "
              f"(median {statistics.median(full[name]):6.2f})   ratio {ratio:.2f}")  # fmt: skip
    print(f"worst ratio {worst:.2f} (target <= 2)")
    print(
        "the same queue, a third of it 2-device jobs, every team a 4-device quota, against "
        "the single-device queue:"
    )
    worst = 0.0
    for name in ("GET /v1/queue", "scheduling decision"):
        ratio = p99(full_mixed[name]) / p99(full[name])
        worst = max(worst, ratio)
        print(f"  {name:20s} single p99 {p99(full[name]):7.2f} ms   mixed p99 "
              f"{p99(full_mixed[name]):7.2f} ms (median {statistics.median(full_mixed[name]):6.2f})"
              f"   ratio {ratio:.2f}")  # fmt: skip
    print(f"worst ratio {worst:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
