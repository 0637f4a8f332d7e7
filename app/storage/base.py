"""What every store does. Objects are whole files under string keys such as ``files/file_…``."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

CHUNK = 1024 * 1024


class ObjectMissing(FileNotFoundError):
    """No object under this key."""


@dataclass
class Opened:
    """An object, or a byte range of it, being read: ``chunks`` streams it (closing the iterator
    lets go of the file or connection early)."""

    chunks: Iterator[bytes]
    modified: datetime


class Store(Protocol):
    def local_path(self, key: str) -> Path | None:
        """The object's own file when this store is a directory this machine sees (read and
        write it in place, nothing to copy), else None."""
        ...

    def exists(self, key: str) -> bool: ...

    def put(self, key: str, path: Path) -> None:
        """Store a copy of the file at ``path``; nothing to do when it is the object's own file.
        Readers see the old object or the new one, never part of one."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def move_in(self, key: str, path: Path) -> None:
        """``put``, taking the file: ``path`` is gone afterwards."""

    def get(self, key: str, dest: Path) -> None:
        """Write the object to ``dest``, whole or not at all. ``ObjectMissing`` if there is none."""

    def open(self, key: str, start: int = 0, stop: int | None = None) -> Opened:
        """Read bytes ``start`` up to (not including) ``stop``, or to the end. ``ObjectMissing``
        if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if there is none."""

    def keys(self, prefix: str) -> Iterator[str]:
        """The key of every object under the folder ``prefix`` (``prefix/...``, at any depth),
        in no set order; an object being written appears once it is whole."""
        ...


def read_bytes(store: Store, key: str) -> bytes:
    """A small object, whole."""
    return b"".join(store.open(key).chunks)
