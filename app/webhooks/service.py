"""Webhook decisions: what is sent when a job ends, how each attempt is recorded, and the teams'
signing secrets. Sending itself is ``app.webhooks.delivery``'s."""

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.config import get_settings
from app.ids import new_id
from app.jobs import repository as jobs
from app.models import DeliveryStatus, WebhookDelivery
from app.models.base import utcnow
from app.webhooks import repository
from app.webhooks.signing import new_secret


def enqueue(session: Session, job_id: str, team_id: str, url: str, job: dict[str, Any]) -> None:
    """Put the job's final status in the outbox, in the caller's transaction: the one that sets
    it, so that the status and its webhook are written together or not at all."""
    event_id, now = new_id("evt"), utcnow()
    event = {
        "id": event_id,
        "type": f"job.{job['status']}",
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "data": job,
    }
    repository.add_delivery(
        session,
        WebhookDelivery(
            id=event_id,
            job_id=job_id,
            team_id=team_id,
            type=event["type"],
            url=url,
            payload=json.dumps(event, separators=(",", ":"), sort_keys=True),
            status=DeliveryStatus.pending,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        ),
    )


def secret(session: Session, team_id: str) -> str:
    """The team's signing secret, made on first need. Writes: run it in a unit of work."""
    if (existing := repository.team_secret(session, team_id)) is not None:
        return existing
    repository.set_secret(session, team_id, new_secret(), only_if_unset=True)
    made = repository.team_secret(session, team_id)
    assert made is not None
    return made


def rotate(session: Session, team_id: str) -> str:
    """A new secret, in force for every delivery from now on, retries of earlier ones included."""
    repository.set_secret(session, team_id, new_secret(), only_if_unset=False)
    return secret(session, team_id)


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failure: the base, doubled each time, capped."""
    settings = get_settings()
    seconds = settings.webhook_backoff_seconds * 2 ** (attempts - 1)
    return timedelta(seconds=min(seconds, settings.webhook_max_backoff_seconds))


def record_attempt(
    session: Session,
    delivery: WebhookDelivery,
    error: str | None,
    now: datetime,
    detail: str | None = None,
) -> None:
    """One attempt's outcome, on the delivery and as an event of its job. ``error`` None: the
    receiver answered 2xx. ``error`` is what the team sees, so it never tells what an address
    answered or how a connection failed (that would map the network); ``detail``, for the
    operator, goes in ``last_error``."""
    delivery.attempts += 1
    n = delivery.attempts
    delivery.last_error = detail or error
    if error is None:
        delivery.status, delivery.delivered_at = DeliveryStatus.delivered, now
        message, level = f"Webhook delivered ({delivery.type}, attempt {n}).", "info"
    elif n >= get_settings().webhook_max_attempts:
        delivery.status = DeliveryStatus.failed
        message = f"Webhook attempt {n} failed: {error}. Giving up after {n} attempts."
        level = "error"
    else:
        wait = backoff(n)
        delivery.next_attempt_at = now + wait
        message = (
            f"Webhook attempt {n} failed: {error}. Trying again in {wait.total_seconds():g} s."
        )
        level = "warning"
    data = {"webhook": {"id": delivery.id, "type": delivery.type, "attempt": n, "error": error}}
    jobs.add_event(session, delivery.job_id, "log", message, level=level, data=data)
