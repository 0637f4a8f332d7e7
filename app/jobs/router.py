from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from app import logs, storage
from app.db import read_scope
from app.deps import CallerDep, HotReadsDep, SessionDep
from app.downloads import object_response
from app.errors import NotFound, error_responses
from app.jobs import events, repository, service
from app.jobs.schemas import (
    ArtifactOut,
    EventOut,
    JobOut,
    JobUpdate,
    JobValidation,
    JobWarning,
    MetricPoint,
)
from app.jobs.spec import JobSpec
from app.models import JobStatus
from app.pagination import After, Limit, ListPage, to_page
from app.queue.scheduler import QueueView


async def _job_in_logs(request: Request, caller: CallerDep) -> None:
    """What is logged while serving a request for one job names it (app/logs.py). Async, so
    it is set in the request's own context, which the route's thread copies."""
    if job_id := request.path_params.get("job_id"):
        logs.bind_job(job_id, caller.team_id)


router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(_job_in_logs)])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses={200: {"model": JobOut}, **error_responses(404, 409)},
)
def submit_job(
    spec: JobSpec,
    response: Response,
    session: SessionDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    job, created = service.submit(session, caller.team_id, spec, idempotency_key)
    if not created:
        response.status_code = 200
    return service.render(session, job)


@router.post("/validate", response_model=JobValidation, responses=error_responses(404))
def validate_job(spec: JobSpec, session: SessionDep, caller: CallerDep) -> JobValidation:
    """The checks of a submit, without the job: the spec, its files, and the spec against
    what the files' upload recorded. Answers the spec as a job would run it (its task resolved).
    Nothing is created or queued."""
    resolved, warnings = service.check_inputs(session, caller.team_id, spec)
    return JobValidation(
        spec=resolved.model_dump(mode="json"),
        task=resolved.task,
        warnings=[JobWarning(code=w.code, message=w.message, param=w.param) for w in warnings],
    )


@router.get("", response_model=ListPage[JobOut])
def list_jobs(
    session: SessionDep,
    caller: CallerDep,
    limit: Limit = 20,
    after: After = None,
    status: Annotated[JobStatus | None, Query()] = None,
) -> ListPage[JobOut]:
    rows, has_more = repository.list_jobs(
        session, caller.team_id, limit=limit, after=after, status=status
    )
    queue = QueueView(session)
    return to_page(rows, has_more, lambda job: service.render(session, job, queue))


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
async def get_job(job_id: str, caller: CallerDep, pool: HotReadsDep) -> JobOut | Response:
    # The route clients poll: plain SQL on PostgreSQL, the ORM elsewhere (app.db.hot_read_pool).
    if pool is None:
        return await run_in_threadpool(_get_job, caller.team_id, job_id)
    async with pool.connection() as conn:
        row = await repository.job_sql(conn, caller.team_id, job_id)
    if row is None:
        raise NotFound(f"No job {job_id}.", param="job_id")
    if row["status"] == JobStatus.queued:  # its place needs the scheduler's arithmetic
        return await run_in_threadpool(_get_job, caller.team_id, job_id)
    # Validated once here; a Response keeps FastAPI from validating it a second time.
    return Response(JobOut.model_validate(row).model_dump_json(), media_type="application/json")


def _get_job(team_id: str, job_id: str) -> JobOut:
    with read_scope() as session:
        return service.render(session, service.get(session, team_id, job_id))


@router.patch("/{job_id}", response_model=JobOut, responses=error_responses(404, 409))
def update_job(job_id: str, body: JobUpdate, session: SessionDep, caller: CallerDep) -> JobOut:
    """Change a queued job's priority (the admin may change any team's job)."""
    team_id = None if caller.is_admin else caller.team_id
    job = service.reprioritise(session, team_id, job_id, body.priority)
    return service.render(session, job)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 409))
def cancel_job(job_id: str, session: SessionDep, caller: CallerDep) -> JobOut:
    return service.render(session, service.cancel(session, caller.team_id, job_id))


@router.get(
    "/{job_id}/events",
    response_model=ListPage[EventOut],
    responses={200: {"content": {"text/event-stream": {}}}, **error_responses(404)},
)
def job_events(
    job_id: str,
    session: SessionDep,
    caller: CallerDep,
    limit: Limit = 20,
    after: After = None,
    accept: Annotated[str, Header(include_in_schema=False)] = "",
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ListPage[EventOut] | StreamingResponse:
    job = service.get(session, caller.team_id, job_id)
    if "text/event-stream" in accept:
        return StreamingResponse(
            events.stream(job.id, last_event_id or after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    rows, has_more = repository.list_events(session, job.id, limit=limit, after=after)
    return to_page(rows, has_more, EventOut.model_validate)


@router.get(
    "/{job_id}/metrics", response_model=ListPage[MetricPoint], responses=error_responses(404)
)
def job_metrics(
    job_id: str,
    session: SessionDep,
    caller: CallerDep,
    limit: Limit = 20,
    after: Annotated[
        int | None, Query(ge=0, le=2**31 - 1, description="Cursor: the last step seen.")
    ] = None,
) -> ListPage[MetricPoint]:
    job = service.get(session, caller.team_id, job_id)
    rows, has_more = repository.list_metrics(session, job.id, limit=limit, after=after)
    return to_page(
        rows,
        has_more,
        lambda row: MetricPoint(step=row.step, epoch=row.epoch, **row.values),
    )


@router.get(
    "/{job_id}/artifacts", response_model=ListPage[ArtifactOut], responses=error_responses(404)
)
def list_artifacts(job_id: str, session: SessionDep, caller: CallerDep) -> ListPage[ArtifactOut]:
    job = service.get(session, caller.team_id, job_id)
    rows = repository.list_artifacts(session, job.id)
    return to_page(rows, False, ArtifactOut.model_validate)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial content (Range)."},
        **error_responses(404, 416),
    },
)
def download_artifact(
    job_id: str, name: str, request: Request, session: SessionDep, caller: CallerDep
) -> Response:
    job = service.get(session, caller.team_id, job_id)
    artifact = repository.get_artifact(session, job.id, name)
    if artifact is None:
        raise NotFound(f"Job {job_id} has no artifact '{name}'.", param="name")
    return object_response(
        storage.artifact_key(job.id, artifact.name),
        filename=artifact.name,
        sha256=artifact.sha256,
        size=artifact.bytes,
        request_headers=request.headers,
    )
