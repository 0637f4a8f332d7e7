"""The unit of work: a rollback also removes the objects stored for rows that will never exist
(tests/app/test_storage.py does the same on both stores)."""

from pathlib import Path

import pytest
from sqlalchemy import inspect as sa_inspect

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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_build_the_schema_the_models_describe(backend: str, tmp_path: Path) -> None:
    """The embedded default (SQLite) and PostgreSQL both migrate to head, and what they build
    is what the models say, the webhook outbox and team secrets (0003) included."""
    from contextlib import ExitStack

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.db import make_engine
    from app.models import Base
    from migrations import upgrade
    from tests.conftest import throwaway_database

    with ExitStack() as stack:
        if backend == "postgresql":
            url = stack.enter_context(throwaway_database())
        else:
            url = f"sqlite:///{tmp_path / 'distill.db'}"
            upgrade(url)
        engine = make_engine(url)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            tables = set(sa_inspect(conn).get_table_names())
        engine.dispose()
    assert "webhook_deliveries" in tables
    if backend == "sqlite":  # older approximations there (expression indexes, FLOAT): ours only
        diffs = [d for d in diffs if "webhook" in repr(d)]
    assert diffs == []
