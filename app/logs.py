"""Logging, set up in one place for the API and the workers: plain text for people, or one JSON
object per line for a log pipeline (``DISTILL_LOG_FORMAT``), at ``DISTILL_LOG_LEVEL``.

Every line logged while a job is in hand carries its ``job_id`` and ``team_id``, whichever module
logs it: the worker's runner and the jobs routes set them in a ``contextvars`` context
(``job_context``, ``bind_job``), and a filter on the one handler copies them onto each record.
"""

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from app.config import get_settings

_job_id: ContextVar[str | None] = ContextVar("distill_job_id", default=None)
_team_id: ContextVar[str | None] = ContextVar("distill_team_id", default=None)

# Loggers that bring handlers of their own: theirs go, so each line is written once, by ours.
OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"


@contextmanager
def job_context(job_id: str, team_id: str | None = None) -> Iterator[None]:
    """Lines logged in this block, in this thread or task, concern this job."""
    tokens = _job_id.set(job_id), _team_id.set(team_id)
    try:
        yield
    finally:
        _job_id.reset(tokens[0])
        _team_id.reset(tokens[1])


def bind_job(job_id: str, team_id: str | None = None) -> None:
    """``job_context`` to the end of the current context: a request's, which ends with it."""
    _job_id.set(job_id)
    _team_id.set(team_id)


def current_job() -> tuple[str | None, str | None]:
    return _job_id.get(), _team_id.get()


class JobContextFilter(logging.Filter):
    """Copies the job in hand onto each record, unless the record names one itself
    (``log.info(..., extra={"job_id": ...})``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        if getattr(record, "team_id", None) is None:
            record.team_id = _team_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "team_id"):
            if (value := getattr(record, key, None)) is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        ids = [getattr(record, key, None) for key in ("job_id", "team_id")]
        record.context = "".join(f" {i}" for i in ids if i)
        return super().format(record)


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler


def configure(level: str | int | None = None) -> None:
    """Route every logger through one handler on the root logger, in the configured format.
    Idempotent: a second call replaces the first's handler."""
    settings = get_settings()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(make_handler(settings.log_format))
    root.setLevel(level or settings.log_level)
    for name in OWN_HANDLERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
