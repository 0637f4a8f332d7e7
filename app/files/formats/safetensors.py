"""safetensors: the header checked the way the safetensors loader will, then weights or data."""

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, TypeGuard

import numpy as np

from app.files import limits
from app.files.formats.accepted import Detected, Purpose
from app.files.formats.arrays import dataset_meta, label_meta, label_range, real_label_meta
from app.files.formats.errors import unsupported
from app.files.formats.streams import read_exact

MAX_SAFETENSORS_HEADER = 100_000_000  # what the safetensors loader itself accepts

# fmt: off
_ST_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_ST_FLOATS = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_ST_INTS = {
    "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
    "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
}
# fmt: on


class SafetensorsError(ValueError):
    pass


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offset of the data, counted from the start of the file
    end: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=object))


def header_length(head: bytes, size: int) -> int | None:
    """The header length if ``head`` starts a safetensors file of ``size`` bytes, else None."""
    if len(head) < 10:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if 2 <= n <= MAX_SAFETENSORS_HEADER and 8 + n <= size and head[8:9] == b"{":
        return int(n)
    return None


def detect_safetensors(path: Path, size: int, purpose: Purpose) -> Detected:
    with path.open("rb") as f:
        try:
            tensors = read_safetensors(f, size, "the file")
        except SafetensorsError as exc:
            raise unsupported(purpose, f"This safetensors file is invalid: {exc}.") from exc
        if purpose == "teacher":
            return Detected("safetensors", _weights_meta(tensors))
        return _safetensors_dataset(f, tensors)


def read_safetensors(stream: IO[bytes], size: int, where: str) -> list[_Tensor]:
    """Parse and check a safetensors header the way the safetensors loader will."""
    bounds = limits.current().limits
    raw = read_exact(stream, 8)
    (n,) = struct.unpack("<Q", raw)
    if not 2 <= n <= MAX_SAFETENSORS_HEADER or 8 + n > size:
        raise SafetensorsError(f"{where}: the header length {n} does not fit the file")
    if n > bounds.safetensors_header_bytes:
        raise SafetensorsError(
            f"{where}: the header is {n} bytes, more than the {bounds.safetensors_header_bytes} "
            "allowed (DISTILL_UPLOAD_MAX_SAFETENSORS_HEADER_BYTES)"
        )
    text = read_exact(stream, n)
    # Each tensor's entry names its data_offsets: count them before building Python objects.
    _check_tensor_count(text.count(b'"data_offsets"'), bounds.safetensors_tensors, where)
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise SafetensorsError(f"{where}: the header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    _check_tensor_count(len(header), bounds.safetensors_tensors, where)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{where}: __metadata__ must map names to strings")
    tensors = [_tensor_entry(name, entry, 8 + n, where) for name, entry in header.items()]
    _check_contiguous(tensors, size, 8 + n, where)
    return tensors


def _check_tensor_count(count: int, limit: int, where: str) -> None:
    if count > limit:
        raise SafetensorsError(
            f"{where}: the header describes more than the {limit} tensors allowed "
            "(DISTILL_UPLOAD_MAX_SAFETENSORS_TENSORS)"
        )


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice")
    return dict(pairs)


def _tensor_entry(name: str, entry: object, data_start: int, where: str) -> _Tensor:
    if not isinstance(entry, dict):
        raise SafetensorsError(f"{where}: tensor '{name}' is not described by an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _ST_BITS:
        raise SafetensorsError(f"{where}: tensor '{name}' has unknown dtype {dtype!r}")
    if not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
        raise SafetensorsError(f"{where}: tensor '{name}' has a malformed shape or data_offsets")
    tensor = _Tensor(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
    if tensor.numel * _ST_BITS[dtype] != 8 * (tensor.end - tensor.begin):
        raise SafetensorsError(
            f"{where}: tensor '{name}' has {tensor.end - tensor.begin} bytes "
            f"of data, which does not match its shape {list(shape)}"
        )
    return tensor


def _int_list(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )


def _check_contiguous(tensors: list[_Tensor], size: int, data_start: int, where: str) -> None:
    # The safetensors loader refuses holes and overlaps, and so does the upload.
    position = data_start
    for t in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if t.begin != position:
            raise SafetensorsError(f"{where}: tensor data overlaps or leaves gaps at '{t.name}'")
        position = t.end
    if position != size:
        raise SafetensorsError(
            f"{where}: the file is {size} bytes but its tensors end at "
            f"{position} (truncated or padded)"
        )


def _weights_meta(tensors: list[_Tensor]) -> dict:
    return {
        "tensors": len(tensors),
        "params": sum(t.numel for t in tensors),
        "dtypes": sorted({t.dtype for t in tensors}),
    }


def _safetensors_dataset(f: BinaryIO, tensors: list[_Tensor]) -> Detected:
    by_name = {t.name: t for t in tensors}
    x, y = by_name.get("x"), by_name.get("y")
    if x is None or x.dtype not in _ST_FLOATS or len(x.shape) < 2:
        found = ", ".join(f"{t.name} ({t.dtype}, {list(t.shape)})" for t in tensors) or "none"
        raise unsupported(
            "dataset",
            "A safetensors data set needs a float tensor 'x' shaped "
            f"(N, ...) with at least 2 dimensions; found tensors: {found}.",
        )
    rows = x.shape[0]
    meta = dataset_meta(rows, list(x.shape[1:]), _ST_FLOATS[x.dtype])
    if y is not None and y.dtype in _ST_FLOATS:
        meta |= real_label_meta(tuple(y.shape), rows, _ST_FLOATS[y.dtype], "Tensor 'y'")
    elif y is not None:
        if y.dtype not in _ST_INTS or y.shape != (rows,):
            raise unsupported(
                "dataset",
                f"Tensor 'y' must hold integer class ids shaped ({rows},) (or real-valued "
                "regression targets) "
                f"to match 'x'; it is {y.dtype} shaped {list(y.shape)}.",
            )
        f.seek(y.begin)
        dtype = np.dtype(_ST_INTS[y.dtype])
        meta |= label_meta(label_range(f, dtype, rows, "tensor 'y'"), dtype)
    return Detected("safetensors", meta)
