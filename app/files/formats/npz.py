"""npz data sets: headers parsed without loading data, object arrays refused."""

import io
import zipfile
from dataclasses import dataclass
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from app.files.formats.accepted import Detected, Purpose
from app.files.formats.arrays import dataset_meta, label_meta, label_range, real_label_meta
from app.files.formats.errors import UnsafeFile, UnsupportedFormat, unsupported, wrong_purpose
from app.files.formats.streams import read_exact

MAX_NPY_HEADER = 64 * 1024


@dataclass(frozen=True)
class _Npy:
    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int


def detect_npz(zf: zipfile.ZipFile, files: list[zipfile.ZipInfo], purpose: Purpose) -> Detected:
    # Every member is checked before the purpose, so an unsafe npz is refused as unsafe.
    arrays = {info.filename.removesuffix(".npy"): (info, _npy_member(zf, info)) for info in files}
    if purpose != "dataset":
        raise wrong_purpose("npz", purpose)
    x, y = arrays.get("x"), arrays.get("y")
    if x is None or x[1].dtype.kind != "f" or len(x[1].shape) < 2:
        raise unsupported(
            "dataset",
            "An npz data set needs a float array 'x' shaped (N, ...) "
            "with at least 2 dimensions: np.savez(path, x=x, y=y).",
        )
    rows = x[1].shape[0]
    meta = dataset_meta(rows, list(x[1].shape[1:]), x[1].dtype.name)
    if y is not None and y[1].dtype.kind == "f":
        meta |= real_label_meta(y[1].shape, rows, y[1].dtype.name, "Array 'y'")
    elif y is not None:
        info, header = y
        if header.dtype.kind not in "iu" or header.shape != (rows,):
            raise unsupported(
                "dataset",
                f"Array 'y' must hold integer class ids shaped ({rows},) (or real-valued "
                "regression targets) "
                f"to match 'x'; it is {header.dtype} shaped {list(header.shape)}.",
            )
        with zf.open(info) as f:
            f.seek(header.data_offset)
            meta |= label_meta(label_range(f, header.dtype, rows, "array 'y'"), header.dtype)
    return Detected("npz", meta)


def _npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Npy:
    with zf.open(info) as f:
        header = _read_npy_header(f, info.filename)
    if header.dtype.hasobject:
        raise UnsafeFile(
            f"'{info.filename}' in the npz holds Python objects (dtype object); "
            "loading it would unpickle them. Save plain numeric arrays."
        )
    expected = header.data_offset + int(np.prod(header.shape, dtype=object)) * header.dtype.itemsize
    if info.file_size != expected:
        raise UnsupportedFormat(
            f"'{info.filename}' in the npz is {info.file_size} bytes but its "
            f"header promises {expected}; the file is truncated or corrupt."
        )
    return header


def _read_npy_header(f: IO[bytes], name: str) -> _Npy:
    """Parse an .npy header with numpy's own readers, after bounding its length ourselves
    (numpy reads a version-2 header of any announced length before checking it)."""
    magic = read_exact(f, 8)
    if magic[:6] != b"\x93NUMPY" or (magic[6], magic[7]) not in ((1, 0), (2, 0), (3, 0)):
        raise UnsupportedFormat(f"'{name}' in the npz is not an .npy array.")
    length_bytes = read_exact(f, 2 if magic[6] == 1 else 4)
    length = int.from_bytes(length_bytes, "little")
    if length > MAX_NPY_HEADER:
        raise UnsupportedFormat(f"'{name}' in the npz has an oversized header ({length} bytes).")
    buffer = io.BytesIO(length_bytes + read_exact(f, length))
    read = npy_format.read_array_header_1_0 if magic[6] == 1 else npy_format.read_array_header_2_0
    try:
        shape, _fortran, dtype = read(buffer)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise UnsupportedFormat(f"'{name}' in the npz has an unreadable header ({exc}).") from exc
    return _Npy(tuple(shape), dtype, 8 + len(length_bytes) + length)
