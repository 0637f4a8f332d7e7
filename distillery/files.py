"""``client.files``: uploads (teachers and data sets), listing, contents, deletion."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from distillery import _download
from distillery._resource import MAX_PAGE, Resource
from distillery.types import File

Uploadable = str | Path | bytes | IO[bytes]


class Files(Resource):
    def upload(self, file: Uploadable, purpose: str, *, filename: str | None = None) -> File:
        """Upload a teacher (``purpose="teacher"``) or a data set (``"dataset"``): a path, the
        bytes, or a binary file object. The server detects the format from the content.
        Retried like any idempotent request (the file is sent again; a lost answer may leave
        a second copy behind)."""
        name, reopen, repeatable = _source(file, filename)
        opened: list[IO[bytes]] = []

        def body() -> dict[str, Any]:
            stream = reopen()
            opened.append(stream)
            return {"file": (name, stream, "application/octet-stream")}

        try:
            response = self._transport.request(
                "POST", "/v1/files", data={"purpose": purpose}, files=body, retry=repeatable
            )
        finally:
            for stream in opened:
                if stream is not file:
                    stream.close()
        return File.model_validate(response.json())

    def list(
        self, purpose: str | None = None, *, page_size: int = MAX_PAGE, limit: int | None = None
    ) -> Iterator[File]:
        """Every file of the team, newest first, across all pages."""
        return self._pages(
            "/v1/files", File.model_validate, page_size=page_size, limit=limit, purpose=purpose
        )

    def find(self, path: str | Path, purpose: str) -> File | None:
        """The newest file of the team with the same bytes as the local ``path`` and this
        purpose, if there is one (``GET /v1/files?sha256=``): what to use instead of uploading
        it again."""
        digest = _download.sha256_of(Path(path))
        found = self._pages(
            "/v1/files", File.model_validate, page_size=1, limit=1, purpose=purpose, sha256=digest
        )
        file = next(iter(found), None)
        # A server older than the sha256 filter ignores it: never take another file for this one.
        return file if file is not None and file.sha256 == digest else None

    def get(self, file_id: str) -> File:
        return File.model_validate(self._get(f"/v1/files/{file_id}"))

    def delete(self, file_id: str) -> None:
        """``ConflictError`` (``file_in_use``) while a queued or running job needs it."""
        self._transport.request("DELETE", f"/v1/files/{file_id}")

    def content(self, file_id: str, path: str | Path | None = None) -> bytes | Path:
        """The file's bytes; with ``path``, written there (verified, resumable) instead."""
        if path is None:
            return self._transport.request("GET", f"/v1/files/{file_id}/content").content
        file = self.get(file_id)
        dest = Path(path)
        if dest.is_dir():
            dest = dest / Path(file.filename).name
        return _download.download(
            self._transport,
            f"/v1/files/{file_id}/content",
            dest,
            sha256=file.sha256,
            size=file.bytes,
        )


def _source(file: Uploadable, filename: str | None) -> tuple[str, Any, bool]:
    """The name to send, a function that gives the bytes from the start once per attempt, and
    whether it can (a pipe cannot be read twice)."""
    if isinstance(file, str | Path):
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"No such file: {path}")
        return filename or path.name, lambda: path.open("rb"), True
    if isinstance(file, bytes | bytearray):
        data = bytes(file)
        return filename or "upload", lambda: io.BytesIO(data), True
    start = file.tell() if file.seekable() else None

    def rewind() -> IO[bytes]:
        if start is not None:
            file.seek(start)
        return file

    name = filename or Path(str(getattr(file, "name", "upload"))).name
    return name, rewind, start is not None
