"""Cancellation, idempotent submission and paging, with a real worker."""

import pytest

from app import storage
from tests.conftest import Client
from tests.integration import flow
from tests.integration.conftest import Digits

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker_process")]


@pytest.fixture
def inputs(team: Client, digits: Digits) -> dict[str, str]:
    return {
        "teacher": flow.upload(team, digits.teacher, "teacher")["id"],
        "train": flow.upload(team, digits.train, "dataset")["id"],
        "validation": flow.upload(team, digits.validation, "dataset")["id"],
    }


def long_spec(inputs: dict[str, str]) -> dict:
    """A job that would run for minutes: something to cancel."""
    return flow.spec(
        inputs["teacher"], inputs["train"], inputs["validation"],
        hyperparameters={"epochs": 1000, "batch_size": 4},
    )  # fmt: skip


def test_cancel_while_queued_and_while_running(team: Client, inputs: dict[str, str]) -> None:
    running = flow.submit(team, long_spec(inputs))
    flow.events_until(team, running["id"], "running")
    # The only worker is busy, so the next job waits in the queue.
    queued = flow.submit(team, long_spec(inputs))
    assert queued["status"] == "queued"

    cancelled = team.post(f"/v1/jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"  # at once

    in_use = team.delete(f"/v1/files/{inputs['teacher']}")
    assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "file_in_use"

    requested = team.post(f"/v1/jobs/{running['id']}/cancel").json()
    assert requested["status"] == "running" and requested["cancel_requested"] is True
    events = flow.events_until(team, running["id"], timeout=10)  # the contract's 10 seconds
    assert flow.statuses(events)[-1] == "cancelled"
    assert storage.get_store().exists(storage.checkpoint_key(running["id"]))  # its last checkpoint

    again = team.post(f"/v1/jobs/{running['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    # The queued job's message still reaches the worker, which must not run it.
    assert team.get(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"
    # With no job needing it any more, the teacher can go.
    assert team.delete(f"/v1/files/{inputs['teacher']}").status_code == 204
    assert team.get(f"/v1/files/{inputs['teacher']}").status_code == 404


def test_idempotent_submit(team: Client, inputs: dict[str, str]) -> None:
    body = flow.spec(inputs["teacher"], inputs["train"], inputs["validation"])
    headers = {"Idempotency-Key": "submit-1"}
    first = team.post("/v1/jobs", json=body, headers=headers)
    second = team.post("/v1/jobs", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    other = {**body, "hyperparameters": {"epochs": 3}}
    conflict = team.post("/v1/jobs", json=other, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    listed = team.get("/v1/jobs").json()["data"]
    assert [job["id"] for job in listed] == [first.json()["id"]]
    flow.run_to_end(team, first.json()["id"])


def test_list_pagination_with_after(team: Client, inputs: dict[str, str]) -> None:
    ids = [
        flow.submit(team, flow.spec(inputs["teacher"], inputs["train"], inputs["validation"],
                                    hyperparameters={"epochs": 1}))["id"]
        for _ in range(3)
    ]  # fmt: skip
    first = team.get("/v1/jobs", params={"limit": 2}).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [j["id"] for j in first["data"]] == ids[::-1][:2]  # newest first
    rest = team.get("/v1/jobs", params={"limit": 2, "after": first["data"][-1]["id"]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    files = team.get("/v1/files", params={"limit": 1}).json()
    assert files["has_more"] is True and files["data"][0]["id"] == inputs["validation"]
    for job_id in ids:
        flow.run_to_end(team, job_id)
    finished = team.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()
    assert {j["id"] for j in finished["data"]} == set(ids)
