from collections.abc import AsyncIterator
from functools import partial

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app import storage
from app.config import get_settings
from app.db import discard_on_rollback
from app.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from app.files import checking, multipart, repository
from app.files.schemas import Purpose
from app.ids import new_id
from app.models import File
from app.storage.uploads import new_upload_path

MULTIPART_OVERHEAD = 64 * 1024


def _check_declared_length(content_length: str | None, max_bytes: int) -> None:
    """Refuse a body announced too large before reading any of it."""
    declared = int(content_length) if content_length and content_length.isdigit() else 0
    if declared > max_bytes + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(
            f"The file is larger than this server's limit of {max_bytes} bytes "
            "(DISTILL_MAX_UPLOAD_BYTES).",
            param="file",
        )


def _purpose(fields: dict[str, str]) -> Purpose:
    value = fields.get("purpose")
    if value not in {p.value for p in Purpose}:
        raise InvalidRequest("purpose must be 'teacher' or 'dataset'.", param="purpose")
    return Purpose(value)


async def upload(
    session: Session,
    team_id: str,
    content_type: str,
    content_length: str | None,
    body: AsyncIterator[bytes],
) -> File:
    max_bytes = get_settings().max_upload_bytes
    _check_declared_length(content_length, max_bytes)
    tmp = new_upload_path()
    try:
        received = await multipart.receive(content_type, body, tmp, max_bytes)
        if not received.has_file:
            raise InvalidRequest("Send the bytes in a form part named 'file'.", param="file")
        purpose = _purpose(received.fields)
        found = await checking.detect(tmp, purpose)
        file = File(
            id=new_id("file"),
            team_id=team_id,
            filename=received.filename,
            bytes=received.bytes,
            sha256=received.sha256,
            purpose=purpose.value,
            format=found.format,
            meta=found.meta,
        )
        store, key = storage.get_store(), storage.file_key(file.id)
        discard_on_rollback(session, partial(store.delete, key))  # before: a cancel may land in it
        await run_in_threadpool(store.move_in, key, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    session.add(file)
    session.flush()  # fills created_at, which the response needs
    return file


def get(session: Session, team_id: str, file_id: str) -> File:
    file = repository.get_file(session, team_id, file_id)
    if file is None:
        raise NotFound(f"No file {file_id}.", param="file_id")
    return file


def delete(session: Session, team_id: str, file_id: str) -> None:
    file = get(session, team_id, file_id)
    if repository.in_use(session, file.id):
        raise Conflict(
            "A queued or running job needs this file; cancel it or wait for it to finish.",
            param="file_id",
            code="file_in_use",
        )
    session.delete(file)
    session.flush()
    storage.get_store().delete(storage.file_key(file.id))
