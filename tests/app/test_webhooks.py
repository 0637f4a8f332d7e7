"""Webhooks without a worker: the documented receiver code (docs/operations.md) against what
the sender signs, and the spec's ``webhook_url``; tests/integration/test_operations.py delivers."""

import json
import time
from datetime import timedelta
from typing import Any

import pytest

from app.config import get_settings
from app.db import read_scope, session_scope
from app.ids import new_id
from app.jobs import service as jobs
from app.models import Job, JobStatus
from app.models.base import utcnow
from app.queue import scheduler
from app.webhooks import repository
from app.webhooks.signing import new_secret, signature
from tests.conftest import Client, make_team
from tests.helpers.api import error_of
from tests.helpers.webhooks import documented_verify

verify = documented_verify()
BODY = b'{"id":"evt_1","type":"job.succeeded","data":{"id":"job_1"}}'


def test_a_signature_verifies() -> None:
    secret = new_secret()
    assert verify(secret, signature(secret, int(time.time()), BODY), BODY)


def test_a_tampered_body_a_wrong_secret_or_an_old_timestamp_do_not() -> None:
    secret, now = new_secret(), int(time.time())
    header = signature(secret, now, BODY)
    assert not verify(secret, header, BODY.replace(b"succeeded", b"failed"))
    assert not verify(new_secret(), header, BODY)
    assert not verify(secret, signature(secret, now - 3600, BODY), BODY)
    assert not verify(secret, header.replace(f"t={now}", f"t={now + 1}"), BODY)
    assert not verify(secret, "garbage", BODY)


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "not a url", "/relative/hook"])
def test_a_webhook_url_must_be_http_or_https(team: Client, url: str) -> None:
    spec = {
        "teacher": {"file_id": "file_x"},
        "data": {"train_file_id": "file_y"},
        "webhook_url": url,
    }
    error = error_of(team.post("/v1/jobs", json=spec), 422)
    assert error["code"] == "invalid_request" and error["param"] == "webhook_url"


def _job(team_id: str, **columns: Any) -> str:
    job_id = new_id("job")
    with session_scope() as session:
        session.add(
            Job(id=job_id, team_id=team_id, spec={"webhook_url": DEAD_URL}, teacher_file_id="f",
                train_file_id="d", **columns)
        )  # fmt: skip
    return job_id


DEAD_URL = "http://127.0.0.1:9/hook"  # the discard port: nothing answers


def test_a_job_failed_by_the_scheduler_for_a_lost_worker_gets_its_webhook(admin: Client) -> None:
    team = make_team(admin)
    lost = utcnow() - timedelta(seconds=5)
    job_id = _job(
        team.team_id, status=JobStatus.running, worker_id="gone:1", started_at=lost,
        lease_expires_at=lost, attempts=get_settings().max_attempts,
    )  # fmt: skip
    scheduler.run_pass()
    with read_scope() as session:
        [delivery] = repository.deliveries_of_job(session, job_id)
    body = json.loads(delivery.payload)
    assert delivery.type == body["type"] == "job.failed" and delivery.url == DEAD_URL
    assert body["data"]["id"] == job_id and body["data"]["error"]["code"] == "worker_lost"


def test_a_final_status_rolled_back_sends_nothing(admin: Client) -> None:
    team = make_team(admin)
    job_id = _job(team.team_id, status=JobStatus.queued)
    with pytest.raises(RuntimeError), session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        jobs.finish(session, job, JobStatus.cancelled, message="Job cancelled while queued.")
        session.flush()
        raise RuntimeError("the commit failed")
    with read_scope() as session:
        assert repository.deliveries_of_job(session, job_id) == []
        assert session.get(Job, job_id).status == "queued"


def test_claims_skip_locked_rows_and_a_lost_claim_comes_back(tmp_path: Any) -> None:
    """On a database of its own (no delivery thread reads it): two processes claiming at once
    get different deliveries, and one claimed by a process that died is due again after its
    lease."""
    from sqlalchemy import text
    from sqlalchemy.orm import sessionmaker

    from app.db import make_engine
    from app.models import Team, WebhookDelivery
    from tests.conftest import throwaway_database

    with throwaway_database() as url:
        engine = make_engine(url)
        sessions = sessionmaker(bind=engine, expire_on_commit=False)
        now = utcnow()
        with sessions.begin() as session:
            session.add(Team(id="team_claims", name="claims"))
            session.flush()  # no relationship tells the unit of work the team comes first
            session.add(Job(id="job_claims", team_id="team_claims", spec={},
                            teacher_file_id="f", train_file_id="d"))  # fmt: skip
            session.flush()
            for n in range(2):
                session.add(
                    WebhookDelivery(id=f"evt_{n}", job_id="job_claims", team_id="team_claims",
                                    type="job.succeeded", url=DEAD_URL, payload="{}",
                                    next_attempt_at=now - timedelta(seconds=2 - n))
                )  # fmt: skip
        with sessions.begin() as first, sessions.begin() as second:
            a = repository.claim_due(first, now)
            # While the first holds its row. A claim that waited for it would fail here, not hang.
            second.execute(text("SET LOCAL lock_timeout = '5s'"))
            b = repository.claim_due(second, now)
            assert a is not None and b is not None and {a.id, b.id} == {"evt_0", "evt_1"}
            a.next_attempt_at = b.next_attempt_at = now + timedelta(seconds=35)  # the lease
        with sessions.begin() as session:
            assert repository.claim_due(session, now) is None  # both are out
            back = repository.claim_due(session, now + timedelta(seconds=36))
            assert back is not None and back.id == "evt_0"  # its sender never came back
        engine.dispose()
