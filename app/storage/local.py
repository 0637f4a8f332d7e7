"""The local store: a directory (``DISTILL_STORAGE_DIR``), the object under ``key`` the file at
``root/key``. Every process that shares the directory (one machine, or NFS) shares the store."""

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from app.storage.base import CHUNK, ObjectMissing, Opened

TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.tmp$")  # write_atomically's, not an object yet


class LocalStore:
    def __init__(self, root: Path):
        self.root = root.resolve()

    def local_path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{key!r} is not a key inside the store")
        return path

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def put(self, key: str, path: Path) -> None:
        final = self.local_path(key)
        if path.resolve() == final:
            return
        with path.open("rb") as source:
            write_atomically(final, lambda out: shutil.copyfileobj(source, out, CHUNK))

    def put_bytes(self, key: str, data: bytes) -> None:
        write_atomically(self.local_path(key), lambda out: out.write(data))

    def move_in(self, key: str, path: Path) -> None:
        final = self.local_path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)

    def get(self, key: str, dest: Path) -> None:
        with self._open(key) as source:
            write_atomically(dest, lambda out: shutil.copyfileobj(source, out, CHUNK))

    def open(self, key: str, start: int = 0, stop: int | None = None) -> Opened:
        f = self._open(key)
        modified = datetime.fromtimestamp(os.fstat(f.fileno()).st_mtime, UTC)
        f.seek(start)
        return Opened(_chunks(f, None if stop is None else stop - start), modified)

    def delete(self, key: str) -> None:
        self.local_path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        folder = self.local_path(prefix.rstrip("/"))
        for directory, _, names in os.walk(folder):  # links to folders are not followed
            for name in names:
                if not TEMPORARY.search(name):
                    yield (Path(directory) / name).relative_to(self.root).as_posix()

    def _open(self, key: str) -> BinaryIO:
        try:
            return self.local_path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError) as e:
            raise ObjectMissing(key) from e


def write_atomically(final: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file beside ``final``, then rename it into place: a reader
    never sees half a file, and a crash leaves at most a ``.tmp`` file behind."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as out:
            write(out)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _chunks(f: BinaryIO, length: int | None) -> Iterator[bytes]:
    with f:
        while length is None or length > 0:
            chunk = f.read(CHUNK if length is None else min(CHUNK, length))
            if not chunk:
                return
            if length is not None:
                length -= len(chunk)
            yield chunk
