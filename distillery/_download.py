"""Verified, resumable downloads.

Bytes go to ``<name>.part`` next to the destination. An interrupted download (a broken
connection now, or a run stopped earlier) resumes from that file with ``Range`` and
``If-Range``, so the server sends the rest only if the object is still the one we began. The
sha256 of the whole file is checked against the one the server promised (the listing, or the
``ETag``) before the file is renamed into place, atomically; on a mismatch the partial file is
removed and nothing is left behind.
"""

import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

from distillery._http import Transport, backoff
from distillery.errors import (
    APIConnectionError,
    ChecksumMismatchError,
    RangeNotSatisfiableError,
)

ProgressCallback = Callable[[int, int | None], None]  # (bytes so far, total or None)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


class _Partial:
    """The ``.part`` file and the running sha256 of what it holds."""

    def __init__(self, path: Path, size: int | None):
        self.path = path
        self.digest = hashlib.sha256()
        self.have = 0
        if path.exists():
            if size is not None and path.stat().st_size > size:
                path.unlink()  # longer than the object: not a prefix of it
            else:
                with path.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        self.digest.update(chunk)
                        self.have += len(chunk)

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.digest, self.have = hashlib.sha256(), 0

    def append(self, out: IO[bytes], chunk: bytes) -> None:
        out.write(chunk)
        self.digest.update(chunk)
        self.have += len(chunk)


def download(
    transport: Transport,
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """``url`` into ``dest``, verified; returns ``dest``. An existing ``dest`` that already has
    the right sha256 is kept as it is."""
    if sha256 and _already_there(dest, sha256, size):
        if on_progress:
            on_progress(dest.stat().st_size, size)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = _Partial(part_path(dest), size)
    failures = 0
    while not (size and partial.have == size):  # a complete partial needs no request
        try:
            sha256, size = _fetch(transport, url, partial, sha256, size, on_progress)
            break
        except RangeNotSatisfiableError:
            partial.restart()  # what we had cannot be continued
        except httpx.TransportError as e:  # the body broke off: resume from what arrived
            failures += 1
            if failures > transport.max_retries:
                raise APIConnectionError(
                    f"Download of {dest.name} kept breaking off ({e}); run it again to resume "
                    f"from the {partial.have} bytes kept in {partial.path}."
                ) from e
            time.sleep(backoff(failures))
    actual = partial.digest.hexdigest()
    if sha256 is not None and actual != sha256:
        partial.restart()
        raise ChecksumMismatchError(
            f"{dest.name}: the downloaded bytes have sha256 {actual}, not {sha256} as the server "
            "promised; nothing was kept. Run the download again."
        )
    if not partial.path.exists():  # an empty object: nothing was written
        partial.path.touch()
    with partial.path.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial.path, dest)
    return dest


def _already_there(dest: Path, sha256: str, size: int | None) -> bool:
    if not dest.is_file() or (size is not None and dest.stat().st_size != size):
        return False
    return sha256_of(dest) == sha256


def _fetch(
    transport: Transport,
    url: str,
    partial: _Partial,
    sha256: str | None,
    size: int | None,
    on_progress: ProgressCallback | None,
) -> tuple[str | None, int | None]:
    """One GET: the rest of the object after what ``partial`` holds (or all of it, when the
    server sends it whole). Returns the sha256 and size the server stands by."""
    headers = {}
    if partial.have:
        headers["Range"] = f"bytes={partial.have}-"
        if sha256:
            headers["If-Range"] = f'"{sha256}"'
    with transport.stream("GET", url, headers=headers) as response:
        etag = response.headers.get("etag", "").strip('"') or None
        sha256 = sha256 or etag
        start = 0
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
            start = int(match.group(1)) if match else -1
            if match and match.group(3) != "*":
                size = int(match.group(3))
        elif size is None and "content-length" in response.headers:
            size = int(response.headers["content-length"])
        if start != partial.have:  # a whole object (200), or a range we did not ask for
            partial.restart()
            if start != 0:
                raise RangeNotSatisfiableError("The server sent a range we did not ask for.")
        with partial.path.open("ab") as out:
            for chunk in response.iter_bytes():  # as they arrive: a break keeps them all
                partial.append(out, chunk)
                if on_progress:
                    on_progress(partial.have, size)
    return sha256, size
