"""The blob store: uploads, checkpoints and artifacts, under ``DISTILL_STORAGE_DIR``.

Paths are derived from ids, so the database never stores a filesystem path.
"""

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from app.config import get_settings

CHUNK = 1024 * 1024


def root() -> Path:
    return get_settings().storage_dir.resolve()


def file_path(file_id: str) -> Path:
    return root() / "files" / file_id


def job_dir(job_id: str) -> Path:
    return root() / "jobs" / job_id


def artifacts_dir(job_id: str) -> Path:
    return job_dir(job_id) / "artifacts"


def teacher_cache_dir() -> Path:
    """The workers' teacher-output cache, content-addressed; safe to delete at any time."""
    return root() / "cache" / "teacher"


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


def publish(tmp: Path, final: Path) -> None:
    """Move a fully written temporary file into place atomically."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def remove(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
