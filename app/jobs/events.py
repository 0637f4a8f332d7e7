"""Live job events as Server-Sent Events, fed by the events table (no broker broadcast needed)."""

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi.concurrency import run_in_threadpool

from app.db import read_scope
from app.jobs import repository
from app.jobs.schemas import EventOut
from app.models import JobStatus

POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
BATCH = 100


def _fetch(job_id: str, after: str | None) -> tuple[list[EventOut], bool]:
    with read_scope() as session:
        # The status first: a final status read here was committed with its event, so the
        # events read next include it. Read the other way round, a job ending between the two
        # reads closed the stream without its final event.
        status = repository.job_status(session, job_id)
        final = status is None or JobStatus(status).is_final
        rows, _ = repository.list_events(session, job_id, limit=BATCH, after=after)
        events = [EventOut.model_validate(row) for row in rows]
    return events, final


def _is_final_status(event: EventOut) -> bool:
    return (
        event.type == "status"
        and event.data is not None
        and event.data.get("status") in {s.value for s in JobStatus if s.is_final}
    )


def format_sse(event: EventOut) -> str:
    payload = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n"


async def stream(job_id: str, after: str | None) -> AsyncIterator[str]:
    """Every event after ``after``, as it happens, ending after the final status."""
    idle = 0.0
    while True:
        events, final = await run_in_threadpool(_fetch, job_id, after)
        for event in events:
            yield format_sse(event)
            after = event.id
            if _is_final_status(event):
                return
        if final and not events:
            return  # the final status event was sent before ``after``
        if events:
            idle = 0.0
            continue
        await asyncio.sleep(POLL_SECONDS)
        idle += POLL_SECONDS
        if idle >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield ": keep-alive\n\n"
