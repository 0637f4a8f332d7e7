"""Stored objects served over HTTP: whole, or one byte range (``Range``, ``206``), with the
quoted sha256 as ``ETag``.

``requested_range`` decides for both stores: a ``Range`` header it cannot read is ignored (the
whole file, ``200``, as RFC 9110, 14.2 says), one past the end is ``416`` in the contract's error
body. From the local store starlette's ``FileResponse`` then serves the file, told only the range
we chose. From S3 the bytes stream through from a GET, and a range is passed on as a ranged GET.
S3 reads one range per request, so a request for several ranges gets the whole object, from
either store, which HTTP allows.
"""

import re
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from app import storage
from app.errors import ApiError

MEDIA_TYPE = "application/octet-stream"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


class RangeNotSatisfiable(ApiError):
    status_code = 416
    code = "range_not_satisfiable"


def object_response(
    key: str, *, filename: str, sha256: str, size: int, request_headers: Headers
) -> Response:
    store, etag = storage.get_store(), f'"{sha256}"'
    span = requested_range(request_headers, size, etag)
    path = store.local_path(key)
    if path is not None:
        return _LocalFile(
            path, span, media_type=MEDIA_TYPE, filename=filename, headers={"ETag": etag}
        )
    start, stop = span or (0, size)
    opened = store.open(key, *span) if span else store.open(key)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Length": str(stop - start),
        "Content-Disposition": content_disposition(filename),
        "Last-Modified": formatdate(opened.modified.timestamp(), usegmt=True),
    }
    if span:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return StreamingResponse(
        opened.chunks, status_code=206 if span else 200, media_type=MEDIA_TYPE, headers=headers
    )


class _LocalFile(FileResponse):
    """A ``FileResponse`` that serves the range ``requested_range`` chose, or the whole file: it
    sees the request's headers with ``Range`` and ``If-Range`` replaced by that choice, so its own
    parser never answers a header we ignore (it would, with a 400 in plain text)."""

    def __init__(self, path: Path, span: tuple[int, int] | None, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.span = span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        if self.span is not None:
            headers.append((b"range", f"bytes={self.span[0]}-{self.span[1] - 1}".encode()))
        await super().__call__({**scope, "headers": headers}, receive, send)


def requested_range(headers: Headers, size: int, etag: str) -> tuple[int, int] | None:
    """The one byte range asked for, as (start, stop), or None for the whole object: no range,
    several, one we cannot read, or an ``If-Range`` that no longer matches."""
    if_range = headers.get("if-range")
    match = _RANGE.fullmatch(headers.get("range", "").replace(" ", ""))
    if match is None or (if_range is not None and if_range != etag):
        return None
    first, last = match.groups()
    if not first:  # "-n": the last n bytes
        if not last:
            return None
        if int(last) == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - int(last), 0), size
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range, so ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, size if not last else min(int(last) + 1, size)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"The range asked for lies past the end of the {size}-byte file; ask for less.",
        param="Range",
        headers={"Content-Range": f"bytes */{size}"},
    )


def content_disposition(filename: str) -> str:
    """As starlette's ``FileResponse`` writes it."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'
