"""Database engine and session scope. The request or task scope commits; nobody else does."""

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from app.config import get_settings

log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and pick the driver we ship (psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it would add a round trip to every request. A connection that a database
    # restart broke fails one request, and SQLAlchemy then invalidates the whole pool.
    return create_engine(url, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; busy_timeout waits instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@lru_cache
def _read_session_factory() -> sessionmaker[Session]:
    # Autocommit: a read needs no BEGIN and COMMIT round trips around its statements.
    engine = get_engine().execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def read_scope() -> Iterator[Session]:
    """A session for reading only: each statement sees the latest committed data."""
    session = _read_session_factory()()
    try:
        yield session
    finally:
        session.close()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commits on success, then runs what was to follow the commit (see
    ``after_commit``); rolls back on error, and then also removes the objects the work stored for
    rows that will never exist (see ``discard_on_rollback``)."""
    session = _session_factory()()
    try:
        yield session
        session.commit()
        follow = session.info.pop(_AFTER_COMMIT, [])
    except BaseException:
        session.rollback()
        _run_all(session.info.pop(_DISCARD, []), "discard an object of a rolled-back row")
        raise
    finally:
        session.close()
    _run_all(follow, "run what follows a commit")


_DISCARD = "discard_on_rollback"
_AFTER_COMMIT = "after_commit"


def discard_on_rollback(session: Session, discard: Callable[[], object]) -> None:
    """Call ``discard`` (say, the store's delete of an object) if this unit of work rolls back:
    no stored object without its row."""
    session.info.setdefault(_DISCARD, []).append(discard)


def after_commit(session: Session, then: Callable[[], object]) -> None:
    """Call ``then`` once this unit of work has committed (never if it rolls back), with the
    session closed: work that must see what this one wrote, such as a scheduling pass."""
    session.info.setdefault(_AFTER_COMMIT, []).append(then)


def _run_all(calls: list[Callable[[], object]], what: str) -> None:
    for call in calls:
        try:
            call()
        except Exception:  # the unit of work is over; the error to raise, if any, is its own
            log.warning("could not %s", what, exc_info=True)


def is_postgres(url: str) -> bool:
    return make_url(normalize_url(url)).get_backend_name() == "postgresql"


@asynccontextmanager
async def hot_read_pool(url: str) -> AsyncIterator[AsyncConnectionPool | None]:
    """On PostgreSQL, async connections for the reads every request makes (the key check, the
    job poll), in plain SQL: through SQLAlchemy they cost several times a bare request's Python
    time, measured in docs/benchmarks.md. None on SQLite, where the ORM path serves."""
    if not is_postgres(url):
        yield None
        return
    conninfo = make_url(normalize_url(url)).set(drivername="postgresql")
    pool = AsyncConnectionPool(
        conninfo.render_as_string(hide_password=False),
        min_size=1,
        max_size=10,
        kwargs={"autocommit": True, "row_factory": dict_row},
        open=False,
    )
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: the request's unit of work, which commits once the route returns and
    then runs what follows the commit (a submit's scheduling pass); reads for GET, HEAD and
    OPTIONS."""
    with read_scope() if request.method in READ_METHODS else session_scope() as session:
        yield session
