from fastapi import APIRouter, BackgroundTasks, Response

from app.deps import AdminDep, SessionDep
from app.errors import error_responses
from app.models import Team
from app.pagination import After, Limit, ListPage, to_page
from app.queue import scheduler
from app.teams import repository, service
from app.teams.schemas import KeyCreate, KeyOut, TeamCreate, TeamOut, TeamUpdate

router = APIRouter(tags=["teams"], responses=error_responses(403))


@router.post("/teams", status_code=201, response_model=TeamOut, responses=error_responses(409))
def create_team(body: TeamCreate, session: SessionDep, _: AdminDep) -> Team:
    return service.create_team(session, body)


@router.get("/teams", response_model=ListPage[TeamOut])
def list_teams(
    session: SessionDep, _: AdminDep, limit: Limit = 20, after: After = None
) -> ListPage[TeamOut]:
    rows, has_more = repository.list_teams(session, limit=limit, after=after)
    return to_page(rows, has_more, TeamOut.model_validate)


@router.patch("/teams/{team_id}", response_model=TeamOut, responses=error_responses(404))
def update_team(
    team_id: str, body: TeamUpdate, session: SessionDep, _: AdminDep, after: BackgroundTasks
) -> Team:
    """Change a team's quota or fair-share weight; the queue follows at once."""
    team = service.update_team(session, team_id, body)
    after.add_task(scheduler.try_pass)  # after the commit: a raised quota may free a slot
    return team


@router.post(
    "/teams/{team_id}/keys", status_code=201, response_model=KeyOut, responses=error_responses(404)
)
def create_key(team_id: str, body: KeyCreate, session: SessionDep, _: AdminDep) -> KeyOut:
    return service.create_key(session, team_id, body)


@router.delete("/keys/{key_id}", status_code=204, responses=error_responses(404))
def revoke_key(key_id: str, session: SessionDep, _: AdminDep) -> Response:
    service.revoke_key(session, key_id)
    return Response(status_code=204)
