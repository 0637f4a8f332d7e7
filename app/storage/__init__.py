"""The store: uploads, checkpoints, teacher-output caches and artifacts, shared by the API and
every worker. ``DISTILL_STORAGE_BACKEND`` picks it: ``local`` (a directory, ``local.py``) or
``s3`` (S3-compatible object storage, ``s3.py``).

Keys derive from ids (``file_key``, ``artifact_key``, ...), so the database never stores a path.
"""

import hashlib
from functools import lru_cache
from pathlib import Path

from app.config import get_settings
from app.storage.base import CHUNK, ObjectMissing, Opened, Store

__all__ = ["CHUNK", "TEACHER_CACHE", "ObjectMissing", "Opened", "Store"]

TEACHER_CACHE = "cache/teacher"  # the workers' teacher-output cache, content-addressed


def file_key(file_id: str) -> str:
    return f"files/{file_id}"


def artifacts_key(job_id: str) -> str:
    return f"jobs/{job_id}/artifacts"


def artifact_key(job_id: str, name: str) -> str:
    return f"{artifacts_key(job_id)}/{name}"


def checkpoint_key(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoint.pt"


@lru_cache
def get_store() -> Store:
    settings = get_settings()
    if settings.storage_backend == "s3":
        from app.storage.s3 import S3Store  # boto3 loads only where it is used

        return S3Store.from_settings(settings)
    from app.storage.local import LocalStore

    return LocalStore(root())


def root() -> Path:
    """This machine's storage directory (``DISTILL_STORAGE_DIR``): the local store itself, or,
    with S3, where this machine keeps temporary uploads and its copies of objects."""
    return get_settings().storage_dir.resolve()


def uploads_dir() -> Path:
    path = root() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
