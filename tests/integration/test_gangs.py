"""Jobs of two devices on a real host of two worker processes (``distill worker --processes
2``): the scheduler gives the job both, its leader trains it on two real ranks (gloo), and a rank
SIGKILLed mid-run sends the job back to the queue, to resume from its distributed checkpoint and
end as the uninterrupted run does. Real ``distill serve`` and ``distill worker`` processes on a
deployment of their own (``tests/integration/cluster.py``)."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import flow
from tests.integration.cluster import Cluster, cluster, wait_for
from tests.integration.test_failures import follow_until_epoch, job_spec, student_sha256

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TWO = {"resources": {"devices": 2}}
# Long enough (a few seconds on two ranks of one thread) to be caught mid-run.
LONG = {"student": {"arch": "mlp", "hidden_sizes": [32]},
        "hyperparameters": {"epochs": 40, "batch_size": 16, "seed": 3}, **TWO}  # fmt: skip
SHORT = {"student": {"arch": "mlp", "hidden_sizes": [32]},
         "hyperparameters": {"epochs": 10, "batch_size": 32, "seed": 1}}  # fmt: skip


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("gangs")) as deployment:
        quota = deployment.admin.patch("/v1/teams/team_default", json={"max_running_jobs": 4})
        assert quota.status_code == 200
        deployment.start_worker("pair", processes=2)
        yield deployment


def events(deployment: Cluster, job_id: str) -> list[dict[str, Any]]:
    """Every event of the job, page after page."""
    found: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"after": found[-1]["id"]} if found else {})
        page = deployment.admin.get(f"/v1/jobs/{job_id}/events", params=params).json()
        found += page["data"]
        if not page["has_more"]:
            return found


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except FileNotFoundError:
                continue
            found += children
            todo += children
    return found


def rank_processes(deployment: Cluster) -> list[int]:
    """The ranks a job's training process spawned, under the worker ``pair``."""
    pids = []
    for pid in descendants(deployment.workers["pair"].pid):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except FileNotFoundError:
            continue
    return pids


def test_a_two_device_job_holds_both_workers_of_its_host_and_trains_on_two_ranks(
    deployment: Cluster, files: dict[str, str]
) -> None:
    gang = flow.submit(deployment.admin, job_spec(files, "gang", SHORT | TWO))
    single = flow.submit(deployment.admin, job_spec(files, "single", SHORT))
    follow_until_epoch(deployment, gang["id"], 1)
    live = [w for w in deployment.queue()["workers"] if w["status"] != "offline"]
    assert [(w["status"], w["job_id"]) for w in live] == [("busy", gang["id"])] * 2
    assert deployment.admin.get(f"/v1/jobs/{single['id']}").json()["status"] == "queued"

    ended = flow.run_to_end(deployment.admin, gang["id"])
    assert ended["status"] == "succeeded", ended["error"]
    alone = flow.run_to_end(deployment.admin, single["id"])
    assert alone["status"] == "succeeded", alone["error"]
    assert (ended["metrics"]["world_size"], alone["metrics"]["world_size"]) == (2, 1)
    # The same job on one device and on two (the global batch split between the ranks).
    for metric in ("student_accuracy", "agreement"):
        assert ended["metrics"][metric] == pytest.approx(alone["metrics"][metric], abs=0.05)


def test_a_killed_rank_sends_the_job_back_and_it_ends_as_if_never_stopped(
    deployment: Cluster, files: dict[str, str]
) -> None:
    job = flow.submit(deployment.admin, job_spec(files, "interrupted", LONG))
    follow_until_epoch(deployment, job["id"], 2)  # a distributed checkpoint is stored
    (rank,) = wait_for(lambda: rank_processes(deployment), "the job's second rank")
    os.kill(rank, signal.SIGKILL)
    resumed = flow.run_to_end(deployment.admin, job["id"])
    assert resumed["status"] == "succeeded", resumed["error"]
    assert resumed["attempts"] == 2
    messages = [e["message"] for e in events(deployment, job["id"])]
    assert any(
        m.startswith("Rank 1 of 2 ended (killed by SIGKILL)") and "Queued again to resume" in m
        for m in messages
    ), messages
    assert any(m.startswith("Resumed the student at epoch") and not m.startswith(
        "Resumed the student at epoch 0,") for m in messages), messages  # fmt: skip
    assert rank_processes(deployment) == []

    baseline = flow.submit(deployment.admin, job_spec(files, "uninterrupted", LONG))
    uninterrupted = flow.run_to_end(deployment.admin, baseline["id"])
    assert uninterrupted["status"] == "succeeded" and uninterrupted["attempts"] == 1
    for metric in ("student_accuracy", "agreement", "kl_divergence", "world_size"):
        assert resumed["metrics"][metric] == uninterrupted["metrics"][metric], metric
    assert student_sha256(deployment, job["id"]) == student_sha256(deployment, baseline["id"])
