from typing import Annotated

from fastapi import APIRouter, Query

from app.config import get_settings
from app.deps import CallerDep, SessionDep
from app.queue import service
from app.queue.schemas import QueueOut

router = APIRouter(tags=["queue"])


@router.get("/queue", response_model=QueueOut)
def get_queue(
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Queued jobs to list.")] = 100,
) -> QueueOut:
    """Workers, running jobs, the first ``limit`` queued jobs in dispatch order, and every
    team's counts; job details of the caller's team only, other teams' names only for the admin
    key or where the operator allows it."""
    all_names = caller.is_admin or get_settings().queue_shows_team_names
    return service.snapshot(session, caller.team_id, limit, all_names=all_names)
