"""GET /v1/jobs/{id} throughput and p99 latency at 32 concurrent clients, on PostgreSQL, against
a bare FastAPI endpoint served the same way (one uvicorn process) in the same run.

    python benchmarks/api_throughput.py [--concurrency 32] [--seconds 10] [--client wrk|httpx]

The load comes from wrk (Debian's `wrk` package) when it is installed, else from an asyncio httpx
client in this process; on a 2-core machine the Python client takes a core the servers then lack.

Target: Distillery serves at least half the bare endpoint's throughput.
"""

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
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


def wrk(url: str, headers: dict[str, str], seconds: int, concurrency: int) -> dict:
    argv = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", url]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    assert "Non-2xx" not in out, out

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%")}


def measure(url: str, headers: dict[str, str], args: argparse.Namespace) -> dict:
    if args.client == "wrk":
        return wrk(url, headers, args.seconds, args.concurrency)
    return asyncio.run(hammer(url, headers, args.requests, args.concurrency))


def a_team_and_its_job(base: str, admin_key: str) -> tuple[str, str]:
    """A team key made through the API (so every request pays the key lookup, as a member's
    does), and a full job row of that team, inserted the way the API stores one."""
    from app.db import session_scope
    from app.ids import new_id
    from app.models import Job

    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_key}"})
    team = admin.post("/v1/teams", json={"name": "bench"}).raise_for_status().json()
    key = admin.post(f"/v1/teams/{team['id']}/keys", json={"name": "bench"}).raise_for_status()
    job_id = new_id("job")
    spec = {"teacher": {"file_id": "file_x"}, "data": {"train_file_id": "file_y"}}
    with session_scope() as session:
        session.add(
            Job(id=job_id, team_id=team["id"], spec=spec, teacher_file_id="file_x",
                train_file_id="file_y", status="succeeded",
                metrics={"student_accuracy": 0.97, "teacher_accuracy": 0.98})
        )  # fmt: skip
    return key.json()["key"], job_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000, help="httpx client only")
    parser.add_argument("--seconds", type=int, default=10, help="wrk only")
    parser.add_argument(
        "--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    with _service.distillery(with_worker=False) as (base, admin_key, _env):
        team_key, job_id = a_team_and_its_job(base, admin_key)
        headers = {"Authorization": f"Bearer {team_key}"}
        distill = measure(f"{base}/v1/jobs/{job_id}", headers, args)
        port = _service.free_port()
        bare_proc = _service.serve("bare_app:app", {"PYTHONPATH": str(Path(__file__).parent)}, port)
        try:
            _service.wait_ready(f"http://127.0.0.1:{port}/v1/jobs/x", bare_proc)
            bare = measure(f"http://127.0.0.1:{port}/v1/jobs/x", {}, args)
        finally:
            _service.stop(bare_proc)

    print(f"load: {args.client}, {args.concurrency} concurrent clients")
    for name, result in (("distillery", distill), ("bare fastapi", bare)):
        print(f"{name:>13}: {result['rps']:8.1f} req/s  p50 {result['p50_ms']:6.1f} ms  "
              f"p99 {result['p99_ms']:6.1f} ms")  # fmt: skip
    print(f"throughput ratio distillery/bare: {distill['rps'] / bare['rps']:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
