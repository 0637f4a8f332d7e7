"""The ASGI app: ``app.main:app``."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from app import broker
from app.config import get_settings
from app.dashboard.router import router as dashboard_router
from app.db import get_engine, hot_read_pool
from app.deps import MetricsReaderDep
from app.errors import ERROR_DESCRIPTIONS, ErrorBody, error_body, install_handlers
from app.files.router import router as files_router
from app.jobs.router import router as jobs_router
from app.metrics import HttpMetrics, metrics_response
from app.queue.router import router as queue_router
from app.queue.scheduler import SchedulerThread
from app.storage.uploads import remove_left_behind
from app.teams.router import router as teams_router
from app.webhooks.delivery import DeliveryThread
from app.webhooks.router import router as webhooks_router

ops = APIRouter(tags=["operations"])


@ops.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get(
    "/readyz",
    responses={
        503: {"model": ErrorBody, "description": "A dependency does not answer (not_ready)."}
    },
)
def readyz() -> JSONResponse:
    failing = []
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        failing.append("database")
    try:
        broker.ping()
    except Exception:
        failing.append("broker")
    if failing:
        message = f"Not ready: the {' and the '.join(failing)} did not answer."
        return JSONResponse(error_body("not_ready", message), status_code=503)
    return JSONResponse({"status": "ok"})


@ops.get("/metrics", include_in_schema=False)  # Prometheus text, not JSON: see docs/operations.md
def metrics(_: MetricsReaderDep) -> Response:
    return metrics_response()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    remove_left_behind()  # uploads a killed API process will never finish
    threads: list[SchedulerThread | DeliveryThread] = (
        [SchedulerThread(), DeliveryThread()] if app.state.run_scheduler else []
    )
    for thread in threads:
        thread.start()
    try:
        async with hot_read_pool(get_settings().database_url) as pool:
            app.state.hot_reads = pool
            yield
    finally:
        for thread in threads:
            thread.stop()


def _openapi_with_bearer(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The schema, saying that every /v1 route takes a bearer key. The key is read straight from
    the request (app.deps.get_caller), so no security dependency would say it for us."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer"}
            }
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    _document_errors(operation, needs_key=path.startswith("/v1/"))
            _drop_fastapi_validation_schemas(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


_ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def _document_errors(operation: dict[str, Any], *, needs_key: bool) -> None:
    """A /v1 operation takes a key, so it may answer 401; a 422 (FastAPI documents its own
    validation body for it) answers the error body, as every error does (app/errors.py)."""
    responses = operation.setdefault("responses", {})
    if needs_key:
        operation["security"] = [{"apiKey": []}]
        responses["401"] = _error_response(401)
    if "422" in responses:
        responses["422"] = _error_response(422)


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": _ERROR_BODY}},
    }


def _drop_fastapi_validation_schemas(schema: dict[str, Any]) -> None:
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def create_app(run_scheduler: bool = True) -> FastAPI:
    """The app. ``run_scheduler=False`` leaves out the periodic scheduling pass (passes on
    submit and on a job's end still run): for an app that only serves its schema."""
    app = FastAPI(
        lifespan=lifespan,
        title="Distillery",
        version="1.0.0",
        description="Self-hosted knowledge distillation: teacher in, smaller student out.",
    )
    app.state.run_scheduler = run_scheduler
    install_handlers(app)
    app.add_middleware(HttpMetrics)
    # Jobs first: clients poll them, and routes are matched in order.
    for router in (jobs_router, files_router, teams_router, queue_router, webhooks_router):
        app.include_router(router, prefix="/v1")
    app.include_router(ops)
    app.include_router(dashboard_router)  # /ui: static, outside the schema
    app.openapi = _openapi_with_bearer(app)  # type: ignore[method-assign]
    return app


app = create_app()
