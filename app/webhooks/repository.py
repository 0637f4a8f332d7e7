"""Every query on webhook deliveries and the teams' signing secrets."""

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import DeliveryStatus, Team, WebhookDelivery


def add_delivery(session: Session, delivery: WebhookDelivery) -> None:
    session.add(delivery)


def claim_due(
    session: Session, now: datetime, skip_teams: Collection[str] = ()
) -> WebhookDelivery | None:
    """The pending delivery that has waited longest past its time, of a team not in
    ``skip_teams``, locked; one another process holds is skipped (PostgreSQL; SQLite's write lock
    serialises claims anyway)."""
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.status == DeliveryStatus.pending,
        WebhookDelivery.next_attempt_at <= now,
    )
    if skip_teams:
        stmt = stmt.where(WebhookDelivery.team_id.not_in(skip_teams))
    return session.scalar(
        stmt.order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


def get_for_update(session: Session, delivery_id: str) -> WebhookDelivery | None:
    return session.scalar(
        select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update()
    )


def deliveries_of_job(session: Session, job_id: str) -> list[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
    return list(session.scalars(stmt.order_by(WebhookDelivery.id)))


def team_secret(session: Session, team_id: str) -> str | None:
    return session.scalar(select(Team.webhook_secret).where(Team.id == team_id))


def set_secret(session: Session, team_id: str, secret: str, *, only_if_unset: bool) -> None:
    stmt = update(Team).where(Team.id == team_id).values(webhook_secret=secret)
    if only_if_unset:  # two first needs at once: one secret wins, both read it
        stmt = stmt.where(Team.webhook_secret.is_(None))
    session.execute(stmt.execution_options(synchronize_session=False))
