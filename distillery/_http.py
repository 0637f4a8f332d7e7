"""HTTP with retries: exponential backoff with jitter on connection errors, timeouts, 429 and
5xx, for requests that are safe to repeat.

A request is safe to repeat when its method is idempotent (GET, DELETE) or the caller says so:
``POST /v1/jobs`` carries an ``Idempotency-Key`` and an upload only costs a second copy. Any
other POST is retried only when it cannot have reached the server (the connection was refused)
or the server refused it unread (429).
"""

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from distillery.errors import APIConnectionError, APITimeoutError, from_response

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0


def _user_agent() -> str:
    try:
        return f"distillery-python/{version('distillery')}"
    except PackageNotFoundError:
        return "distillery-python"


def backoff(attempt: int, retry_after: str | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): the server's ``Retry-After`` when it
    gives one, else exponential with jitter, so clients that failed together spread out."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), 60.0)
        except ValueError:
            pass
        try:  # an HTTP date
            when = email.utils.parsedate_to_datetime(retry_after).timestamp()
            return min(max(when - time.time(), 0.0), 60.0)
        except (TypeError, ValueError):
            pass  # unreadable: back off as if it were not there
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Transport:
    def __init__(self, base_url: str, api_key: str, timeout: float | httpx.Timeout, retries: int):
        self.max_retries = retries
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": _user_agent()},
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
        )

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        retry: bool | None = None,
        files: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """The response to a request that succeeded (2xx); an error raises ``DistilleryError``.
        ``retry`` forces (True) or forbids (False) retrying a request that might have been
        processed; ``files`` builds the multipart body anew for each attempt."""
        with self._send(method, path, retry, files, stream=False, **kwargs) as response:
            return response

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """An open, successful response whose body is read by the caller."""
        with self._send(method, path, None, None, stream=True, **kwargs) as response:
            yield response

    @contextmanager
    def _send(
        self,
        method: str,
        path: str,
        retry: bool | None,
        files: Callable[[], Any] | None,
        *,
        stream: bool,
        **kwargs: Any,
    ) -> Iterator[httpx.Response]:
        repeatable = method in IDEMPOTENT_METHODS if retry is None else retry
        attempt = 0
        while True:
            attempt += 1
            last = attempt > self.max_retries
            try:
                request = self.http.build_request(
                    method, path, files=files() if files else None, **kwargs
                )
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as e:
                never_sent = isinstance(e, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (repeatable or never_sent):
                    raise _connection_error(e, self.http.base_url) from e
                time.sleep(backoff(attempt))
                continue
            try:
                if response.is_success:
                    yield response
                    return
                status = response.status_code
                if not last and status in RETRY_STATUSES and (repeatable or status == 429):
                    retry_after = response.headers.get("retry-after")
                    response.close()
                    time.sleep(backoff(attempt, retry_after))
                    continue
                response.read()
                raise from_response(response)
            finally:
                response.close()


def _connection_error(e: httpx.TransportError, base_url: httpx.URL) -> APIConnectionError:
    if isinstance(e, httpx.TimeoutException):
        return APITimeoutError(f"The server at {base_url} did not answer in time ({e}).")
    return APIConnectionError(f"Cannot reach the server at {base_url}: {e or type(e).__name__}.")
