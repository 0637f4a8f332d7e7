from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ApiKey, Team
from app.pagination import page


def get_team(session: Session, team_id: str) -> Team | None:
    return session.get(Team, team_id)


def get_team_by_name(session: Session, name: str) -> Team | None:
    return session.scalar(select(Team).where(Team.name == name))


def list_teams(session: Session, *, limit: int, after: str | None) -> tuple[Sequence[Team], bool]:
    return page(session, select(Team), Team.id, limit=limit, after=after)


def team_for_key(session: Session, key_hash: str) -> str | None:
    """The team of a live (unrevoked) key."""
    return session.scalar(
        select(ApiKey.team_id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )


async def team_for_key_sql(conn: AsyncConnection[Any], key_hash: str) -> str | None:
    """``team_for_key`` in plain SQL, for the hot path (``app.db.hot_read_pool``)."""
    cursor = await conn.execute(
        "SELECT team_id FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (key_hash,)
    )
    row = await cursor.fetchone()
    return None if row is None else str(row["team_id"])


def get_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)
