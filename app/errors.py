"""Errors as types, mapped to the contract's error body in one place (``install_handlers``)."""

from collections.abc import Mapping
from typing import Any

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from jobspec import errors as validation_errors


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code


class InvalidRequest(ApiError):
    status_code = 422
    code = "invalid_request"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "file_too_large"


class Unprocessable(ApiError):
    """A well-formed request whose content we refuse (unsupported or unsafe file, unusable data)."""

    status_code = 422
    code = "unprocessable"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "file_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_request",
    429: "rate_limited",
}


def error_body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": param}}


class ErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, e.g. not_found; docs/api.md lists them.")
    message: str = Field(description="What to do about it, for a person.")
    param: str | None = Field(description="The field, header or parameter at fault, if one is.")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    401: "No API key, or an unknown or revoked one (unauthorized).",
    403: "A team key on an admin route (forbidden).",
    404: "No such id, or another team's (not_found).",
    409: "The request conflicts with the current state (see docs/api.md for the codes).",
    413: "The upload is over the size limit (file_too_large).",
    416: "The Range starts past the end of the file (range_not_satisfiable).",
    422: "The request does not validate (invalid_request), or its content is refused.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route's errors, each with the error body's schema."""
    return {s: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")  # FastAPI routes serve no HEAD


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path. Starlette's 405 names only the
    methods of the first route whose path matched, e.g. GET where DELETE is served too. Each
    method is tried against the routes as the router would (included routers match as one)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


def _body_type(request: Request) -> Any:
    """The type the route reads its JSON body as (a model), or None."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    return body_field.field_info.annotation if body_field is not None else None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else exc.headers
        return JSONResponse(
            error_body(exc.code, exc.message, exc.param), exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_errors.describe(
            validation_errors.first_error(exc.errors()), exc.body, _body_type(request)
        )
        return JSONResponse(error_body("invalid_request", message, param), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404:
            message = "No such route. See /docs for the API."
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
            message = f"{request.method} is not allowed here; use {headers['Allow']}."
        return JSONResponse(error_body(code, message), exc.status_code, headers=headers or None)

    @app.exception_handler(sqlalchemy.exc.DataError)
    @app.exception_handler(psycopg.DataError)
    async def _unstorable(_: Request, exc: Exception) -> JSONResponse:
        # The database refused a value from the request (a NUL character in an id, say).
        message = "A value in this request cannot be stored or looked up (e.g. it holds a NUL)."
        return JSONResponse(error_body("invalid_request", message), 422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            error_body("internal_error", "The server failed unexpectedly; try again later."), 500
        )
