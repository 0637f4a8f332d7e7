"""Operations routes: liveness and readiness, without a key."""

import pytest
from fastapi.testclient import TestClient

from app import broker
from app.config import get_settings
from tests.helpers.api import error_of


def test_healthz(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}


def test_readyz_answers_when_database_and_broker_do(api: TestClient) -> None:
    assert api.get("/readyz").json() == {"status": "ok"}


def test_readyz_names_a_broker_that_does_not_answer(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILL_BROKER_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    broker.producer.cache_clear()
    try:
        response = api.get("/readyz")
        error = error_of(response, 503)
        assert error["code"] == "not_ready"
        assert "broker" in error["message"] and "database" not in error["message"]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        broker.producer.cache_clear()
    assert api.get("/readyz").status_code == 200
