"""Time from POST /v1/jobs to `running`, with an idle worker, over 50 jobs: median and p99.

    python benchmarks/dispatch_latency.py [--jobs 50]

The API and a Celery worker run as real processes on PostgreSQL and Redis. Each job is tiny and
runs to its end before the next is submitted, so the worker is idle at every submit. `running`
is the moment the worker's claim commits (the job's `started_at`); client and server share one
clock. Target: median under 300 ms.
"""

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _service

from distillery import Client
from tests.helpers.teachers import save_npz, save_teacher, train_digits_teacher


def upload(client: httpx.Client, path: Path, purpose: str) -> str:
    with path.open("rb") as f:
        response = client.post("/v1/files", files={"file": f}, data={"purpose": purpose})
    response.raise_for_status()
    return str(response.json()["id"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()

    trained = train_digits_teacher(kind="mlp", epochs=5)
    with tempfile.TemporaryDirectory() as tmp, _service.distillery() as (base, key, _):
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
        distill = Client(base, key)  # follows the job's event stream to its final status
        teacher = upload(client, save_teacher(trained.model, Path(tmp) / "t.pt", "torchscript"),
                         "teacher")  # fmt: skip
        train = upload(client, save_npz(Path(tmp) / "d.npz", trained.x_val, trained.y_val),
                       "dataset")  # fmt: skip
        spec = {
            "teacher": {"file_id": teacher},
            "student": {"arch": "mlp", "hidden_sizes": [16]},
            "data": {"train_file_id": train, "validation_split": 0.2},
            "hyperparameters": {"epochs": 1},
        }
        delays = []
        for _ in range(args.jobs):
            submitted_at = time.time()
            job = client.post("/v1/jobs", json=spec).raise_for_status().json()
            distill.jobs.wait(job["id"])
            job = client.get(f"/v1/jobs/{job['id']}").json()
            assert job["status"] == "succeeded", job
            started = datetime.fromisoformat(job["started_at"]).timestamp()
            delays.append(1000 * (started - submitted_at))
    delays.sort()
    p99 = delays[int(0.99 * (len(delays) - 1))]
    print(f"POST -> running over {len(delays)} jobs: median {statistics.median(delays):.1f} ms, "
          f"p99 {p99:.1f} ms, min {delays[0]:.1f} ms (target: median < 300 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
