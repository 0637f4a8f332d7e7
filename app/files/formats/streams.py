"""Reading from file and archive-member streams without trusting what they announce."""

import io
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast


def read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise EOFError(f"expected {n} bytes, found {len(data)}")
        data += more
    return data


def peek(stream: IO[bytes], n: int) -> bytes:
    # ZipExtFile and tarfile's member streams are buffered readers that can peek.
    peek = cast(Callable[[int], bytes], getattr(stream, "peek"))  # noqa: B009
    return bytes(peek(n)[:n])


def stream_size(stream: IO[bytes]) -> int:
    position = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    return position


@contextmanager
def spooled(stream: IO[bytes], spool_dir: Path | None) -> Iterator[IO[bytes]]:
    """Zip readers seek; a tar member stream from a gzip would rewind the whole archive on every
    backward seek, so it is copied to a temporary file next to the upload first."""
    if spool_dir is None:
        yield stream
        return
    with tempfile.TemporaryFile(dir=spool_dir) as tmp:
        shutil.copyfileobj(stream, tmp)
        tmp.seek(0)
        yield cast(IO[bytes], tmp)
