from collections.abc import Sequence

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


def get_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)
