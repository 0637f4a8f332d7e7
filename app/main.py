"""The ASGI app: ``app.main:app``."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import broker
from app.config import get_settings
from app.db import get_engine, hot_read_pool
from app.errors import error_body, install_handlers
from app.files.router import router as files_router
from app.jobs.router import router as jobs_router
from app.queue.router import router as queue_router
from app.teams.router import router as teams_router

ops = APIRouter(tags=["operations"])


@ops.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz", responses={503: {"description": "A dependency does not answer."}})
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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hot_read_pool(get_settings().database_url) as pool:
        app.state.hot_reads = pool
        yield


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="Distillery",
        version="1.0.0",
        description="Self-hosted knowledge distillation: teacher in, smaller student out.",
    )
    install_handlers(app)
    # Jobs first: clients poll them, and routes are matched in order.
    for router in (jobs_router, files_router, teams_router, queue_router):
        app.include_router(router, prefix="/v1")
    app.include_router(ops)
    return app


app = create_app()
