"""The unit of work: a rollback also removes the objects stored for rows that will never exist
(tests/app/test_storage.py does the same on both stores)."""

from pathlib import Path

import pytest

from app.db import discard_on_rollback, session_scope


def test_a_rollback_removes_the_blobs_of_the_work(service_env: dict, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    with pytest.raises(RuntimeError), session_scope() as session:
        discard_on_rollback(session, blob.unlink)
        raise RuntimeError("the commit failed")
    assert not blob.exists()


def test_a_commit_keeps_them(service_env: dict, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    with session_scope() as session:
        discard_on_rollback(session, blob.unlink)
    assert blob.exists()
