"""Request dependencies as typed aliases: the database session and who is calling."""

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import get_session
from app.errors import Forbidden, Unauthorized
from app.models import ApiKey
from app.models.team import DEFAULT_TEAM_ID

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


def get_caller(
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    token = _bearer(authorization)
    admin_key = get_settings().admin_key
    if admin_key and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Caller(team_id=DEFAULT_TEAM_ID, is_admin=True)
    team_id = session.scalar(
        select(ApiKey.team_id).where(
            ApiKey.key_hash == hash_key(token), ApiKey.revoked_at.is_(None)
        )
    )
    if team_id is None:
        raise Unauthorized("This API key is unknown or revoked.")
    return Caller(team_id=team_id, is_admin=False)


def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if not caller.is_admin:
        raise Forbidden("Only the admin key can do this.")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
