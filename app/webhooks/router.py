from fastapi import APIRouter

from app.db import session_scope
from app.deps import CallerDep, SessionDep
from app.webhooks import service
from app.webhooks.schemas import WebhookSecretOut

router = APIRouter(prefix="/webhook_secret", tags=["webhooks"])


@router.get("", response_model=WebhookSecretOut)
def get_secret(caller: CallerDep) -> WebhookSecretOut:
    """The secret that signs your team's webhooks, made on first need."""
    with session_scope() as session:  # a write the first time, though a GET
        return WebhookSecretOut(
            team_id=caller.team_id, secret=service.secret(session, caller.team_id)
        )


@router.post("/rotate", response_model=WebhookSecretOut)
def rotate_secret(session: SessionDep, caller: CallerDep) -> WebhookSecretOut:
    """A new secret, at once: every delivery from now on, retries included, is signed with it."""
    return WebhookSecretOut(team_id=caller.team_id, secret=service.rotate(session, caller.team_id))
