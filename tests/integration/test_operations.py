"""Webhooks and structured logs, end to end: a service of its own (database, queue, API in-process
with its delivery thread) whose real Celery worker logs JSON, and real HTTP receivers."""

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import read_scope
from app.webhooks import repository
from app.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER
from tests.conftest import ADMIN_KEY, Client, celery_worker, make_team, service_environment
from tests.helpers.webhooks import Received, documented_verify, receiver
from tests.integration import flow
from tests.integration.conftest import Digits

pytestmark = pytest.mark.integration

FAST_WEBHOOKS = {
    "DISTILL_LOG_FORMAT": "json",
    "DISTILL_WEBHOOK_BACKOFF_SECONDS": "0.2",
    "DISTILL_WEBHOOK_MAX_ATTEMPTS": "3",
    "DISTILL_WEBHOOK_POLL_SECONDS": "0.1",
    "DISTILL_WEBHOOK_TIMEOUT_SECONDS": "2",
}
verify = documented_verify()


@dataclass
class Service:
    admin: Client
    worker_log: Path


@pytest.fixture(scope="module")
def service(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with (
        service_environment(tmp_path_factory.mktemp("ops"), **FAST_WEBHOOKS) as env,
        celery_worker(env),
    ):
        from app.main import create_app

        with TestClient(create_app(), raise_server_exceptions=False) as api:
            yield Service(Client(api, ADMIN_KEY, "team_default"), Path(env["DISTILL_STORAGE_DIR"]))


def inputs(team: Client, digits: Digits) -> tuple[str, str, str]:
    return (
        flow.upload(team, digits.teacher, "teacher")["id"],
        flow.upload(team, digits.train, "dataset")["id"],
        flow.upload(team, digits.validation, "dataset")["id"],
    )


def secret_of(team: Client) -> str:
    response = team.get("/v1/webhook_secret")
    assert response.status_code == 200, response.text
    return response.json()["secret"]


def wait_until_settled(job_id: str, timeout: float = 60) -> list[Any]:
    """The job's deliveries, once none is pending."""
    deadline = time.monotonic() + timeout
    while True:
        with read_scope() as session:
            deliveries = repository.deliveries_of_job(session, job_id)
        if deliveries and all(d.status != "pending" for d in deliveries):
            return deliveries
        assert time.monotonic() < deadline, [d.status for d in deliveries]
        time.sleep(0.05)


def webhook_events(team: Client, job_id: str) -> list[dict[str, Any]]:
    events = team.get(f"/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    return [e for e in events if (e["data"] or {}).get("webhook")]


def check_delivery(got: Received, secret: str, job_id: str, type_: str) -> dict[str, Any]:
    assert verify(secret, got.headers[SIGNATURE_HEADER], got.body)
    body = json.loads(got.body)
    assert body["type"] == type_ and got.headers[EVENT_HEADER] == type_
    assert body["id"] == got.headers[DELIVERY_HEADER] and body["id"].startswith("evt_")
    assert body["data"]["id"] == job_id and body["data"]["object"] == "job"
    assert body["data"]["status"] == type_.removeprefix("job.")
    return body


def queued_job(team: Client, digits: Digits, url: str) -> str:
    """A job of a paused team (max_running_jobs 0): it stays queued until cancelled."""
    teacher, train, validation = inputs(team, digits)
    job = flow.submit(team, {**flow.spec(teacher, train, validation), "webhook_url": url})
    assert job["status"] == "queued" and job["spec"]["webhook_url"] == url
    return job["id"]


def test_a_job_that_succeeds_sends_one_signed_webhook_and_logs_json(
    service: Service, digits: Digits
) -> None:
    team = make_team(service.admin)
    with receiver(200) as hook:
        teacher, train, validation = inputs(team, digits)
        spec = {**flow.spec(teacher, train, validation, hyperparameters={"epochs": 1}),
                "webhook_url": hook.url}  # fmt: skip
        job_id = flow.submit(team, spec)["id"]
        job = flow.run_to_end(team, job_id)
        assert job["status"] == "succeeded", job["error"]
        [delivery] = wait_until_settled(job_id)
        [got] = hook.received
    assert delivery.status == "delivered" and delivery.attempts == 1
    body = check_delivery(got, secret_of(team), job_id, "job.succeeded")
    assert body["data"]["metrics"]["student_accuracy"] == job["metrics"]["student_accuracy"]
    [event] = webhook_events(team, job_id)
    assert event["message"].startswith("Webhook delivered")

    lines = [line for line in (service.worker_log / "worker.log").read_text().splitlines()
             if job_id in line]  # fmt: skip
    assert len(lines) >= 2, lines  # at least the task's outcome, and the runner's
    for line in lines:
        entry = json.loads(line)
        assert entry["job_id"] == job_id and entry["team_id"] == team.team_id, entry
        assert {"time", "level", "logger", "message"} <= set(entry)


def test_a_job_cancelled_while_queued_sends_one(service: Service, digits: Digits) -> None:
    team = make_team(service.admin, max_running_jobs=0)
    with receiver(200) as hook:
        job_id = queued_job(team, digits, hook.url)
        assert team.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        [delivery] = wait_until_settled(job_id)
        [got] = hook.received
    assert delivery.status == "delivered"
    check_delivery(got, secret_of(team), job_id, "job.cancelled")


def test_failed_attempts_are_retried_until_one_succeeds(service: Service, digits: Digits) -> None:
    team = make_team(service.admin, max_running_jobs=0)
    with receiver(500, 500, 200) as hook:
        job_id = queued_job(team, digits, hook.url)
        team.post(f"/v1/jobs/{job_id}/cancel")
        [delivery] = wait_until_settled(job_id)
        received = hook.received
    assert delivery.status == "delivered" and delivery.attempts == 3
    assert len(received) == 3
    assert len({r.headers[DELIVERY_HEADER] for r in received}) == 1  # one delivery, three tries
    assert len({r.body for r in received}) == 1
    secret = secret_of(team)
    for got in received:
        check_delivery(got, secret, job_id, "job.cancelled")
    messages = [e["message"] for e in webhook_events(team, job_id)]
    assert messages[0].startswith("Webhook attempt 1 failed: HTTP 500")
    assert messages[1].startswith("Webhook attempt 2 failed: HTTP 500")
    assert messages[2] == "Webhook delivered (job.cancelled, attempt 3)."


def test_a_dead_receiver_fails_after_the_last_attempt(service: Service, digits: Digits) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    team = make_team(service.admin, max_running_jobs=0)
    job_id = queued_job(team, digits, url)
    team.post(f"/v1/jobs/{job_id}/cancel")
    [delivery] = wait_until_settled(job_id)
    assert delivery.status == "failed" and delivery.attempts == 3
    assert "ConnectError" in (delivery.last_error or "")
    events = webhook_events(team, job_id)
    assert [e["data"]["webhook"]["attempt"] for e in events] == [1, 2, 3]
    assert events[-1]["level"] == "error" and "Giving up after 3 attempts" in events[-1]["message"]


def test_each_team_has_its_own_secret_and_can_rotate_it(service: Service) -> None:
    one, other = make_team(service.admin), make_team(service.admin)
    first = secret_of(one)
    assert first.startswith("whsec_") and secret_of(one) == first
    assert secret_of(other) != first
    rotated = one.post("/v1/webhook_secret/rotate").json()
    assert rotated["object"] == "webhook_secret" and rotated["team_id"] == one.team_id
    assert rotated["secret"] != first and secret_of(one) == rotated["secret"]
    assert service.admin.api.get("/v1/webhook_secret").status_code == 401
