"""Request dependencies as typed aliases: the database session and who is calling."""

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import get_session, read_scope
from app.errors import Forbidden, Unauthorized
from app.models.team import DEFAULT_TEAM_ID
from app.teams import repository

# "function" scope: the unit of work commits before the response leaves, so a client that
# reads right after a 201 finds what it created, and a failed commit is answered as an error.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@dataclass(frozen=True)
class Caller:
    team_id: str
    is_admin: bool


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    return token.strip()


async def hot_reads(request: Request) -> AsyncConnectionPool | None:
    """The app's pool for hot reads on PostgreSQL (see ``app.db.hot_read_pool``); None on SQLite.
    Routes take a connection only for their statements, never for a whole upload or stream."""
    return getattr(request.app.state, "hot_reads", None)


HotReadsDep = Annotated[AsyncConnectionPool | None, Depends(hot_reads)]


async def get_caller(request: Request, pool: HotReadsDep) -> Caller:
    """Who is calling. Every request pays this lookup (nothing caches keys, so a revoked key
    answers 401 at once), hence the plain-SQL path where there is one, and the header read
    straight from the request rather than through FastAPI's parameter machinery."""
    token = _bearer(request.headers.get("authorization"))
    admin_key = get_settings().admin_key
    if admin_key and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Caller(team_id=DEFAULT_TEAM_ID, is_admin=True)
    key_hash = hash_key(token)
    if pool is not None:
        async with pool.connection() as conn:
            team_id = await repository.team_for_key_sql(conn, key_hash)
    else:
        team_id = await run_in_threadpool(_team_for_key, key_hash)
    if team_id is None:
        raise Unauthorized("This API key is unknown or revoked.")
    return Caller(team_id=team_id, is_admin=False)


def _team_for_key(key_hash: str) -> str | None:
    with read_scope() as session:
        return repository.team_for_key(session, key_hash)


def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if not caller.is_admin:
        raise Forbidden("Only the admin key can do this.")
    return caller


def metrics_reader(request: Request) -> None:
    """``/metrics``: its series name every team, so it answers the operator only: the metrics
    token (``DISTILL_METRICS_TOKEN``, for Prometheus) or the admin key; never a team key."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    presented = token.strip().encode() if scheme.lower() == "bearer" else b""
    settings = get_settings()
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    allowed = [secret.encode() for secret in (metrics_token, settings.admin_key) if secret]
    if not presented or not any(hmac.compare_digest(presented, s) for s in allowed):
        raise Unauthorized(
            "/metrics needs 'Authorization: Bearer <token>' with the metrics token "
            "(DISTILL_METRICS_TOKEN) or the admin key."
        )


CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
MetricsReaderDep = Annotated[None, Depends(metrics_reader)]
