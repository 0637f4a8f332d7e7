"""Checks on what the API answers, shared by the API and integration tests."""

import re
from typing import Any

from app import storage
from tests.conftest import Client


def upload(team: Client, name: str, content: bytes, purpose: str) -> str:
    """Upload ``content`` as ``name``; the new file's id."""
    response = team.post("/v1/files", files={"file": (name, content)}, data={"purpose": purpose})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The contract's error body, checked whole; returns its ``error`` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}, body
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", body["error"]["code"]), body
    assert body["error"]["message"], body
    return body["error"]


def stored(team: Client) -> tuple[list[str], set[str], list[str]]:
    """The team's file ids, the blobs in storage, and the leftover temporary uploads."""
    listed = team.get("/v1/files", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    files_dir = storage.root() / "files"
    blobs = {p.name for p in files_dir.iterdir()} if files_dir.exists() else set()
    return (
        [f["id"] for f in listed.json()["data"]],
        blobs,
        [p.name for p in storage.uploads_dir().iterdir()],
    )
