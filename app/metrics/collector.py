"""What the database knows, read at scrape time: jobs, the queue, durations, workers, GPU use.

Read from the database at each scrape rather than counted in one process, so that every API
process answers the same numbers whichever process started, ran or ended a job. One scrape is seven
small indexed queries (``app.metrics.repository`` and ``app.queue.repository``).
"""

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import read_scope
from app.metrics import repository
from app.models import DeliveryStatus, JobStatus
from app.models.base import utcnow
from app.queue import repository as queue
from app.queue.scheduler import USAGE_WINDOW, gpu_seconds

log = logging.getLogger(__name__)

# Seconds: from a few seconds (a tiny job, an idle queue) to a day (a long GPU job).
BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
FINAL = [s.value for s in JobStatus if s.is_final]


def histogram(values: Sequence[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets (with +Inf) and the sum, as ``HistogramMetricFamily`` takes them."""
    buckets = [(str(float(b)), float(sum(v <= b for v in values))) for b in BUCKETS]
    return [*buckets, ("+Inf", float(len(values)))], float(sum(values))


class DatabaseCollector(Collector):
    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration, which must not query the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "distill_database_up", "1 if this scrape could read the database, else 0."
        )
        try:
            with read_scope() as session:
                metrics = list(self._read(session, utcnow()))
        except Exception:
            log.warning("metrics: the database could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self, session: Session, now: datetime) -> Iterator[Metric]:
        teams = queue.team_rows(session)
        names = {row.id: row.name for row in teams}
        yield from self._jobs(session, names)
        yield from self._queue(session, teams, now)
        runs = repository.runs_since(session, now - USAGE_WINDOW)
        yield from self._runs(runs, names, now)
        yield from self._workers(session, now)
        yield self._webhooks(session)

    def _jobs(self, session: Session, names: dict[str, str]) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "distill_jobs",
            "Jobs by team and status, all time.",
            labels=["team_id", "team", "status"],
        )
        counts = {(team_id, status): n for team_id, status, n in repository.job_counts(session)}
        for team_id, name in names.items():
            for status in JobStatus:
                jobs.add_metric([team_id, name, status.value], counts.get((team_id, status), 0))
        yield jobs

    def _queue(self, session: Session, teams: Sequence[Any], now: datetime) -> Iterator[Metric]:
        labels = ["team_id", "team"]
        depth = GaugeMetricFamily(
            "distill_queue_depth",
            "Queued jobs per team, handed to the broker or not.",
            labels=labels,
        )
        oldest = GaugeMetricFamily(
            "distill_queue_oldest_job_age_seconds",
            "Age of each team's oldest queued job; 0 with none queued.",
            labels=labels,
        )
        created = dict(repository.oldest_queued(session))
        for row in teams:
            depth.add_metric([row.id, row.name], int(row.queued) + int(row.dispatched))
            first = created.get(row.id)
            oldest.add_metric([row.id, row.name], (now - first).total_seconds() if first else 0)
        yield depth
        yield oldest

    def _runs(self, runs: Sequence[Any], names: dict[str, str], now: datetime) -> Iterator[Metric]:
        wait = HistogramMetricFamily(
            "distill_job_queue_wait_seconds",
            "From submission to first start, of the jobs running now or ended in the last 24 h.",
            labels=["team_id", "team"],
        )
        duration = HistogramMetricFamily(
            "distill_job_duration_seconds",
            "From first start to the final status, of the jobs that ended in the last 24 h.",
            labels=["team_id", "team", "status"],
        )
        used = GaugeMetricFamily(
            "distill_team_gpu_seconds_24h",
            "Device-seconds (GPU-seconds on GPU workers) each team's jobs used in the last 24 h "
            "(undecayed; a job on N devices counts N a second).",
            labels=["team_id", "team"],
        )
        waits: dict[str, list[float]] = {t: [] for t in names}
        durations: dict[tuple[str, str], list[float]] = {(t, s): [] for t in names for s in FINAL}
        for team_id, status, created_at, started_at, finished_at, _ in runs:
            if started_at is None or team_id not in names:
                continue  # cancelled before it ever started
            waits[team_id].append((started_at - created_at).total_seconds())
            if status in FINAL and finished_at is not None:
                durations[(team_id, status)].append((finished_at - started_at).total_seconds())
        spans = [(r.team_id, r.started_at, r.finished_at, r.devices) for r in runs if r.started_at]
        usage = gpu_seconds(spans, now, half_life=None)
        for team_id, name in names.items():
            wait.add_metric([team_id, name], *histogram(waits[team_id]))
            used.add_metric([team_id, name], round(usage.get(team_id, 0.0), 3))
            for status in FINAL:
                duration.add_metric(
                    [team_id, name, status], *histogram(durations[(team_id, status)])
                )
        yield from (wait, duration, used)

    def _workers(self, session: Session, now: datetime) -> Iterator[Metric]:
        offline_after = timedelta(seconds=get_settings().worker_offline_seconds)
        heartbeat = GaugeMetricFamily(
            "distill_worker_heartbeat_age_seconds",
            "Seconds since each worker's last heartbeat.",
            labels=["worker_id", "device"],
        )
        counts = dict.fromkeys(("idle", "busy", "offline"), 0)
        for worker in queue.workers(session):
            age = (now - worker.last_heartbeat).total_seconds()
            heartbeat.add_metric([worker.id, worker.device], age)
            status = "offline" if age > offline_after.total_seconds() else "idle"
            if status == "idle" and worker.job_id:
                status = "busy"
            counts[status] += 1
        workers = GaugeMetricFamily(
            "distill_workers", "Workers by status (as GET /v1/queue shows them).", labels=["status"]
        )
        for status, n in counts.items():
            workers.add_metric([status], n)
        live = counts["idle"] + counts["busy"]
        utilisation = GaugeMetricFamily(
            "distill_worker_utilisation", "Busy workers over live ones; 0 with no live worker."
        )
        utilisation.add_metric([], counts["busy"] / live if live else 0.0)
        yield from (heartbeat, workers, utilisation)

    def _webhooks(self, session: Session) -> Metric:
        deliveries = GaugeMetricFamily(
            "distill_webhook_deliveries",
            "Webhook deliveries by status: pending (not yet, or being retried), delivered, failed.",
            labels=["status"],
        )
        counts = dict(repository.webhook_counts(session))
        for status in DeliveryStatus:
            deliveries.add_metric([status.value], counts.get(status, 0))
        return deliveries
