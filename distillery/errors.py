"""One exception hierarchy for everything the client raises.

An error the server answers carries the contract's error body (``code``, ``message``, ``param``)
and the HTTP status; ``str(error)`` is the server's message, a sentence a person can act on.
Errors found on this side (no connection, a checksum that does not match) use the same fields.
"""

from typing import Any

import httpx


class DistilleryError(Exception):
    """Base class. ``status_code`` is None for errors that never got an HTTP answer."""

    status_code: int | None = None
    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status_code: int | None = None,
        response: httpx.Response | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.response = response
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, code={self.code!r}, "
            f"message={self.message!r}, param={self.param!r})"
        )


# --- answered by the server -------------------------------------------------------------------


class APIStatusError(DistilleryError):
    """The server answered with an error status."""


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    """401: no key, or one that is unknown or revoked."""

    status_code = 401


class PermissionDeniedError(APIStatusError):
    """403: e.g. a team key on an admin route."""

    status_code = 403


class NotFoundError(APIStatusError):
    """404: missing, or another team's."""

    status_code = 404


class ConflictError(APIStatusError):
    """409: ``file_in_use``, ``job_finished``, ``idempotency_conflict``..."""

    status_code = 409


class PayloadTooLargeError(APIStatusError):
    status_code = 413


class RangeNotSatisfiableError(APIStatusError):
    status_code = 416


class UnprocessableError(APIStatusError):
    """422: ``invalid_request`` (``param`` names the first bad field), ``unsupported_format``,
    ``unsafe_file``..."""

    status_code = 422


class InvalidSpecError(UnprocessableError):
    """A job spec the server would refuse (422 ``invalid_request``), found by the client before
    it sent anything (``distillery.spec.check``); ``status_code`` is None: no request was made."""

    status_code = None  # type: ignore[assignment]
    code = "invalid_request"


class RateLimitError(APIStatusError):
    status_code = 429


class ServerError(APIStatusError):
    """5xx."""

    status_code = 500


class ServiceUnavailableError(ServerError):
    status_code = 503


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    416: RangeNotSatisfiableError,
    422: UnprocessableError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def from_response(response: httpx.Response) -> APIStatusError:
    """The error for a 4xx/5xx answer; a body that is not the contract's still gives a message."""
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIStatusError)
    code, message, param = f"http_{status}", f"HTTP {status} {response.reason_phrase}", None
    try:
        error: Any = response.json()["error"]
        code, message, param = str(error["code"]), str(error["message"]), error.get("param")
    except (ValueError, KeyError, TypeError):
        if text := response.text.strip()[:300]:
            message = f"{message}: {text}"
    return cls(message, code=code, param=param, status_code=status, response=response)


# --- found on this side -----------------------------------------------------------------------


class APIConnectionError(DistilleryError):
    """The server could not be reached, or the connection broke (after the retries)."""

    code = "connection_error"


class APITimeoutError(APIConnectionError):
    code = "timeout"


class ConfigurationError(DistilleryError):
    """No API key found, an unreadable config file, a spec that names a missing local file."""

    code = "configuration_error"


class ChecksumMismatchError(DistilleryError):
    """A download whose sha256 is not the one the server promised; nothing was kept."""

    code = "checksum_mismatch"


class WaitTimeoutError(DistilleryError):
    """``Job.wait(timeout=...)`` ran out before the job was final."""

    code = "wait_timeout"
