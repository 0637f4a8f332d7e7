"""Fair share with two workers: team A submits 100 jobs, then team B submits 5.

    python benchmarks/queue_fairness.py [--a-jobs 100] [--b-jobs 5]

The API and two Celery workers run as real processes on PostgreSQL and Redis; every job is a
real (tiny) distillation. Prints the start order, how many dispatches B's first job waited after
B submitted (target: at most 2; first come, first served would make it wait for all of A's
queued jobs), and when B's last job finished as a share of the time A's queue took to drain.
"""

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _service

from tests.helpers.teachers import save_npz, save_teacher, train_digits_teacher

FINAL = {"succeeded", "failed", "cancelled"}


def team_client(base: str, admin: httpx.Client, name: str) -> httpx.Client:
    team = admin.post("/v1/teams", json={"name": name, "max_running_jobs": 2}).raise_for_status()
    key = admin.post(f"/v1/teams/{team.json()['id']}/keys", json={"name": "bench"})
    headers = {"Authorization": f"Bearer {key.raise_for_status().json()['key']}"}
    return httpx.Client(base_url=base, headers=headers, timeout=60)


def upload(client: httpx.Client, path: Path, purpose: str) -> str:
    with path.open("rb") as f:
        response = client.post("/v1/files", files={"file": f}, data={"purpose": purpose})
    return str(response.raise_for_status().json()["id"])


def spec_for(client: httpx.Client, teacher: Path, data: Path) -> dict[str, Any]:
    return {
        "teacher": {"file_id": upload(client, teacher, "teacher")},
        "student": {"arch": "mlp", "hidden_sizes": [16]},
        "data": {"train_file_id": upload(client, data, "dataset"), "validation_split": 0.2},
        "hyperparameters": {"epochs": 5},  # a second or so: longer than B takes to submit
    }


def all_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
        page = client.get("/v1/jobs", params=params).raise_for_status().json()
        jobs += page["data"]
        if not page["has_more"]:
            return jobs
        after = page["data"][-1]["id"]


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a-jobs", type=int, default=100)
    parser.add_argument("--b-jobs", type=int, default=5)
    args = parser.parse_args()

    trained = train_digits_teacher(kind="mlp", epochs=5)
    settings = {"DISTILL_TORCH_THREADS": "1"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        _service.distillery(workers=2, settings=settings) as (base, key, _),
    ):
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
        teacher = save_teacher(trained.model, Path(tmp) / "t.pt", "torchscript")
        data = save_npz(Path(tmp) / "d.npz", trained.x_val, trained.y_val)
        team_a, team_b = team_client(base, admin, "a"), team_client(base, admin, "b")
        spec_a, spec_b = spec_for(team_a, teacher, data), spec_for(team_b, teacher, data)
        _service.wait_workers(admin, 2)
        for _ in range(args.a_jobs):
            team_a.post("/v1/jobs", json=spec_a).raise_for_status()
        b_submitted = time.time()
        b_positions = [
            team_b.post("/v1/jobs", json=spec_b).raise_for_status().json()["queue_position"]
            for _ in range(args.b_jobs)
        ]
        while True:
            jobs = [("A", j) for j in all_jobs(team_a)] + [("B", j) for j in all_jobs(team_b)]
            if all(j["status"] in FINAL for _, j in jobs):
                break
            time.sleep(0.5)
    assert all(j["status"] == "succeeded" for _, j in jobs), "a job failed"
    started = sorted(jobs, key=lambda tj: ts(tj[1]["started_at"]))
    order = "".join(team for team, _ in started)
    split = sum(1 for _, j in started if ts(j["started_at"]) < b_submitted)
    order = f"{order[:split]} | {order[split:]}"  # | : B submits
    after_b = [team for team, j in started if ts(j["started_at"]) >= b_submitted]
    waited = after_b.index("B")
    a_queued_at_b = sum(
        1 for team, j in started if team == "A" and ts(j["started_at"]) >= b_submitted
    )
    b_done = max(ts(j["finished_at"]) for team, j in jobs if team == "B") - b_submitted
    a_done = max(ts(j["finished_at"]) for team, j in jobs if team == "A") - b_submitted
    print(f"start order ({len(jobs)} jobs, 2 workers; | marks B's submit): {order}")
    print(f"B's queue_position at submit: {b_positions}")
    print(f"B's first job started after {waited} other dispatch(es) from B's submit "
          f"(target <= 2; first come, first served: {a_queued_at_b})")  # fmt: skip
    print(f"B's {args.b_jobs} jobs done {b_done:.1f} s after B submitted; A's queue drained after "
          f"{a_done:.1f} s: ratio {b_done / a_done:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
