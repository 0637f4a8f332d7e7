"""HTTP latency by method, route template and status: a small ASGI middleware.

Counted in this process's memory, so each API process is scraped on its own (docs/operations.md,
"Metrics"). The route is the template (``/v1/jobs/{job_id}``), never the raw path: ids would make
a series per job.
"""

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_SECONDS = Histogram(
    "distill_http_request_duration_seconds",
    "Time to answer an HTTP request, its body included (a whole event stream for SSE).",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
UNMATCHED = "unmatched"  # a path no route serves: one series for them all


class HttpMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app fails before it answers
        start = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            REQUEST_SECONDS.labels(scope["method"], route_template(scope), str(status)).observe(
                time.perf_counter() - start
            )


def route_template(scope: Scope) -> str:
    """The matched route's template with its router's prefix. FastAPI leaves the route's own
    path in the scope (``/jobs/{job_id}``); the prefix is the request path's leading segments
    before as many segments as the route's path has."""
    local = getattr(scope.get("route"), "path_format", None)
    if not local:
        return UNMATCHED
    segments = scope["path"].split("/")
    n = local.count("/")
    return "/".join(segments[:-n]) + local if len(segments) > n else local
