"""Steps every integration test takes through the public API."""

import json
from pathlib import Path
from typing import Any

from tests.conftest import Client

FINAL = {"succeeded", "failed", "cancelled"}


def upload(client: Client, path: Path, purpose: str) -> dict[str, Any]:
    with path.open("rb") as f:
        response = client.post(
            "/v1/files", files={"file": (path.name, f)}, data={"purpose": purpose}
        )
    assert response.status_code == 201, response.text
    return response.json()


def submit(client: Client, spec: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=spec, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def events_until(
    client: Client, job_id: str, status: str | None = None, timeout: float = 240
) -> list[dict[str, Any]]:
    """The job's events from its live Server-Sent Events stream, up to the status event
    ``status`` (or, with None, until the stream closes after the final status)."""
    events: list[dict[str, Any]] = []
    headers = {"Accept": "text/event-stream"}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            events.append(event)
            if event["type"] == "status" and (event["data"] or {}).get("status") == status:
                break
    return events


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["status"] for e in events if e["type"] == "status"]


def run_to_end(client: Client, job_id: str) -> dict[str, Any]:
    """Follow the job's live events to its final status, then return the job."""
    events_until(client, job_id)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] in FINAL, job
    return job


def spec(teacher_id: str, train_id: str, validation_id: str | None = None, **over: Any) -> dict:
    body: dict[str, Any] = {
        "teacher": {"file_id": teacher_id},
        "student": {"arch": "mlp", "hidden_sizes": [64]},
        "data": {"train_file_id": train_id, "validation_file_id": validation_id},
        "hyperparameters": {"epochs": 2},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body
