"""Failures, caused for real: a worker SIGKILLed mid-job, Redis killed and restarted empty while
jobs wait and run, and a message delivered twice while its job runs. Real ``distill serve`` and
``distill worker`` processes on a deployment of their own (``tests/integration/cluster.py``)."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from app.broker import RUN_JOB_TASK
from tests.integration import flow
from tests.integration.cluster import Cluster, cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Long enough (a few seconds on one thread) to be caught mid-run; a checkpoint every epoch.
LONG = {"student": {"arch": "mlp", "hidden_sizes": [32]},
        "hyperparameters": {"epochs": 60, "batch_size": 16, "seed": 3}}  # fmt: skip
SHORT = {"student": {"arch": "mlp", "hidden_sizes": [16]}, "hyperparameters": {"epochs": 3}}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("cluster")) as deployment:
        # The built-in team runs one job at a time unless the admin says otherwise.
        quota = deployment.admin.patch("/v1/teams/team_default", json={"max_running_jobs": 4})
        assert quota.status_code == 200 and quota.json()["max_running_jobs"] == 4
        yield deployment


def job_spec(files: dict[str, str], name: str, shape: dict[str, Any]) -> dict[str, Any]:
    return flow.spec(files["teacher"], files["train"], files["validation"], name=name, **shape)


def events(deployment: Cluster, job_id: str) -> list[dict[str, Any]]:
    response = deployment.admin.get(f"/v1/jobs/{job_id}/events", params={"limit": 100})
    assert response.status_code == 200
    return response.json()["data"]  # type: ignore[no-any-return]


def follow_until_epoch(deployment: Cluster, job_id: str, epoch: int, attempt: int = 1) -> None:
    """Read the job's live event stream until, in its ``attempt``-th run, a progress event
    reports ``epoch``."""
    headers = {"Accept": "text/event-stream"}
    runs = 0
    with deployment.admin.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                status = (event["data"] or {}).get("status")
                assert status not in flow.FINAL, event
                runs += event["type"] == "status" and status == "running"
                if (
                    runs == attempt
                    and event["type"] == "progress"
                    and event["data"]["epoch"] >= epoch
                ):
                    return
    raise AssertionError("the stream closed before the job got that far")


def student_sha256(deployment: Cluster, job_id: str) -> str:
    listing = deployment.admin.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    return next(a["sha256"] for a in listing if a["name"] == "student.safetensors")


def running_events(deployment: Cluster, job_id: str) -> int:
    return flow.statuses(events(deployment, job_id)).count("running")


def test_a_killed_worker_s_job_resumes_on_another_and_ends_as_if_never_stopped(
    deployment: Cluster, files: dict[str, str]
) -> None:
    deployment.start_worker("doomed")
    job = flow.submit(deployment.admin, job_spec(files, "interrupted", LONG))
    follow_until_epoch(deployment, job["id"], 2)  # a checkpoint is on disk
    deployment.kill_worker("doomed")  # SIGKILL: no goodbye, no status written
    deployment.start_worker("rescuer")
    resumed = flow.run_to_end(deployment.admin, job["id"])
    assert resumed["status"] == "succeeded", resumed["error"]
    assert resumed["attempts"] == 2
    messages = [e["message"] for e in events(deployment, job["id"])]
    assert any("worker running this job was lost" in m for m in messages), messages
    assert any(m.startswith("Resumed the student at epoch") and not m.startswith(
        "Resumed the student at epoch 0,") for m in messages), messages  # fmt: skip

    baseline = flow.submit(deployment.admin, job_spec(files, "uninterrupted", LONG))
    uninterrupted = flow.run_to_end(deployment.admin, baseline["id"])
    assert uninterrupted["status"] == "succeeded" and uninterrupted["attempts"] == 1
    for metric in ("student_accuracy", "agreement", "kl_divergence", "teacher_accuracy"):
        assert resumed["metrics"][metric] == uninterrupted["metrics"][metric], metric
    assert student_sha256(deployment, job["id"]) == student_sha256(deployment, baseline["id"])


def test_a_job_whose_workers_keep_dying_fails_with_worker_lost(
    deployment: Cluster, files: dict[str, str]
) -> None:
    for name in list(deployment.workers):  # each run of the job is on a worker this test kills
        deployment.kill_worker(name)
    job = flow.submit(deployment.admin, job_spec(files, "cursed", LONG))
    for attempt in (1, 2):  # DISTILL_MAX_ATTEMPTS is 2 in this deployment
        deployment.start_worker(f"cursed-{attempt}")
        follow_until_epoch(deployment, job["id"], 1, attempt)
        assert deployment.admin.get(f"/v1/jobs/{job['id']}").json()["attempts"] == attempt
        deployment.kill_worker(f"cursed-{attempt}")
    final = flow.run_to_end(deployment.admin, job["id"])  # no worker left: the scheduler decides
    assert final["status"] == "failed" and final["attempts"] == 2
    assert final["error"]["code"] == "worker_lost"


def two_workers(deployment: Cluster) -> tuple[str, str]:
    live = {w["id"] for w in deployment.queue()["workers"] if w["status"] != "offline"}
    names = [n for n, p in deployment.workers.items() if p.poll() is None]
    while len(names) < 2 or len(live) < 2:
        names.append(f"worker-{len(deployment.workers)}")
        deployment.start_worker(names[-1])
        live = {w["id"] for w in deployment.queue()["workers"] if w["status"] != "offline"}
    return names[0], names[1]


def test_redis_killed_and_restarted_empty_loses_and_duplicates_no_job(
    deployment: Cluster, files: dict[str, str]
) -> None:
    two_workers(deployment)
    running = flow.submit(deployment.admin, job_spec(files, "running", LONG))
    follow_until_epoch(deployment, running["id"], 1)
    # The idle worker dies; until it is called offline the scheduler still counts its slot, so
    # the next job's message waits in Redis, handed out but taken by no one, when Redis dies.
    deployment.kill_worker(deployment.idle_worker())
    in_flight = flow.submit(deployment.admin, job_spec(files, "in-flight", SHORT))
    wait_for(lambda: deployment.dispatched_at(in_flight["id"]), "the job to be handed out")
    waiting = [flow.submit(deployment.admin, job_spec(files, f"w{i}", SHORT)) for i in range(2)]
    deployment.kill_redis()  # every message it held is gone
    # The database is the queue: a job submitted while the broker is down is accepted too.
    during = flow.submit(deployment.admin, job_spec(files, "during", SHORT))
    deployment.start_redis()
    for job in [running, in_flight, *waiting, during]:
        final = flow.run_to_end(deployment.admin, job["id"])
        assert final["status"] == "succeeded", (final["name"], final["error"])
        assert final["attempts"] == 1, final["name"]
        assert running_events(deployment, job["id"]) == 1, final["name"]
    messages = [e["message"] for e in events(deployment, in_flight["id"])]
    assert "The broker lost this job's message; handing it out again." in messages


def test_a_message_delivered_twice_never_runs_its_job_twice(
    deployment: Cluster, files: dict[str, str]
) -> None:
    two_workers(deployment)
    job = flow.submit(deployment.admin, job_spec(files, "once", LONG))
    follow_until_epoch(deployment, job["id"], 1)
    # What Redis does when a visibility timeout runs out: the same message, delivered again.
    producer = Celery(broker=deployment.env["DISTILL_BROKER_URL"])
    producer.send_task(RUN_JOB_TASK, args=[job["id"]], queue="distill")
    skipped = f"job {job['id']}: skipped"
    wait_for(lambda: any(skipped in deployment.log(name) for name in deployment.workers),
             "the duplicate to be refused", timeout=60)  # fmt: skip
    final = flow.run_to_end(deployment.admin, job["id"])
    assert final["status"] == "succeeded" and final["attempts"] == 1
    assert running_events(deployment, job["id"]) == 1
