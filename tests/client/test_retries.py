"""Retries through a real proxy that misbehaves once in front of the real server."""

import pytest

from distillery import APIConnectionError, Client, ServiceUnavailableError
from tests.client.conftest import SMALL_JOB, Digits, new_team
from tests.client.proxy import FaultyProxy


@pytest.fixture
def via_proxy(admin: Client, proxy: FaultyProxy) -> Client:
    """A paused team's client that talks through the proxy (its jobs stay queued)."""
    return Client(proxy.url, new_team(admin, max_running_jobs=0)[1], max_retries=2)


def test_a_submit_whose_answer_is_lost_makes_one_job(
    via_proxy: Client, proxy: FaultyProxy, digits: Digits
) -> None:
    teacher = via_proxy.files.upload(digits.teacher, "teacher")
    train = via_proxy.files.upload(digits.train, "dataset")
    spec = {"teacher": {"file_id": teacher.id}, "data": {"train_file_id": train.id}, **SMALL_JOB}

    proxy.once("POST", "/v1/jobs", "drop_after")  # the server makes the job; the answer is lost
    job = via_proxy.jobs.create(spec)

    posts = proxy.requests("POST", "/v1/jobs")
    assert len(posts) == 2, "retried once"
    keys = {p.headers["idempotency-key"] for p in posts}
    assert len(keys) == 1, "the retry carried the same Idempotency-Key"
    assert posts[1].status == 200, "the server replayed the job the first attempt made"
    assert [j.id for j in via_proxy.jobs.list()] == [job.id]

    # A second call is a new submission: a new key, a second job.
    second = via_proxy.jobs.create(spec)
    assert second.id != job.id and len(list(via_proxy.jobs.list())) == 2


def test_reads_are_retried_on_503_and_uploads_on_a_dropped_connection(
    via_proxy: Client, proxy: FaultyProxy, digits: Digits
) -> None:
    proxy.once("POST", "/v1/files", "drop_before")
    teacher = via_proxy.files.upload(digits.teacher, "teacher")  # the file is sent again
    assert len(proxy.requests("POST", "/v1/files")) == 2
    assert [f.id for f in via_proxy.files.list()] == [teacher.id]

    proxy.once("GET", f"/v1/files/{teacher.id}", "status", status=503)
    proxy.once("GET", f"/v1/files/{teacher.id}", "status", status=429)
    assert via_proxy.files.get(teacher.id) == teacher
    assert [s.status for s in proxy.requests("GET", f"/v1/files/{teacher.id}")] == [503, 429, 200]


def test_a_cancel_that_may_have_happened_is_not_repeated(
    via_proxy: Client, proxy: FaultyProxy, digits: Digits
) -> None:
    job = via_proxy.jobs.create(
        {"teacher": {"path": str(digits.teacher)}, "data": {"train_path": str(digits.train)}}
    )
    proxy.once("POST", f"/v1/jobs/{job.id}/cancel", "drop_after")
    with pytest.raises(APIConnectionError):
        via_proxy.jobs.cancel(job.id)
    assert len(proxy.requests("POST", f"/v1/jobs/{job.id}/cancel")) == 1
    assert via_proxy.jobs.get(job.id).status == "cancelled"  # the first attempt did it


def test_retries_give_up_with_the_servers_answer(via_proxy: Client, proxy: FaultyProxy) -> None:
    for _ in range(3):  # max_retries=2: three attempts, all refused
        proxy.once("GET", "/v1/queue", "status", status=503)
    with pytest.raises(ServiceUnavailableError) as raised:
        via_proxy.queue()
    assert raised.value.status_code == 503
    assert str(raised.value) == "Injected."
    assert len(proxy.requests("GET", "/v1/queue")) == 3
