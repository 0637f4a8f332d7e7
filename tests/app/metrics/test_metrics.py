"""``GET /metrics``: the database's state at scrape time, and the HTTP latency histogram."""

import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app.config import get_settings
from app.db import session_scope
from app.ids import new_id
from app.models import Job, JobStatus, WebhookDelivery, Worker
from app.models.base import utcnow
from tests.conftest import ADMIN_KEY, Client, make_team
from tests.helpers.api import error_of

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def scrape(api: TestClient) -> dict[str, list]:
    """Every sample, by metric family name, from a scrape with the admin key."""
    response = api.get("/metrics", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = text_string_to_metric_families(response.text)
    return {family.name: family.samples for family in families}


def value(samples: dict[str, list], name: str, sample: str | None = None, **labels: str) -> float:
    [match] = [
        s
        for s in samples[name]
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return match.value


def add_job(team_id: str, status: JobStatus, created_ago: float, started_ago: float | None,
            finished_ago: float | None) -> str:  # fmt: skip
    now = utcnow()
    ago = lambda s: None if s is None else now - timedelta(seconds=s)  # noqa: E731
    job_id = new_id("job")
    with session_scope() as session:
        session.add(
            Job(
                id=job_id, team_id=team_id, status=status, spec={}, teacher_file_id="file_t",
                train_file_id="file_d", created_at=ago(created_ago), started_at=ago(started_ago),
                finished_at=ago(finished_ago),
            )
        )  # fmt: skip
    return job_id


def test_scrape_shows_the_database_as_it_is(api: TestClient, admin: Client) -> None:
    team = make_team(admin, max_running_jobs=0)  # paused: its queued jobs stay queued
    t = team.team_id
    add_job(t, JobStatus.queued, 120, None, None)
    add_job(t, JobStatus.queued, 30, None, None)
    add_job(t, JobStatus.succeeded, 100, 90, 30)  # waited 10 s, ran 60 s
    add_job(t, JobStatus.failed, 50, 45, 40)  # waited 5 s, ran 5 s
    cancelled = add_job(t, JobStatus.cancelled, 20, None, 10)  # never started
    with session_scope() as session:
        failed_before = session.scalar(
            select(func.count()).where(WebhookDelivery.status == "failed")
        )
        session.add(
            WebhookDelivery(id=new_id("evt"), job_id=cancelled, team_id=t, type="job.cancelled",
                            url="http://127.0.0.1:9/", payload="{}", status="failed", attempts=8)
        )  # fmt: skip
    worker_id = f"metrics-test:{new_id('w')}"
    with session_scope() as session:
        session.add(
            Worker(id=worker_id, hostname="metrics-test", device="cpu", device_name="CPU",
                   job_id="job_x", last_heartbeat=utcnow() - timedelta(seconds=5))
        )  # fmt: skip
    try:
        samples = scrape(api)
    finally:
        with session_scope() as session:
            session.delete(session.get(Worker, worker_id))

    assert value(samples, "distill_database_up") == 1
    for status, n in [("queued", 2), ("running", 0), ("succeeded", 1), ("failed", 1),
                      ("cancelled", 1)]:  # fmt: skip
        assert value(samples, "distill_jobs", team_id=t, status=status) == n, status
    assert value(samples, "distill_queue_depth", team_id=t) == 2
    assert value(samples, "distill_queue_oldest_job_age_seconds", team_id=t) >= 120

    wait = "distill_job_queue_wait_seconds"
    assert value(samples, wait, f"{wait}_count", team_id=t) == 2  # the cancelled one never started
    assert value(samples, wait, f"{wait}_sum", team_id=t) == 15
    assert value(samples, wait, f"{wait}_bucket", team_id=t, le="5.0") == 1
    assert value(samples, wait, f"{wait}_bucket", team_id=t, le="15.0") == 2
    duration = "distill_job_duration_seconds"
    assert value(samples, duration, f"{duration}_count", team_id=t, status="succeeded") == 1
    assert value(samples, duration, f"{duration}_sum", team_id=t, status="succeeded") == 60
    assert value(samples, duration, f"{duration}_bucket", team_id=t, status="succeeded",
                 le="30.0") == 0  # fmt: skip
    assert value(samples, duration, f"{duration}_sum", team_id=t, status="failed") == 5
    assert value(samples, duration, f"{duration}_count", team_id=t, status="cancelled") == 0
    assert value(samples, "distill_team_gpu_seconds_24h", team_id=t) == 65

    age = value(samples, "distill_worker_heartbeat_age_seconds", worker_id=worker_id)
    assert 5 <= age < 60
    assert value(samples, "distill_workers", status="busy") >= 1
    assert 0 < value(samples, "distill_worker_utilisation") <= 1
    assert value(samples, "distill_webhook_deliveries", status="failed") == failed_before + 1


def test_http_latency_is_counted_by_route_template(api: TestClient, team: Client) -> None:
    count = "distill_http_request_duration_seconds_count"
    labels = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "404"}

    def requests_so_far() -> float:
        samples = scrape(api)["distill_http_request_duration_seconds"]
        matching = [
            s for s in samples
            if s.name == count and all(s.labels.get(k) == v for k, v in labels.items())
        ]  # fmt: skip
        return matching[0].value if matching else 0.0

    before = requests_so_far()
    missing = "job_" + "0" * 26
    assert team.get(f"/v1/jobs/{missing}").status_code == 404
    assert requests_so_far() == before + 1
    assert api.get("/no/such/route").status_code == 404
    text = api.get("/metrics", headers=ADMIN).text
    assert missing not in text and "/no/such/route" not in text  # templates, never raw paths
    assert 'route="unmatched"' in text


def test_metrics_is_not_in_the_schema(api: TestClient) -> None:
    assert "/metrics" not in api.get("/openapi.json").json()["paths"]


@pytest.fixture
def metrics_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    token = "prometheus-" + secrets.token_hex(8)
    monkeypatch.setenv("DISTILL_METRICS_TOKEN", token)
    get_settings.cache_clear()
    yield token
    monkeypatch.delenv("DISTILL_METRICS_TOKEN")
    get_settings.cache_clear()


def test_metrics_needs_the_admin_key_when_no_token_is_set(api: TestClient, team: Client) -> None:
    for headers in (
        {},
        team.headers,
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": ADMIN_KEY},
    ):
        response = api.get("/metrics", headers=headers)
        assert error_of(response, 401)["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        assert "distill_" not in response.text
    assert api.get("/metrics", headers=ADMIN).status_code == 200


def test_metrics_answers_the_metrics_token(
    api: TestClient, team: Client, metrics_token: str
) -> None:
    scraped = api.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    assert scraped.status_code == 200 and "distill_database_up" in scraped.text
    assert api.get("/metrics", headers=ADMIN).status_code == 200  # the admin key still does
    for headers in ({}, team.headers, {"Authorization": f"Bearer {metrics_token}x"}):
        assert error_of(api.get("/metrics", headers=headers), 401)["code"] == "unauthorized"
