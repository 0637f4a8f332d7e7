"""The teacher's logits on the training rows, computed once per job instead of once per batch.

The teacher is frozen, so while every epoch feeds it the same rows its outputs never change: one
batched pass before training replaces a teacher forward at every step. With a cache directory the
table is also stored, content-addressed, so a later job on the same teacher and data skips even
that pass. A damaged or mismatched file is ignored with a warning and rebuilt; the cache only ever
costs time, never the job.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from worker.engine.artifacts import atomic_write
from worker.engine.teacher import Teacher

# What a cached file holds. Change it whenever that changes (say, hidden states as well as logits)
# so that older files stop matching.
VERSION = "teacher-logits-v1"
# Larger tables stay per batch: the table sits next to the data on the job's device.
MAX_TABLE_BYTES = 2 * 1024**3
# Rows per teacher forward when building the table. Fixed, not the job's batch size, so a stored
# table is the same numbers whichever job computed it.
CHUNK_ROWS = 256

Status = Literal["hit", "miss", "off"]
Log = Callable[[str, str], None]  # (level, message)


@dataclass
class TeacherOutputs:
    """The teacher's logits for training rows: looked up in ``table`` when there is one, else
    computed from the batch. ``status`` is what the job reports as ``teacher_cache``; ``path``
    is the cache file the table came from or went to."""

    teacher: Teacher
    table: torch.Tensor | None
    status: Status
    path: Path | None = None

    def __call__(self, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.table[index] if self.table is not None else self.teacher(x)


def teacher_outputs(
    teacher: Teacher,
    x: torch.Tensor,
    num_classes: int,
    key_parts: dict | None,
    cache_dir: Path | None,
    log: Log,
) -> TeacherOutputs:
    """A table of the teacher's logits on ``x``: from ``cache_dir`` when stored there under the
    key of (``key_parts``, ``x``), else computed once (and stored). Per batch when too large."""
    table_bytes = len(x) * num_classes * 4
    if table_bytes > MAX_TABLE_BYTES:
        log(
            "info",
            f"Teacher cache off: its logits on the training data would take "
            f"{table_bytes / 1024**3:.1f} GiB; the teacher runs on every batch instead.",
        )
        return TeacherOutputs(teacher, None, "off")
    path = None
    if cache_dir is not None and key_parts is not None:
        path = cache_dir / f"{cache_key(key_parts, x)}.safetensors"
        table = _read(path, (len(x), num_classes), log)
        if table is not None:
            log("info", f"Teacher cache hit: the teacher's training logits come from {path.name}.")
            return TeacherOutputs(teacher, table.to(x.device), "hit", path)
    table = compute_logits(teacher, x)
    where = "" if path is None else f"; stored as {path.name}"
    log("info", f"Teacher cache miss: computed the teacher's training logits once{where}.")
    stored = path is not None and _write(path, table, log)
    return TeacherOutputs(teacher, table, "miss", path if stored else None)


def compute_logits(teacher: Teacher, x: torch.Tensor) -> torch.Tensor:
    """One pass of the frozen teacher (eval mode, no_grad) over ``x``."""
    return torch.cat([teacher(x[i : i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS)])


def cache_key(key_parts: dict, x: torch.Tensor) -> str:
    """sha256 of the format version, ``key_parts`` (the teacher's identity) and the training
    inputs themselves: hashing the rows the teacher sees covers the file, the validation split's
    seed and fraction, and any preprocessing at once."""
    digest = hashlib.sha256(json.dumps([VERSION, key_parts], sort_keys=True).encode())
    rows = x.detach().cpu().contiguous()
    digest.update(f"{rows.dtype}{tuple(rows.shape)}".encode())
    digest.update(rows.view(torch.uint8).numpy().data if rows.numel() else b"")
    return digest.hexdigest()


def _read(path: Path, shape: tuple[int, int], log: Log) -> torch.Tensor | None:
    if not path.exists():
        return None
    from safetensors.torch import load_file

    try:
        table = load_file(str(path), device="cpu")["logits"]
    except Exception as e:
        log("warning", f"Ignoring an unreadable teacher cache file {path.name}: {e}")
        return None
    if tuple(table.shape) != shape or table.dtype != torch.float32:
        log(
            "warning",
            f"Ignoring teacher cache file {path.name}: it holds {table.dtype} logits of shape "
            f"{tuple(table.shape)}, not float32 {shape}.",
        )
        return None
    return table


def _write(path: Path, table: torch.Tensor, log: Log) -> bool:
    """Written whole (``atomic_write``): two workers filling the same entry both write whole,
    identical files. False if it could not."""
    from safetensors.torch import save_file

    tensors = {"logits": table.cpu().contiguous()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"version": VERSION}))
    except OSError as e:
        log("warning", f"Could not store the teacher cache file {path.name}: {e}")
        return False
    return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
