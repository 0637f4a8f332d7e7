"""Webhooks without a worker: the documented receiver code (docs/operations.md) against what
the sender signs, and the spec's ``webhook_url``; tests/integration/test_operations.py delivers."""

import json
import socket
import threading
import time
from datetime import timedelta
from ipaddress import IPv4Address
from typing import Any

import pytest

from app.config import get_settings
from app.db import read_scope, session_scope
from app.ids import new_id
from app.jobs import lifecycle
from app.models import Job, JobStatus, WebhookDelivery
from app.models.base import utcnow
from app.queue import scheduler
from app.webhooks import repository, targets
from app.webhooks import service as webhooks
from app.webhooks.delivery import UNREACHABLE, Claimed, Failure, send
from app.webhooks.signing import new_secret, signature
from app.webhooks.targets import GuardedBackend, TargetRefused
from tests.conftest import Client, make_team
from tests.helpers.api import error_of
from tests.helpers.webhooks import documented_verify, receiver

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


def _spec(url: str) -> dict[str, Any]:
    return {
        "teacher": {"file_id": "file_x"},
        "data": {"train_file_id": "file_y"},
        "webhook_url": url,
    }


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "not a url", "/relative/hook"])
def test_a_webhook_url_must_be_http_or_https(team: Client, url: str) -> None:
    error = error_of(team.post("/v1/jobs", json=_spec(url)), 422)
    assert error["code"] == "invalid_request" and error["param"] == "webhook_url"


@pytest.fixture
def no_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's defaults: the tests' loopback receivers are not allowed."""
    monkeypatch.setattr(get_settings(), "webhook_allowed_hosts", ())


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://user:pass@hooks.example.com/hook", "user name or password"),
        ("http://127.0.0.1:8000/hook", "127.0.0.1 is not a public address"),
        ("http://2130706433/hook", "127.0.0.1 is not a public address"),  # the parser reads it so
        ("http://127.1/hook", "127.0.0.1 is not a public address"),
        ("http://[::ffff:127.0.0.1]/hook", "is not a public address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public address"),
        ("http://10.0.0.1/hook", "10.0.0.1 is not a public address"),
        ("http://localhost:8000/hook", "localhost is not allowed"),
    ],
)  # fmt: skip
def test_a_webhook_url_to_a_refused_address_is_refused_on_submit(
    team: Client, no_allow_list: None, url: str, why: str
) -> None:
    error = error_of(team.post("/v1/jobs", json=_spec(url)), 422)
    assert error["code"] == "invalid_request" and error["param"] == "webhook_url"
    assert why in error["message"], error


@pytest.mark.parametrize("url", ["https://hooks.example.com/hook", "http://127.0.0.1:8000/hook"])
def test_a_public_name_or_an_allowed_address_is_taken(team: Client, url: str) -> None:
    error = error_of(team.post("/v1/jobs", json=_spec(url)), 404)  # on to the teacher's file
    assert error["param"] != "webhook_url", error


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
        lifecycle.finish(session, job, JobStatus.cancelled, message="Job cancelled while queued.")
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


def _deliveries(team_id: str, urls: list[str]) -> str:
    """A finished job of the team with one delivery per URL, due in that order; the job's id."""
    job_id = _job(team_id, status=JobStatus.succeeded)
    with session_scope() as session:
        for url in urls:
            webhooks.enqueue(session, job_id, team_id, url, {"id": job_id, "status": "succeeded"})
    return job_id


def _attempted(job_id: str, timeout: float = 30) -> list[WebhookDelivery]:
    """The job's deliveries, once each has been tried."""
    deadline = time.monotonic() + timeout
    while True:
        with read_scope() as session:
            deliveries = repository.deliveries_of_job(session, job_id)
        if all(d.attempts for d in deliveries):
            return deliveries
        assert time.monotonic() < deadline, [(d.url, d.attempts) for d in deliveries]
        time.sleep(0.05)


def _claimed(url: str) -> Claimed:
    return Claimed("evt_test", "job_test", "team_test", "job.succeeded", url, BODY, new_secret())


SPELLINGS = ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "127.1",
             "user:pass@127.0.0.1"]  # fmt: skip
RESOLVED_WHEN_SENT = {"2130706433", "0x7f000001", "127.1"}  # no address until resolved


def test_every_spelling_of_loopback_is_refused_and_the_event_tells_nothing_more(
    team: Client, no_allow_list: None
) -> None:
    with receiver(200) as hook:
        urls = [f"http://{host}:{hook.port}/hook" for host in SPELLINGS]
        job_id = _deliveries(team.team_id, urls)
        deliveries = _attempted(job_id)
        assert hook.received == []  # nothing reached it
    events = team.get(f"/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    errors = {e["data"]["webhook"]["id"]: e["data"]["webhook"]["error"] for e in events
              if (e["data"] or {}).get("webhook")}  # fmt: skip
    for delivery, host in zip(deliveries, SPELLINGS, strict=True):
        error = errors[delivery.id]
        if host in RESOLVED_WHEN_SENT:
            assert error == UNREACHABLE, (host, error)
        else:  # refused for what the URL says, before any connection
            assert error.startswith("the webhook URL is not allowed: "), (host, error)
        assert str(hook.port) not in error and "Errno" not in error and "onnect" not in error
        assert delivery.status == "pending" and "refused" in (delivery.last_error or "")


def test_a_name_that_resolves_to_a_private_address_is_refused_when_connecting(
    no_allow_list: None,
) -> None:
    with pytest.raises(TargetRefused, match=r"localhost resolves to 127\.0\.0\.1"):
        GuardedBackend().connect_tcp("localhost", 9)  # the system's resolver

    def rebinding(host: str, port: int) -> list[IPv4Address]:  # one public address, one not
        return [IPv4Address("93.184.215.14"), IPv4Address("127.0.0.1")]

    with receiver(200) as hook, targets.client(5, rebinding) as client:
        failure = send(_claimed(f"http://hooks.example.com:{hook.port}/hook"), client)
        assert hook.received == []
    assert failure == Failure(UNREACHABLE, failure.detail, refused=True)
    assert "hooks.example.com resolves to 127.0.0.1" in failure.detail


def test_the_allow_list_lets_a_receiver_through_and_the_host_name_is_kept() -> None:
    """Conftest allows 127.0.0.1: a name resolving to it is reached at the address that was
    checked, while the request still names the host."""

    def to_loopback(host: str, port: int) -> list[IPv4Address]:
        assert host == "hooks.example.com"
        return [IPv4Address("127.0.0.1")]

    with receiver(200) as hook, targets.client(5, to_loopback) as client:
        assert send(_claimed(f"http://hooks.example.com:{hook.port}/hook"), client) is None
        [got] = hook.received
    assert got.headers["Host"] == f"hooks.example.com:{hook.port}" and got.body == BODY


def test_a_refused_address_a_closed_port_and_a_timeout_read_alike() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    never = threading.Event()

    def resolver(host: str, port: int) -> list[IPv4Address]:
        internal = host == "db.internal.example.com"
        return [IPv4Address("10.0.0.7")] if internal else targets.resolve(host, port)

    with receiver(hold=never) as slow, targets.client(0.5, resolver) as client:
        failures = [
            send(_claimed(f"http://db.internal.example.com:{slow.port}/hook"), client),
            send(_claimed(f"http://127.0.0.1:{closed}/hook"), client),
            send(_claimed(slow.url), client),
        ]
        never.set()
    assert [f.error for f in failures if f] == [UNREACHABLE] * 3
    assert [f.detail.split(":")[0] for f in failures if f] == [
        "refused", "ConnectError", "ReadTimeout",
    ]  # fmt: skip


def test_one_teams_slow_receivers_do_not_hold_up_another_teams(admin: Client) -> None:
    slow_team, other_team = make_team(admin), make_team(admin)
    release = threading.Event()
    with receiver(hold=release) as slow, receiver(200) as quick:
        with session_scope():  # six of one team's, due before the other team's one
            slow_job = _deliveries(slow_team.team_id, [slow.url] * 6)
            other_job = _deliveries(other_team.team_id, [quick.url])
        quick.wait_for(1)
        held = len(slow.received)
        release.set()
        slow.wait_for(6)
        [other] = _attempted(other_job)
        slow_deliveries = _attempted(slow_job)
    # The other team's arrived while the slow team's first ones were still held, and only as
    # many as a team may have under way had been sent (one at a time, it came after all six).
    assert held <= get_settings().webhook_concurrency_per_team
    assert slow.most_at_once == get_settings().webhook_concurrency_per_team
    assert other.status == "delivered"
    assert [(d.status, d.attempts) for d in slow_deliveries] == [("delivered", 1)] * 6


def test_the_receivers_answer_body_is_not_read() -> None:
    """An answer announcing a gigabyte and sending none of it: the status is enough."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
                conn.recv(1)  # until the client hangs up

        threading.Thread(target=answer, daemon=True).start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        with targets.client(0.5) as client:
            assert send(_claimed(url), client) is None
