from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"  # every attempt failed


class WebhookDelivery(Base):
    """The outbox: one row per webhook to send, written in the transaction that ends the job,
    so a job never reaches a final status without its webhook on the way (app/webhooks/)."""

    __tablename__ = "webhook_deliveries"
    # The delivery loop's claim: the pending rows that are due, oldest first.
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the event's id, evt_...
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(40))  # job.succeeded, job.failed, job.cancelled
    url: Mapped[str] = mapped_column(Text)
    # The exact bytes signed and sent, the same on every attempt.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    def __repr__(self) -> str:  # never the payload
        return f"WebhookDelivery({self.id!r}, {self.type!r}, {self.status!r})"
