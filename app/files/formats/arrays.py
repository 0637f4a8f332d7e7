"""Facts about an array data set (a float ``x`` and an optional ``y``: integer class ids, or
real regression targets), for npz and safetensors alike."""

from typing import IO

import numpy as np

from app.files.formats.errors import unsupported
from app.files.formats.labels import check_class_id, check_class_id_dtype
from app.files.formats.streams import read_exact

LABEL_CHUNK = 1 << 20


def dataset_meta(rows: int, sample_shape: list[int], x_dtype: str) -> dict:
    if rows < 1:
        raise unsupported("dataset", "The data set has no rows.")
    return {
        "rows": rows,
        "sample_shape": sample_shape,
        "x_dtype": x_dtype,
        "has_labels": False,
        "label_kind": None,
        "num_classes": None,
    }


def label_range(stream: IO[bytes], dtype: np.dtype, count: int, where: str) -> tuple[int, int]:
    """Smallest and largest label, streamed in chunks so a huge ``y`` never sits in memory."""
    check_class_id_dtype(dtype, where[0].upper() + where[1:])
    lo, hi = None, None
    remaining = count
    while remaining:
        n = min(remaining, LABEL_CHUNK)
        chunk = np.frombuffer(read_exact(stream, n * dtype.itemsize), dtype=dtype)
        lo = int(chunk.min()) if lo is None else min(lo, int(chunk.min()))
        hi = int(chunk.max()) if hi is None else max(hi, int(chunk.max()))
        remaining -= n
    if lo is None or hi is None:
        raise unsupported("dataset", f"{where} is empty.")
    if lo < 0:
        raise unsupported("dataset", f"{where} holds class id {lo}; class ids must be 0 or more.")
    check_class_id(hi, where[0].upper() + where[1:])
    return lo, hi


def label_meta(label_range: tuple[int, int], dtype: np.dtype) -> dict:
    return {
        "has_labels": True,
        "label_kind": "class",
        "num_classes": label_range[1] + 1,
        "label_dtype": dtype.name,
    }


def real_label_meta(shape: tuple[int, ...], rows: int, dtype: str, where: str) -> dict:
    """Float labels are regression targets, one per row (N,) or K per row (N, K)."""
    if len(shape) not in (1, 2) or shape[0] != rows:
        raise unsupported(
            "dataset",
            f"{where} holds real-valued targets, which must be shaped ({rows},) or ({rows}, K) "
            f"to match 'x'; it is shaped {list(shape)}.",
        )
    return {
        "has_labels": True,
        "label_kind": "real",
        "label_dtype": dtype,
        "num_targets": 1 if len(shape) == 1 else shape[1],
    }
