"""Where the test suite finds PostgreSQL and Redis, a loud failure when it cannot, and a
throwaway database there (for the tests and the benchmarks alike).

The tests never skip for a missing service: a suite that quietly skips is a suite that passes
without testing. ``scripts/test.sh`` starts throwaway servers when the defaults do not answer.
Run this file directly to check them: ``python tests/services.py [postgres] [redis]``.
"""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

DATABASE_URL_VAR = "DISTILL_TEST_DATABASE_URL"
REDIS_URL_VAR = "DISTILL_TEST_REDIS_URL"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
TIMEOUT_S = 3


def database_url() -> str:
    """An admin URL to a PostgreSQL server; the suite creates and drops its own database there."""
    return os.environ.get(DATABASE_URL_VAR) or DEFAULT_DATABASE_URL


def redis_url() -> str:
    return os.environ.get(REDIS_URL_VAR) or DEFAULT_REDIS_URL


def require_postgres(url: str) -> None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise RuntimeError(
            f"PostgreSQL at {url} does not answer ({exc}). Set {DATABASE_URL_VAR} to a server "
            "the tests may create databases on, or run scripts/test.sh, which starts one."
        ) from exc


def require_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(
            f"Redis at {url} does not answer ({exc}). Set {REDIS_URL_VAR} to a Redis 6+ URL, "
            "or run scripts/test.sh, which starts one."
        ) from exc
    finally:
        client.close()


@contextmanager
def throwaway_database(prefix: str = "distill_test") -> Iterator[str]:
    """The URL of a new, migrated PostgreSQL database on the test server; dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    from migrations import upgrade

    server_url = database_url()
    require_postgres(server_url)
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _main(names: list[str]) -> None:
    """``python tests/services.py [postgres] [redis]``: exit 1 with the reason if one is down."""
    checks = {
        "postgres": lambda: require_postgres(database_url()),
        "redis": lambda: require_redis(redis_url()),
    }
    try:
        for name in names or list(checks):
            checks[name]()
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
