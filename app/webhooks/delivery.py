"""Sending webhooks from the outbox, in every API process (``DeliveryThread``).

A delivery is claimed in a short transaction that moves its next attempt a lease ahead, so no
other process sends it meanwhile; it is sent with no transaction open; the outcome is recorded in
another. A process that dies mid-send leaves the delivery to be sent again when the lease runs
out: receivers may see a delivery twice (at least once), and tell by its id.

Deliveries are sent by a small pool of threads, a few at a time and at most a couple of one
team's: a delivery is claimed only when a sender is free for it, so its lease starts as it is sent.
Only addresses that ``app.webhooks.targets`` allows are reached.
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx

from app.config import get_settings
from app.db import session_scope
from app.logs import job_context
from app.models.base import utcnow
from app.webhooks import repository, service, targets
from app.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signature

log = logging.getLogger(__name__)

LEASE_MARGIN = timedelta(seconds=30)  # on top of the attempt's timeout
# What a team is told of any attempt that got no answer. One message for a refused address, a
# name that does not resolve, a refused connection and a timeout alike: told apart, they would
# let a team map the network around the API (which hosts exist, which ports are open).
UNREACHABLE = "the receiver could not be reached, or its address is not allowed"


@dataclass(frozen=True)
class Claimed:
    id: str
    job_id: str
    team_id: str
    type: str
    url: str
    payload: bytes
    secret: str


def claim(skip_teams: Collection[str] = ()) -> Claimed | None:
    """The delivery that is due next, of a team not in ``skip_teams``, leased to this process."""
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        delivery = repository.claim_due(session, now, skip_teams)
        if delivery is None:
            return None
        lease = timedelta(seconds=settings.webhook_timeout_seconds) + LEASE_MARGIN
        delivery.next_attempt_at = now + lease
        return Claimed(
            delivery.id, delivery.job_id, delivery.team_id, delivery.type, delivery.url,
            delivery.payload.encode(), service.secret(session, delivery.team_id),
        )  # fmt: skip


@dataclass(frozen=True)
class Failure:
    error: str  # for the team: the job's events
    detail: str  # for the operator: the log and the delivery's last_error
    refused: bool = False  # by the rule on where webhooks may go: worth the operator's notice


def send(claimed: Claimed, client: httpx.Client) -> Failure | None:
    """POST it, signed now; None if the receiver answered 2xx."""
    try:
        targets.check_url(claimed.url)  # again: the outbox may hold rows from before the rule
    except targets.TargetRefused as exc:
        return Failure(f"the webhook URL is not allowed: {exc}", f"refused: {exc}", refused=True)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Distillery-Webhooks/1",
        SIGNATURE_HEADER: signature(claimed.secret, int(time.time()), claimed.payload),
        DELIVERY_HEADER: claimed.id,
        EVENT_HEADER: claimed.type,
    }
    try:  # streamed, and the body never read: a receiver cannot make this process hold it
        with client.stream("POST", claimed.url, content=claimed.payload, headers=headers) as answer:
            code = answer.status_code
    except targets.TargetRefused as exc:
        return Failure(UNREACHABLE, f"refused: {exc}", refused=True)
    except httpx.HTTPError as exc:
        return Failure(UNREACHABLE, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= code < 300:
        return None
    status = f"HTTP {code}"  # an allowed address answered: its status, no more
    return Failure(status, status)


def record(claimed: Claimed, failure: Failure | None) -> None:
    with session_scope() as session:
        delivery = repository.get_for_update(session, claimed.id)
        if delivery is not None:
            error, detail = (failure.error, failure.detail) if failure else (None, None)
            service.record_attempt(session, delivery, error, utcnow(), detail)


def deliver(claimed: Claimed, client: httpx.Client) -> None:
    """Send one claimed delivery and record how it went."""
    with job_context(claimed.job_id, claimed.team_id):
        failure = send(claimed, client)
        if failure is not None:
            log.log(
                logging.WARNING if failure.refused else logging.INFO,
                "webhook %s to %s failed: %s", claimed.id, claimed.url, failure.detail,
            )  # fmt: skip
        record(claimed, failure)


class DeliveryThread(threading.Thread):
    """Claims due deliveries every ``webhook_poll_seconds``, and as soon as a sender is free, and
    hands each to a pool of ``webhook_concurrency`` senders; a team with
    ``webhook_concurrency_per_team`` deliveries under way gets no more until one ends, so its
    slow receivers hold up no other team's."""

    def __init__(self) -> None:
        super().__init__(name="webhooks", daemon=True)
        self.stopping = threading.Event()
        self.freed = threading.Event()  # a send ended: claim again without waiting for the poll
        self.lock = threading.Lock()
        self.under_way: Counter[str] = Counter()  # team id -> deliveries being sent

    def run(self) -> None:
        settings = get_settings()
        with (
            targets.client(settings.webhook_timeout_seconds) as client,
            ThreadPoolExecutor(settings.webhook_concurrency, "webhook") as senders,
        ):
            while not self.stopping.is_set():
                self.freed.clear()
                try:
                    self.dispatch(senders, client)
                except Exception:  # the database is away; the next round retries
                    log.warning("webhook delivery round failed", exc_info=True)
                self.freed.wait(settings.webhook_poll_seconds)
        # Leaving the block waited for the sends under way: each has recorded its outcome.

    def dispatch(self, senders: ThreadPoolExecutor, client: httpx.Client) -> None:
        """Claim and hand out due deliveries while a sender is free for them."""
        while not self.stopping.is_set() and (full := self.full_teams()) is not None:
            if (claimed := claim(full)) is None:
                return
            with self.lock:
                self.under_way[claimed.team_id] += 1
            senders.submit(self.send_one, claimed, client)

    def full_teams(self) -> set[str] | None:
        """The teams at their limit; None when every sender is busy."""
        settings = get_settings()
        with self.lock:
            if self.under_way.total() >= settings.webhook_concurrency:
                return None
            limit = settings.webhook_concurrency_per_team
            return {team for team, n in self.under_way.items() if n >= limit}

    def send_one(self, claimed: Claimed, client: httpx.Client) -> None:
        try:
            deliver(claimed, client)
        except Exception:  # the outcome is not recorded: sent again when its lease runs out
            log.warning("webhook %s: recording the attempt failed", claimed.id, exc_info=True)
        finally:
            with self.lock:
                self.under_way[claimed.team_id] -= 1
                if not self.under_way[claimed.team_id]:
                    del self.under_way[claimed.team_id]
            self.freed.set()

    def stop(self) -> None:
        self.stopping.set()
        self.freed.set()
        self.join(timeout=10)
