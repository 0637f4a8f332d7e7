"""Webhooks without a worker: the documented receiver code (docs/operations.md) against what
the sender signs, and the spec's ``webhook_url``; tests/integration/test_operations.py delivers."""

import time

import pytest

from app.webhooks.signing import new_secret, signature
from tests.conftest import Client
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
