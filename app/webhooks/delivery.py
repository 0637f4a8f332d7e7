"""Sending webhooks from the outbox, in every API process (``DeliveryThread``).

A delivery is claimed in a short transaction that moves its next attempt a lease ahead, so no
other process sends it meanwhile; it is sent with no transaction open; the outcome is recorded in
another. A process that dies mid-send leaves the delivery to be sent again when the lease runs
out: receivers may see a delivery twice (at least once), and tell by its id.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx

from app.config import get_settings
from app.db import session_scope
from app.logs import job_context
from app.models.base import utcnow
from app.webhooks import repository, service
from app.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signature

log = logging.getLogger(__name__)

LEASE_MARGIN = timedelta(seconds=30)  # on top of the attempt's timeout


@dataclass(frozen=True)
class Claimed:
    id: str
    job_id: str
    team_id: str
    type: str
    url: str
    payload: bytes
    secret: str


def claim() -> Claimed | None:
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        delivery = repository.claim_due(session, now)
        if delivery is None:
            return None
        lease = timedelta(seconds=settings.webhook_timeout_seconds) + LEASE_MARGIN
        delivery.next_attempt_at = now + lease
        return Claimed(
            delivery.id, delivery.job_id, delivery.team_id, delivery.type, delivery.url,
            delivery.payload.encode(), service.secret(session, delivery.team_id),
        )  # fmt: skip


def send(claimed: Claimed, client: httpx.Client) -> str | None:
    """POST it, signed now; None if the receiver answered 2xx, else what went wrong."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Distillery-Webhooks/1",
        SIGNATURE_HEADER: signature(claimed.secret, int(time.time()), claimed.payload),
        DELIVERY_HEADER: claimed.id,
        EVENT_HEADER: claimed.type,
    }
    try:
        response = client.post(claimed.url, content=claimed.payload, headers=headers)
    except httpx.TimeoutException:
        return "timed out"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def record(claimed: Claimed, error: str | None) -> None:
    with session_scope() as session:
        delivery = repository.get_for_update(session, claimed.id)
        if delivery is not None:
            service.record_attempt(session, delivery, error, utcnow())


def deliver_due(stopping: threading.Event | None = None) -> int:
    """Send every delivery that is due, one at a time; returns how many were attempted."""
    if (claimed := claim()) is None:
        return 0  # the usual case: no client to build
    attempted = 0
    timeout = get_settings().webhook_timeout_seconds
    # No redirects: the signed URL is the one the team gave.
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        while claimed is not None:
            with job_context(claimed.job_id, claimed.team_id):
                error = send(claimed, client)
                if error is not None:
                    log.info("webhook %s to %s failed: %s", claimed.id, claimed.url, error)
                record(claimed, error)
            attempted += 1
            claimed = None if stopping and stopping.is_set() else claim()
    return attempted


class DeliveryThread(threading.Thread):
    """Looks for due deliveries every ``webhook_poll_seconds`` until stopped."""

    def __init__(self) -> None:
        super().__init__(name="webhooks", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(get_settings().webhook_poll_seconds):
            try:
                deliver_due(self.stopping)
            except Exception:  # the database is away; the next round retries
                log.warning("webhook delivery round failed", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
