"""The ASGI app: ``app.main:app``."""

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import broker
from app.db import get_engine
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


def create_app() -> FastAPI:
    app = FastAPI(
        title="Distillery",
        version="1.0.0",
        description="Self-hosted knowledge distillation: teacher in, smaller student out.",
    )
    install_handlers(app)
    v1 = APIRouter(prefix="/v1")
    for router in (teams_router, files_router, jobs_router, queue_router):
        v1.include_router(router)
    app.include_router(v1)
    app.include_router(ops)
    return app


app = create_app()
