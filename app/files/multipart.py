"""Stream a multipart upload straight to disk: hashed on the way, refused once it is too large.

Starlette's form parsing spools the whole body before a handler sees it; this does not.
"""

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import InvalidRequest, PayloadTooLarge

FIELD_LIMIT = 1024  # bytes allowed in a plain (non-file) form field


@dataclass
class Upload:
    path: Path
    filename: str = ""
    bytes: int = 0
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    has_file: bool = False


class _Sink:
    """Receives the parser's callbacks for one request."""

    def __init__(self, upload: Upload, max_bytes: int, out: BinaryIO):
        self.upload, self.max_bytes, self.out = upload, max_bytes, out
        self.digest = hashlib.sha256()
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name = ""
        self.value = bytearray()
        self.is_file = False

    def on_part_begin(self) -> None:
        self.headers, self.name, self.value, self.is_file = {}, "", bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = options.get(b"name", b"").decode("utf-8", "replace")
        self.is_file = self.name == "file"
        if self.is_file:
            if self.upload.has_file:
                raise InvalidRequest("Send exactly one 'file' part.", param="file")
            self.upload.has_file = True
            raw = options.get(b"filename", b"upload").decode("utf-8", "replace")
            self.upload.filename = Path(raw.replace("\\", "/")).name[:255] or "upload"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self.is_file:
            self.value += chunk
            if len(self.value) > FIELD_LIMIT:
                raise InvalidRequest(f"Form field '{self.name}' is too long.", param=self.name)
            return
        self.upload.bytes += len(chunk)
        if self.upload.bytes > self.max_bytes:
            raise PayloadTooLarge(
                f"The file is larger than this server's limit of {self.max_bytes} bytes "
                "(DISTILL_MAX_UPLOAD_BYTES).",
                param="file",
            )
        self.digest.update(chunk)
        self.out.write(chunk)

    def on_part_end(self) -> None:
        if not self.is_file and self.name:
            self.upload.fields[self.name] = self.value.decode("utf-8", "replace")


async def receive(
    content_type: str, body: AsyncIterator[bytes], dest: Path, max_bytes: int
) -> Upload:
    """Parse the multipart body into ``dest`` (the file part) and small text fields."""
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidRequest("Upload with Content-Type multipart/form-data.", param="file")
    upload = Upload(path=dest)
    with dest.open("wb") as out:
        sink = _Sink(upload, max_bytes, out)
        callbacks = {
            name: getattr(sink, name)
            for name in dir(sink)
            if name.startswith("on_") and callable(getattr(sink, name))
        }
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        try:
            async for chunk in body:
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise InvalidRequest(f"The multipart body is malformed: {exc}.", param="file") from exc
    upload.sha256 = sink.digest.hexdigest()
    return upload
