"""GET /v1/jobs/{id} throughput and p99 latency at 32 concurrent clients, on PostgreSQL, against
a bare FastAPI endpoint served the same way (one uvicorn process) in the same run.

    python benchmarks/api_throughput.py [--requests 4000] [--concurrency 32]

Target: Distillery serves at least half the bare endpoint's throughput.
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _service


async def hammer(url: str, headers: dict[str, str], requests: int, concurrency: int) -> dict:
    latencies: list[float] = []
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def one_client() -> None:
            for _ in remaining:
                start = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text

        for _ in range(concurrency):  # warm-up: open every connection
            await client.get(url)
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": requests / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def a_real_job(base: str, admin_key: str) -> str:
    """Insert a job row the way the API does, so GET reads a real, full job."""
    from app.db import session_scope
    from app.ids import new_id
    from app.models import Job

    job_id = new_id("job")
    spec = {"teacher": {"file_id": "file_x"}, "data": {"train_file_id": "file_y"}}
    with session_scope() as session:
        session.add(
            Job(id=job_id, team_id="team_default", spec=spec, teacher_file_id="file_x",
                train_file_id="file_y", status="succeeded",
                metrics={"student_accuracy": 0.97, "teacher_accuracy": 0.98})
        )  # fmt: skip
    return job_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    with _service.distillery(with_worker=False) as (base, admin_key, _env):
        job_id = a_real_job(base, admin_key)
        headers = {"Authorization": f"Bearer {admin_key}"}
        distill = asyncio.run(
            hammer(f"{base}/v1/jobs/{job_id}", headers, args.requests, args.concurrency)
        )
        port = _service.free_port()
        bare_proc = _service.serve("bare_app:app", {"PYTHONPATH": str(Path(__file__).parent)}, port)
        try:
            _service.wait_ready(f"http://127.0.0.1:{port}/v1/jobs/x", bare_proc)
            bare = asyncio.run(
                hammer(f"http://127.0.0.1:{port}/v1/jobs/x", {}, args.requests, args.concurrency)
            )
        finally:
            _service.stop(bare_proc)

    for name, result in (("distillery", distill), ("bare fastapi", bare)):
        print(f"{name:>13}: {result['rps']:8.1f} req/s  p50 {result['p50_ms']:6.1f} ms  "
              f"p99 {result['p99_ms']:6.1f} ms")  # fmt: skip
    print(f"throughput ratio distillery/bare: {distill['rps'] / bare['rps']:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
