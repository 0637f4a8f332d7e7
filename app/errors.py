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


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "service_unavailable"


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


_TAG_ERRORS = ("union_tag_invalid", "union_tag_not_found")


def _param_from_error(err: dict[str, Any], body: Any) -> str | None:
    """The dotted path of the field an error names, in the user's words: no union tags
    (``student.mlp.dropout`` -> ``student.dropout``), no character offsets of broken JSON."""
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        return None
    value = body if loc[:1] == ("body",) else None
    parts: list[str] = []
    rest = loc[1:]
    for i, part in enumerate(rest):
        if str(part).startswith("function-"):
            continue
        if _is_union_tag(value, part, last=i == len(rest) - 1):
            continue
        parts.append(str(part))
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            value = None
    if err.get("type") in _TAG_ERRORS:
        parts.append("arch")  # the one tagged union in the API: architecture specs
    return ".".join(p for p in parts if p) or (str(loc[0]) if loc else None)


def _is_union_tag(value: Any, part: Any, *, last: bool) -> bool:
    """A union tag in an error's path names no key of the body: "mlp" where the body says
    ``{"arch": "mlp", ...}``, or where it leaves ``arch`` to its default (a field follows then)."""
    return isinstance(value, dict) and part not in value and (part in value.values() or not last)


def _validation_message(err: dict[str, Any], param: str | None) -> str:
    if err.get("type") in _TAG_ERRORS:
        ctx = err.get("ctx") or {}
        tag, expected = ctx.get("tag"), ctx.get("expected_tags")
        return f"{param}: unknown architecture {tag!r}; use one of {expected}."
    msg = str(err.get("msg", "Invalid value")).removeprefix("Value error, ")
    return f"{param}: {msg}." if param else f"{msg}."


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


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else exc.headers
        return JSONResponse(
            error_body(exc.code, exc.message, exc.param), exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _param_from_error(first, exc.body)
        return JSONResponse(
            error_body("invalid_request", _validation_message(first, param), param), 422
        )

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
