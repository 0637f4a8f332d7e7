import secrets

from sqlalchemy.orm import Session

from app.deps import hash_key
from app.errors import Conflict, NotFound
from app.ids import new_id
from app.models import ApiKey, Team
from app.models.base import utcnow
from app.teams import repository
from app.teams.schemas import KeyCreate, KeyOut, TeamCreate, TeamUpdate


def create_team(session: Session, body: TeamCreate) -> Team:
    if repository.get_team_by_name(session, body.name) is not None:
        raise Conflict(
            f"A team named '{body.name}' exists already.", param="name", code="team_exists"
        )
    team = Team(
        id=new_id("team"),
        name=body.name,
        max_running_jobs=body.max_running_jobs,
        max_running_devices=body.max_running_devices,
        weight=body.weight,
    )
    session.add(team)
    session.flush()
    return team


def update_team(session: Session, team_id: str, body: TeamUpdate) -> Team:
    team = repository.get_team(session, team_id)
    if team is None:
        raise NotFound(f"No team {team_id}.", param="team_id")
    if body.max_running_jobs is not None:
        team.max_running_jobs = body.max_running_jobs
    if "max_running_devices" in body.model_fields_set:
        team.max_running_devices = body.max_running_devices
    if body.weight is not None:
        team.weight = body.weight
    session.flush()
    return team


def create_key(session: Session, team_id: str, body: KeyCreate) -> KeyOut:
    if repository.get_team(session, team_id) is None:
        raise NotFound(f"No team {team_id}.", param="team_id")
    secret = "dk_" + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), team_id=team_id, name=body.name, key_hash=hash_key(secret))
    session.add(key)
    session.flush()
    return KeyOut(id=key.id, name=key.name, team_id=team_id, key=secret, created_at=key.created_at)


def revoke_key(session: Session, key_id: str) -> None:
    key = repository.get_key(session, key_id)
    if key is None:
        raise NotFound(f"No API key {key_id}.", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
