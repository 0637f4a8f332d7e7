"""Prometheus metrics (``GET /metrics``): the database's state, read at each scrape
(``collector``), and this process's HTTP latency (``http``)."""

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.responses import Response

from app.metrics.collector import DatabaseCollector
from app.metrics.http import HttpMetrics

REGISTRY.register(DatabaseCollector())


def metrics_response() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


__all__ = ["HttpMetrics", "metrics_response"]
