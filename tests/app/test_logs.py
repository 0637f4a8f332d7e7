"""Structured logs (app/logs.py): the formats, and the job's ids on the API's lines about a job
(tests/integration/test_operations.py checks a real worker's)."""

import io
import json
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from safetensors.numpy import save

from app import logs
from tests.conftest import Client, make_team
from tests.helpers.api import upload


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What the root logger writes, as JSON lines, while the test runs."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _queued_job(team: Client) -> str:
    rng = np.random.default_rng(0)
    teacher = save({
        "hidden.0.weight": rng.normal(size=(8, 4)).astype(np.float32),
        "hidden.0.bias": np.zeros(8, np.float32),
        "out.weight": rng.normal(size=(3, 8)).astype(np.float32),
        "out.bias": np.zeros(3, np.float32),
    })  # fmt: skip
    rows = ["f0,f1,f2,f3,label"] + [f"{i},{i + 1},{i % 3},{i * 2},{i % 3}" for i in range(30)]
    data = ("\n".join(rows) + "\n").encode()
    spec = {
        "teacher": {
            "file_id": upload(team, "teacher.safetensors", teacher, "teacher"),
            "arch": {"arch": "mlp", "hidden_sizes": [8]},
        },
        "data": {"train_file_id": upload(team, "train.csv", data, "dataset")},
    }
    response = team.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_the_apis_lines_about_a_job_carry_its_ids(admin: Client, captured: io.StringIO) -> None:
    team = make_team(admin, max_running_jobs=0)  # its job stays queued
    job_id = _queued_job(team)
    assert team.get(f"/v1/jobs/{job_id}").status_code == 200
    assert team.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    entries = [json.loads(line) for line in captured.getvalue().splitlines() if job_id in line]
    # The test's own HTTP client logs in this process too, and is no part of the API.
    lines = [json.dumps(e) for e in entries if not e["logger"].startswith("httpx")]
    messages = [json.loads(line)["message"] for line in lines]
    assert f"job {job_id} submitted" in messages
    assert f"job {job_id}: cancel requested while queued" in messages
    for line in lines:
        entry = json.loads(line)
        assert entry["job_id"] == job_id and entry["team_id"] == team.team_id, entry
        assert entry["level"] == "INFO" and entry["logger"].startswith("app.")


def test_json_lines_carry_the_context_and_the_exception(captured: io.StringIO) -> None:
    log = logging.getLogger("tests.logs")
    log.info("outside")
    with logs.job_context("job_1", "team_1"):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("inside")
    outside, inside = (json.loads(line) for line in captured.getvalue().splitlines())
    assert "job_id" not in outside and outside["message"] == "outside"
    assert (inside["job_id"], inside["team_id"]) == ("job_1", "team_1")
    assert inside["level"] == "ERROR" and "ValueError: boom" in inside["exception"]
    assert logs.current_job() == (None, None)  # the block's context is gone with it


def test_text_lines_name_the_job_too() -> None:
    stream = io.StringIO()
    handler = logs.make_handler("text", stream)
    record = logging.LogRecord("tests.logs", logging.INFO, __file__, 1, "hello", None, None)
    with logs.job_context("job_2", "team_2"):
        handler.handle(record)
    assert stream.getvalue().rstrip().endswith("INFO tests.logs job_2 team_2: hello")
