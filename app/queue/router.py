from fastapi import APIRouter

from app.deps import CallerDep, SessionDep
from app.queue import service
from app.queue.schemas import QueueOut

router = APIRouter(tags=["queue"])


@router.get("/queue", response_model=QueueOut)
def get_queue(session: SessionDep, caller: CallerDep) -> QueueOut:
    return service.snapshot(session, caller.team_id)
