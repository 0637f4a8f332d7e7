"""Recognise an upload's format from its bytes, and refuse what would run code when loaded.

``detect`` reads only what it needs (headers, pickles, configs, a bounded sample of text rows)
and never executes anything from the file: pickles are walked by ``pickle_scan`` (opcodes only),
``.npy`` headers are parsed without loading data, JSON is parsed as data. Where a loader the
worker uses would execute strings from the file (torch.export's guards and symbolic shapes), those
strings are checked against the narrow grammar torch itself writes.
"""

import codecs
import csv
import io
import json
import posixpath
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Literal, TypeGuard, cast

import numpy as np
from numpy.lib import format as npy_format

from app.files.pickle_scan import (
    Allowed,
    PickleMalformed,
    scan_pickle,
    torchscript_allowed,
    weights_only_allowed,
)

Purpose = Literal["teacher", "dataset"]

ACCEPTED_FORMATS: dict[str, tuple[str, ...]] = {
    "teacher": ("torchscript", "torch_export", "state_dict", "safetensors", "hf_archive"),
    "dataset": ("npz", "safetensors", "csv", "jsonl"),
}
FORMAT_DESCRIPTIONS = {
    "torchscript": "TorchScript (torch.jit.save)",
    "torch_export": "torch.export (.pt2)",
    "state_dict": "a state_dict (torch.save of a dict of tensors)",
    "safetensors": "safetensors",
    "hf_archive": "a Hugging Face model directory as zip or tar.gz",
    "npz": "npz",
    "csv": "csv",
    "jsonl": "jsonl",
}

# Bounds on what detection reads, so a hostile or huge upload cannot exhaust the API process.
HEAD_BYTES = 64 * 1024
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
MAX_JSON_MEMBER = 64 * 1024 * 1024  # torch.export's model.json carries stack traces
MAX_CONFIG_JSON = 16 * 1024 * 1024
MAX_NPY_HEADER = 64 * 1024
MAX_ARCHIVE_MEMBERS = 100_000
MAX_UNCOMPRESSED = 20 * 1024**3
MAX_RATIO, RATIO_FLOOR = 100, 1024**3  # ratio checked only once an archive expands past 1 GiB
MAX_NESTING = 2  # an archive inside an archive (pt2 sample inputs) inside one more
TYPECHECK_ROWS = 10_000
MAX_LINE_CHARS = 16 * 1024 * 1024
MAX_CLASS_NAMES = 10_000
LABEL_CHUNK = 1 << 20


@dataclass(frozen=True)
class Detected:
    format: str
    meta: dict


class UnsupportedFormat(Exception):
    """Not a format this service accepts for the purpose; the message says what would be."""

    code = "unsupported_format"


class UnsafeFile(Exception):
    """Loading the file would run code (or escape its archive); nothing in it was executed."""

    code = "unsafe_file"


def accepted_formats(purpose: Purpose) -> str:
    """A sentence naming what an upload with this purpose may be, for error messages."""
    names = [FORMAT_DESCRIPTIONS[f] for f in ACCEPTED_FORMATS[purpose]]
    listed = ", ".join(names[:-1]) + f" or {names[-1]}"
    return f"A {'teacher' if purpose == 'teacher' else 'data set'} must be {listed}."


def detect(path: Path, purpose: Purpose) -> Detected:
    """The format of the upload at ``path`` and facts about it, from its content alone.

    Raises ``UnsupportedFormat`` for anything not accepted for ``purpose`` and ``UnsafeFile`` for
    anything whose loading would run code; both messages say what to do instead.
    """
    if purpose not in ACCEPTED_FORMATS:
        raise ValueError(f"unknown purpose {purpose!r}")
    size = path.stat().st_size
    if size == 0:
        raise _unsupported(purpose, "The file is empty.")
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    found = _sniff(path, head, size, purpose)
    if found.format not in ACCEPTED_FORMATS[purpose]:
        raise _wrong_purpose(found.format, purpose)
    return found


def _sniff(path: Path, head: bytes, size: int, purpose: Purpose) -> Detected:
    if _safetensors_header_length(head, size) is not None:
        return _detect_safetensors(path, size, purpose)
    if head.startswith(b"PK\x03\x04"):
        # torch.load and np.load both decide "zip" from these first bytes, so we do too.
        return _detect_zip(path, size, purpose)
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return _detect_tar(path, size, purpose)
    _refuse_if_pickle(path, head, purpose)
    if purpose == "dataset":
        return _detect_text(path, head)
    if _looks_like_text(head):
        raise _wrong_purpose("text", purpose)
    raise _unsupported(purpose, "This file is not in a format this service recognises.")


# --- errors -----------------------------------------------------------------------------------


def _unsupported(purpose: Purpose, reason: str) -> UnsupportedFormat:
    return UnsupportedFormat(f"{reason} {accepted_formats(purpose)}")


def _wrong_purpose(found: str, purpose: Purpose) -> UnsupportedFormat:
    other: Purpose = "dataset" if purpose == "teacher" else "teacher"
    what = "a csv or jsonl text file" if found == "text" else FORMAT_DESCRIPTIONS[found]
    kind = "teacher" if other == "teacher" else "data set"
    return UnsupportedFormat(
        f"This is {what}, which is a {kind} format; upload it with purpose '{other}'. "
        f"{accepted_formats(purpose)}"
    )


def _unsafe_pickle(where: str, offenders: list[str], advice: str) -> UnsafeFile:
    return UnsafeFile(
        f"The pickle in '{where}' imports {', '.join(offenders)}, so loading it would run code; "
        f"{advice}"
    )


_STATE_DICT_ADVICE = (
    "only tensors are accepted. Save model.state_dict() rather than the model object, or use "
    "torch.jit.save, torch.export.save or safetensors."
)
_TORCHSCRIPT_ADVICE = (
    "a TorchScript archive may reference only tensors and its own compiled classes. Re-save "
    "the model with torch.jit.save."
)
_EXPORT_ADVICE = (
    "only tensors are accepted. Export a model whose weights, constants and sample inputs are "
    "plain tensors."
)
_ARCHIVE_ADVICE = (
    "only tensors are accepted. Remove that file from the archive, or re-save it as safetensors."
)


@contextmanager
def _readable(purpose: Purpose, what: str) -> Iterator[None]:
    """Turn the errors of a damaged container into an answer the uploader can act on."""
    try:
        yield
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
        struct.error,
    ) as exc:
        raise _unsupported(purpose, f"The {what} is truncated or corrupt ({exc}).") from exc


# --- safetensors ------------------------------------------------------------------------------

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


def _safetensors_header_length(head: bytes, size: int) -> int | None:
    if len(head) < 10:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if 2 <= n <= MAX_SAFETENSORS_HEADER and 8 + n <= size and head[8:9] == b"{":
        return int(n)
    return None


def _read_safetensors(stream: IO[bytes], size: int, where: str) -> list[_Tensor]:
    """Parse and check a safetensors header the way the safetensors loader will."""
    raw = _read_exact(stream, 8)
    (n,) = struct.unpack("<Q", raw)
    if not 2 <= n <= MAX_SAFETENSORS_HEADER or 8 + n > size:
        raise _SafetensorsError(f"{where}: the header length {n} does not fit the file")
    try:
        header = json.loads(_read_exact(stream, n), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise _SafetensorsError(f"{where}: the header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _SafetensorsError(f"{where}: the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _SafetensorsError(f"{where}: __metadata__ must map names to strings")
    tensors = [_tensor_entry(name, entry, 8 + n, where) for name, entry in header.items()]
    _check_contiguous(tensors, size, 8 + n, where)
    return tensors


class _SafetensorsError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice")
    return dict(pairs)


def _tensor_entry(name: str, entry: object, data_start: int, where: str) -> _Tensor:
    if not isinstance(entry, dict):
        raise _SafetensorsError(f"{where}: tensor '{name}' is not described by an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _ST_BITS:
        raise _SafetensorsError(f"{where}: tensor '{name}' has unknown dtype {dtype!r}")
    if not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
        raise _SafetensorsError(f"{where}: tensor '{name}' has a malformed shape or data_offsets")
    tensor = _Tensor(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
    if tensor.numel * _ST_BITS[dtype] != 8 * (tensor.end - tensor.begin):
        raise _SafetensorsError(
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
            raise _SafetensorsError(f"{where}: tensor data overlaps or leaves gaps at '{t.name}'")
        position = t.end
    if position != size:
        raise _SafetensorsError(
            f"{where}: the file is {size} bytes but its tensors end at "
            f"{position} (truncated or padded)"
        )


def _detect_safetensors(path: Path, size: int, purpose: Purpose) -> Detected:
    with path.open("rb") as f:
        try:
            tensors = _read_safetensors(f, size, "the file")
        except _SafetensorsError as exc:
            raise _unsupported(purpose, f"This safetensors file is invalid: {exc}.") from exc
        if purpose == "teacher":
            return Detected("safetensors", _weights_meta(tensors))
        return _safetensors_dataset(f, tensors)


def _weights_meta(tensors: list[_Tensor]) -> dict:
    return {
        "tensors": len(tensors),
        "parameters": sum(t.numel for t in tensors),
        "dtypes": sorted({t.dtype for t in tensors}),
    }


def _safetensors_dataset(f: BinaryIO, tensors: list[_Tensor]) -> Detected:
    by_name = {t.name: t for t in tensors}
    x, y = by_name.get("x"), by_name.get("y")
    if x is None or x.dtype not in _ST_FLOATS or len(x.shape) < 2:
        found = ", ".join(f"{t.name} ({t.dtype}, {list(t.shape)})" for t in tensors) or "none"
        raise _unsupported(
            "dataset",
            "A safetensors data set needs a float tensor 'x' shaped "
            f"(N, ...) with at least 2 dimensions; found tensors: {found}.",
        )
    rows = x.shape[0]
    meta = _dataset_meta(rows, list(x.shape[1:]), _ST_FLOATS[x.dtype])
    if y is not None:
        if y.dtype not in _ST_INTS or y.shape != (rows,):
            raise _unsupported(
                "dataset",
                f"Tensor 'y' must hold integer class ids shaped ({rows},) "
                f"to match 'x'; it is {y.dtype} shaped {list(y.shape)}.",
            )
        f.seek(y.begin)
        dtype = np.dtype(_ST_INTS[y.dtype])
        meta |= _label_meta(_label_range(f, dtype, rows, "tensor 'y'"), dtype)
    return Detected("safetensors", meta)


def _dataset_meta(rows: int, sample_shape: list[int], x_dtype: str) -> dict:
    if rows < 1:
        raise _unsupported("dataset", "The data set has no rows.")
    return {
        "rows": rows,
        "sample_shape": sample_shape,
        "x_dtype": x_dtype,
        "has_labels": False,
        "num_classes": None,
    }


def _label_range(stream: IO[bytes], dtype: np.dtype, count: int, where: str) -> tuple[int, int]:
    """Smallest and largest label, streamed in chunks so a huge ``y`` never sits in memory."""
    lo, hi = None, None
    remaining = count
    while remaining:
        n = min(remaining, LABEL_CHUNK)
        chunk = np.frombuffer(_read_exact(stream, n * dtype.itemsize), dtype=dtype)
        lo = int(chunk.min()) if lo is None else min(lo, int(chunk.min()))
        hi = int(chunk.max()) if hi is None else max(hi, int(chunk.max()))
        remaining -= n
    if lo is None or hi is None:
        raise _unsupported("dataset", f"{where} is empty.")
    if lo < 0:
        raise _unsupported("dataset", f"{where} holds class id {lo}; class ids must be 0 or more.")
    return lo, hi


def _label_meta(label_range: tuple[int, int], dtype: np.dtype) -> dict:
    return {"has_labels": True, "num_classes": label_range[1] + 1, "label_dtype": dtype.name}


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise EOFError(f"expected {n} bytes, found {len(data)}")
        data += more
    return data


# --- archives: what every zip and tar must satisfy --------------------------------------------


class _ArchiveGuard:
    """Checks members as they are listed: paths that stay inside, no links, no bombs."""

    def __init__(self, archive_bytes: int, where: str) -> None:
        self.archive_bytes = archive_bytes
        self.where = where
        self.names: set[str] = set()
        self.total = 0

    def admit(self, name: str, size: int, *, link: bool = False, special: bool = False) -> None:
        if _escapes(name):
            raise UnsafeFile(
                f"The {self.where} member '{name}' has an absolute path or climbs "
                "out of the archive with '..'; archives must stay inside their own "
                "folder."
            )
        if link or special:
            kind = "a link" if link else "a device or pipe"
            raise UnsafeFile(
                f"The {self.where} member '{name}' is {kind}; archives may hold "
                "only regular files and folders."
            )
        if name in self.names:
            raise UnsafeFile(
                f"The {self.where} lists '{name}' twice; readers disagree on which "
                "copy counts, so the archive is refused."
            )
        self.names.add(name)
        if len(self.names) > MAX_ARCHIVE_MEMBERS:
            raise UnsafeFile(f"The {self.where} has more than {MAX_ARCHIVE_MEMBERS} members.")
        self.total += size
        self._check_total()

    def _check_total(self) -> None:
        ratio = self.total / max(self.archive_bytes, 1)
        if self.total > MAX_UNCOMPRESSED or (self.total > RATIO_FLOOR and ratio > MAX_RATIO):
            raise UnsafeFile(
                f"The {self.where} expands to {self.total} bytes from "
                f"{self.archive_bytes} (more than {MAX_UNCOMPRESSED} bytes or "
                f"{MAX_RATIO}x); it looks like an archive bomb."
            )


def _escapes(name: str) -> bool:
    path = name.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path) or "\x00" in path:
        return True
    return ".." in path.split("/")


def _guard_zip(zf: zipfile.ZipFile, archive_bytes: int, where: str) -> list[zipfile.ZipInfo]:
    guard = _ArchiveGuard(archive_bytes, where)
    infos = zf.infolist()
    for info in infos:
        if info.flag_bits & 0x1:
            raise UnsupportedFormat(
                f"The {where} member '{info.filename}' is encrypted; upload an unencrypted archive."
            )
        mode = info.external_attr >> 16
        guard.admit(info.filename, info.file_size, link=stat.S_ISLNK(mode))
    return infos


def _files(infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    return [i for i in infos if not i.is_dir()]


def _single_root(names: list[str]) -> str | None:
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) == 1 and all("/" in n for n in names):
        return roots.pop()
    return None


# --- pickles inside archives ------------------------------------------------------------------

_PICKLE_PROTOCOLS = {2, 3, 4, 5}
_LEGACY_TORCH_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_TORCH_RAW_STORAGE = re.compile(r"(.*/)?data/\d+")


@dataclass(frozen=True)
class _ScanRules:
    """Which archive members a loader unpickles (scanned strictly) and which are raw bytes."""

    allowed: Allowed
    loaded: Callable[[str], bool]
    raw: Callable[[str], bool]
    advice: str


def _torch_zip_rules(allowed: Allowed, advice: str) -> _ScanRules:
    # torch.load / torch.jit.load unpickle data.pkl, constants.pkl, *.debug_pkl and the like;
    # data/<n> records are raw tensor bytes that only look like anything by chance.
    return _ScanRules(
        allowed=allowed,
        loaded=lambda name: name.endswith("pkl"),
        raw=lambda name: _TORCH_RAW_STORAGE.fullmatch(name) is not None,
        advice=advice,
    )


def _scan_zip(zf: zipfile.ZipFile, rules: _ScanRules, where: str, depth: int) -> None:
    for info in _files(zf.infolist()):
        if rules.raw(info.filename) or info.file_size == 0:
            continue
        with zf.open(info) as member:
            _scan_member(member, f"{where}{info.filename}", rules, info.filename, depth, None)


def _scan_member(
    stream: IO[bytes],
    where: str,
    rules: _ScanRules,
    name: str,
    depth: int,
    spool_dir: Path | None,
) -> None:
    """Scan one member. Loaded ones must be clean pickles or torch zips; for the rest, anything
    that looks like a pickle is scanned too, since somebody may load it later."""
    head = _peek(stream, 16)
    if head.startswith(b"PK\x03\x04"):
        _scan_nested_zip(stream, where, rules, depth, spool_dir)
    elif rules.loaded(name):
        _scan_bare_pickle(stream, head, where, rules, strict=True)
    elif head[:1] == b"\x80" and head[1:2] and head[1] in _PICKLE_PROTOCOLS:
        _scan_bare_pickle(stream, head, where, rules, strict=False)


def _scan_bare_pickle(
    stream: IO[bytes], head: bytes, where: str, rules: _ScanRules, *, strict: bool
) -> None:
    # Legacy torch.save files are five pickles followed by raw storage bytes.
    legacy = head.startswith(b"\x80") and _LEGACY_TORCH_MAGIC in head
    limit = 5 if legacy else (None if strict else 1)
    try:
        offenders = scan_pickle(
            cast(BinaryIO, stream), allowed=rules.allowed, max_pickles=limit, report_partial=strict
        )
    except PickleMalformed as exc:
        if not strict:
            return  # not actually a pickle: nothing would unpickle it
        raise UnsupportedFormat(
            f"The pickle in '{where}' is truncated or corrupt ({exc})."
        ) from exc
    if offenders:
        raise _unsafe_pickle(where, offenders, rules.advice)


def _scan_nested_zip(
    stream: IO[bytes], where: str, rules: _ScanRules, depth: int, spool_dir: Path | None
) -> None:
    if depth >= MAX_NESTING:
        raise UnsafeFile(f"'{where}' nests archives more than {MAX_NESTING} deep.")
    with _spooled(stream, spool_dir) as seekable:
        size = _stream_size(seekable)
        with zipfile.ZipFile(seekable) as inner:
            _guard_zip(inner, size, f"archive '{where}'")
            nested = _torch_zip_rules(rules.allowed, rules.advice)
            _scan_zip(inner, nested, f"{where}/", depth + 1)


@contextmanager
def _spooled(stream: IO[bytes], spool_dir: Path | None) -> Iterator[IO[bytes]]:
    """Zip readers seek; a tar member stream from a gzip would rewind the whole archive on every
    backward seek, so it is copied to a temporary file next to the upload first."""
    if spool_dir is None:
        yield stream
        return
    with tempfile.TemporaryFile(dir=spool_dir) as tmp:
        shutil.copyfileobj(stream, tmp)
        tmp.seek(0)
        yield cast(IO[bytes], tmp)


def _stream_size(stream: IO[bytes]) -> int:
    position = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    return position


def _peek(stream: IO[bytes], n: int) -> bytes:
    # ZipExtFile and tarfile's member streams are buffered readers that can peek.
    peek = cast(Callable[[int], bytes], getattr(stream, "peek"))  # noqa: B009
    return bytes(peek(n)[:n])


# --- top-level pickles ------------------------------------------------------------------------


def _refuse_if_pickle(path: Path, head: bytes, purpose: Purpose) -> None:
    """A bare pickle is never accepted; say whether it is merely old-fashioned or dangerous."""
    strict = head[:1] == b"\x80"
    legacy = strict and _LEGACY_TORCH_MAGIC in head[:32]
    with path.open("rb") as f:
        try:
            limit = 5 if legacy else None
            offenders = scan_pickle(
                f, allowed=weights_only_allowed, max_pickles=limit, report_partial=strict
            )
        except PickleMalformed as exc:
            if not strict:
                return  # not a pickle at all: let the other detectors have it
            reason = f"This looks like a pickle, but it is truncated or corrupt ({exc})."
            raise _unsupported(purpose, reason) from exc
    if offenders:
        raise _unsafe_pickle("this file", offenders, _STATE_DICT_ADVICE)
    kind = "a torch.save file in the legacy (pre-1.6) format" if legacy else "a bare pickle"
    raise _unsupported(
        purpose,
        f"This is {kind}; re-save it with torch.save's default (zip) format or as safetensors.",
    )


# --- zip containers ---------------------------------------------------------------------------


def _detect_zip(path: Path, size: int, purpose: Purpose) -> Detected:
    with _readable(purpose, "zip archive"), zipfile.ZipFile(path) as zf:
        infos = _guard_zip(zf, size, "zip archive")
        names = [i.filename for i in infos]
        root = _single_root(names)
        if root is not None and f"{root}/archive_format" in names:
            return _detect_torch_export(zf, root, purpose)
        if root is not None and f"{root}/data.pkl" in names:
            if any(n.startswith(f"{root}/code/") for n in names):
                rules = _torch_zip_rules(torchscript_allowed, _TORCHSCRIPT_ADVICE)
                return _detect_torch_zip(zf, "torchscript", rules)
            rules = _torch_zip_rules(weights_only_allowed, _STATE_DICT_ADVICE)
            return _detect_torch_zip(zf, "state_dict", rules)
        files = _files(infos)
        if files and all(i.filename.endswith(".npy") for i in files):
            return _detect_npz(zf, files, purpose)
        if _hf_root(names) is not None:
            return _detect_hf_zip(zf, files)
        raise _unsupported(
            purpose,
            "This zip archive is neither a PyTorch file, an npz, nor a "
            "Hugging Face model directory (no config.json).",
        )


def _detect_torch_zip(zf: zipfile.ZipFile, fmt: str, rules: _ScanRules) -> Detected:
    _scan_zip(zf, rules, "", depth=0)
    storages = [i for i in _files(zf.infolist()) if rules.raw(i.filename)]
    return Detected(fmt, _storage_meta(storages))


def _storage_meta(storages: list[zipfile.ZipInfo]) -> dict:
    return {"storages": len(storages), "storage_bytes": sum(i.file_size for i in storages)}


# --- torch.export (.pt2) ----------------------------------------------------------------------


def _detect_torch_export(zf: zipfile.ZipFile, root: str, purpose: Purpose) -> Detected:
    files = _files(zf.infolist())
    if _read_member(zf, f"{root}/archive_format", 16).strip() != b"pt2":
        raise _unsupported(purpose, "This zip has an archive_format record that is not 'pt2'.")
    if any(i.filename.startswith(f"{root}/data/aotinductor/") for i in files):
        raise UnsafeFile(
            "This .pt2 holds AOTInductor-compiled native code, which torch.export.load "
            "would load and run; save the model with torch.export.save alone."
        )
    models = [
        i for i in files if re.fullmatch(rf"{re.escape(root)}/models/[^/]+\.json", i.filename)
    ]
    if not models:
        raise _unsupported(purpose, "This .pt2 archive has no models/*.json program.")
    for info in models:
        _check_export_program(_json_member(zf, info, MAX_JSON_MEMBER, purpose), info.filename)
    raw = _pt2_raw_records(zf, root, files, purpose)
    rules = _ScanRules(
        allowed=weights_only_allowed,
        # torch.export.load hands every non-raw record under data/ to torch.load or pickle.loads.
        loaded=lambda name: name.startswith(f"{root}/data/") and not name.endswith(".json"),
        raw=lambda name: name in raw or name.endswith(".json"),
        advice=_EXPORT_ADVICE,
    )
    _scan_zip(zf, rules, "", depth=0)
    meta = _storage_meta([i for i in files if i.filename in raw])
    return Detected("torch_export", {"models": [_stem(i.filename) for i in models]} | meta)


def _pt2_raw_records(
    zf: zipfile.ZipFile, root: str, files: list[zipfile.ZipInfo], purpose: Purpose
) -> set[str]:
    """Records the weights/constants configs declare as raw tensor bytes (``use_pickle`` false);
    the loader reads those with ``torch.frombuffer``-like calls, never with pickle."""
    raw: set[str] = set()
    config = re.compile(rf"{re.escape(root)}/data/(weights|constants)/[^/]+_config\.json")
    for info in files:
        match = config.fullmatch(info.filename)
        if not match:
            continue
        entries = _json_member(zf, info, MAX_JSON_MEMBER, purpose).get("config", {})
        for payload in entries.values() if isinstance(entries, dict) else ():
            path_name = payload.get("path_name") if isinstance(payload, dict) else None
            if isinstance(payload, dict) and _is_raw_payload(payload, path_name):
                raw.add(f"{root}/data/{match.group(1)}/{path_name}")
    return raw


def _is_raw_payload(payload: dict, path_name: object) -> bool:
    # Mirrors torch/export/pt2_archive/_package.py: weight_* and tensor_* records without
    # use_pickle are raw bytes; custom_obj_* and opaque_obj_* are always unpickled.
    return (
        isinstance(path_name, str)
        and payload.get("use_pickle") is False
        and path_name.startswith(("weight_", "tensor_"))
        and "/" not in path_name
    )


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Torch writes symbolic shapes with sympy's srepr and torch.export.load parses them with
# sympy.sympify, which evaluates Python; guards_code is exec'd when the program is unlifted. Only
# the vocabulary torch itself produces passes, so neither can carry code.
_SYMPY_NAMES = _words(
    "Symbol Integer Float Rational Add Mul Pow Mod Max Min Abs Eq Ne Lt Le Gt Ge And Or Not "
    "StrictLessThan StrictGreaterThan LessThan GreaterThan Equality Unequality BooleanTrue "
    "BooleanFalse true false oo zoo nan Infinity NegativeInfinity NaN floor ceiling sqrt "
    "Piecewise ExprCondPair ITE Tuple FloorDiv ModularIndexing Where PythonMod CleanDiv "
    "CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv "
    "IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat "
    "Identity positive negative nonnegative nonpositive integer real finite infinite zero "
    "nonzero commutative precision even odd rational extended_real True False None"
)
_GUARD_NAMES = _SYMPY_NAMES | _words(
    "L size stride storage_offset dim numel math isnan isinf inf int float and or not"
)
_SYMBOL_NAME = re.compile(r"[a-z]{1,4}\d+")
_SAFE_STRING = re.compile(r"[A-Za-z0-9_.+\- ]*")
_SAFE_OPS = _words("( ) [ ] , = + - * / ** // % < > <= >= == != & | ~")
_OPERATOR_TARGETS = _words(
    "eq ne le ge lt gt neg pos mul add sub floordiv mod pow truediv and_ or_ lshift rshift "
    "getitem not_ abs"
)
_TORCH_TARGETS = frozenset(
    {
        "torch.autograd.grad_mode.set_grad_enabled",
        "torch._C._set_grad_enabled",
        "torch.amp.autocast_mode._enter_autocast",
        "torch.amp.autocast_mode._exit_autocast",
        "torch.fx.experimental.symbolic_shapes.cast_symbool_to_symint_guardless",
    }
)


def _check_export_program(program: object, where: str) -> None:
    pending = [program]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str":
                    _check_expression(value, _SYMPY_NAMES, where, attributes=False)
                elif key == "guards_code":
                    for guard in value if isinstance(value, list) else [value]:
                        _check_expression(guard, _GUARD_NAMES, where, attributes=True)
                elif key == "target" and "inputs" in node:
                    _check_op_target(value, where)
                pending.append(value)


def _check_expression(text: object, names: frozenset[str], where: str, *, attributes: bool) -> None:
    """Allow one line of allowlisted names, numbers, plain strings and operators; no dunders,
    and attribute access (``L['x'].size()``) only in guards."""
    if not isinstance(text, str) or len(text) > 10_000 or any(c in text for c in "\n\r"):
        raise _unsafe_expression(text, where)
    if "__" in text:
        raise _unsafe_expression(text, where)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise _unsafe_expression(text, where) from exc
    ops = _SAFE_OPS | {"."} if attributes else _SAFE_OPS
    if not all(_safe_token(tok, names, ops) for tok in tokens):
        raise _unsafe_expression(text, where)


def _safe_token(tok: tokenize.TokenInfo, names: frozenset[str], ops: frozenset[str]) -> bool:
    kind, value = tok.type, tok.string
    if kind == tokenize.NAME:
        return value in names or _SYMBOL_NAME.fullmatch(value) is not None
    if kind == tokenize.NUMBER:
        return len(value) <= 40
    if kind == tokenize.STRING:
        # Plain quotes only (no f-strings); torch pastes guards into a quoted message too.
        return value[:1] in ("'", '"') and _SAFE_STRING.fullmatch(value[1:-1]) is not None
    if kind == tokenize.OP:
        return value in ops
    return kind in (tokenize.NEWLINE, tokenize.ENDMARKER) and not value.strip()


def _unsafe_expression(text: object, where: str) -> UnsafeFile:
    shown = repr(text)[:200]
    return UnsafeFile(
        f"'{where}' carries the expression {shown}, which torch.export.load would "
        "evaluate as Python and which torch.export never writes; re-export the "
        "model with torch.export.save."
    )


def _check_op_target(target: object, where: str) -> None:
    if isinstance(target, str) and "__" not in target and _known_target(target):
        return
    raise UnsafeFile(
        f"'{where}' calls {str(target)[:200]!r}, which is not a PyTorch operator; "
        "re-export the model with torch.export.save."
    )


def _known_target(target: str) -> bool:
    parts = target.split(".")
    if not all(p.isidentifier() for p in parts):
        return False
    if parts[:2] == ["torch", "ops"]:
        # torch.ops.<namespace>.<op>[.<overload>]; torch.ops.load_library would load a library.
        return len(parts) in (4, 5) and parts[2] not in ("load_library", "import_module")
    if len(parts) == 2 and parts[0] == "_operator":
        return parts[1] in _OPERATOR_TARGETS
    if len(parts) == 2 and parts[0] == "math":
        return True
    if len(parts) == 2 and parts[0] == "torch":
        return parts[1].startswith(("sym_", "_sym_"))
    return target in _TORCH_TARGETS


# --- npz --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Npy:
    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int


def _detect_npz(zf: zipfile.ZipFile, files: list[zipfile.ZipInfo], purpose: Purpose) -> Detected:
    arrays = {info.filename.removesuffix(".npy"): (info, _npy_member(zf, info)) for info in files}
    if purpose != "dataset":
        raise _wrong_purpose("npz", purpose)
    x, y = arrays.get("x"), arrays.get("y")
    if x is None or x[1].dtype.kind != "f" or len(x[1].shape) < 2:
        raise _unsupported(
            "dataset",
            "An npz data set needs a float array 'x' shaped (N, ...) "
            "with at least 2 dimensions: np.savez(path, x=x, y=y).",
        )
    rows = x[1].shape[0]
    meta = _dataset_meta(rows, list(x[1].shape[1:]), x[1].dtype.name)
    if y is not None:
        info, header = y
        if header.dtype.kind not in "iu" or header.shape != (rows,):
            raise _unsupported(
                "dataset",
                f"Array 'y' must hold integer class ids shaped ({rows},) "
                f"to match 'x'; it is {header.dtype} shaped {list(header.shape)}.",
            )
        with zf.open(info) as f:
            f.seek(header.data_offset)
            meta |= _label_meta(_label_range(f, header.dtype, rows, "array 'y'"), header.dtype)
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
    magic = _read_exact(f, 8)
    if magic[:6] != b"\x93NUMPY" or (magic[6], magic[7]) not in ((1, 0), (2, 0), (3, 0)):
        raise UnsupportedFormat(f"'{name}' in the npz is not an .npy array.")
    length_bytes = _read_exact(f, 2 if magic[6] == 1 else 4)
    length = int.from_bytes(length_bytes, "little")
    if length > MAX_NPY_HEADER:
        raise UnsupportedFormat(f"'{name}' in the npz has an oversized header ({length} bytes).")
    buffer = io.BytesIO(length_bytes + _read_exact(f, length))
    read = npy_format.read_array_header_1_0 if magic[6] == 1 else npy_format.read_array_header_2_0
    try:
        shape, _fortran, dtype = read(buffer)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise UnsupportedFormat(f"'{name}' in the npz has an unreadable header ({exc}).") from exc
    return _Npy(tuple(shape), dtype, 8 + len(length_bytes) + length)


# --- Hugging Face model directories (zip or tar) ----------------------------------------------

_HF_WEIGHTS = re.compile(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)")
_TOKENIZER_FILES = _words(
    "tokenizer.json tokenizer_config.json vocab.txt vocab.json merges.txt tokenizer.model "
    "spiece.model sentencepiece.bpe.model"
)
_HF_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_REMOTE_CODE_CONFIGS = ("config.json", "tokenizer_config.json")


def _hf_root(names: list[str] | set[str]) -> str | None:
    """The folder holding config.json: the archive root, or its one top-level folder."""
    if "config.json" in names:
        return ""
    roots = [n.removesuffix("/config.json") for n in names if n.count("/") == 1]
    roots = [r for r in roots if f"{r}/config.json" in names]
    return roots[0] if len(roots) == 1 else None


class _HfScan:
    """Collects what an HF model directory needs while its members stream past once."""

    def __init__(self, spool_dir: Path | None) -> None:
        self.spool_dir = spool_dir
        self.names: set[str] = set()
        self.configs: dict[str, dict] = {}
        self.rules = _ScanRules(
            allowed=weights_only_allowed,
            loaded=lambda name: name.endswith(_HF_PICKLES),
            raw=lambda name: name.endswith(".safetensors"),
            advice=_ARCHIVE_ADVICE,
        )

    def add(self, name: str, size: int, stream: IO[bytes]) -> None:
        name = name.removeprefix("./")  # `tar -C model .` writes ./config.json
        self.names.add(name)
        if name.count("/") <= 1 and posixpath.basename(name) in _REMOTE_CODE_CONFIGS:
            self.configs[name] = _parse_config(stream, size, name)
        elif name.endswith(".safetensors"):
            try:
                _read_safetensors(stream, size, name)
            except _SafetensorsError as exc:
                raise UnsupportedFormat(f"The archive's {exc}.") from exc
        elif size:
            _scan_member(stream, name, self.rules, name, 0, self.spool_dir)

    def result(self) -> Detected:
        root = _hf_root(self.names)
        if root is None:
            raise _unsupported(
                "teacher",
                "This archive has no config.json at its root or in "
                "one top-level folder, so it is not a Hugging Face model.",
            )
        prefix = f"{root}/" if root else ""
        for name in _REMOTE_CODE_CONFIGS:
            if "auto_map" in self.configs.get(prefix + name, {}):
                raise UnsafeFile(
                    f"'{prefix}{name}' has an auto_map, so loading the model needs "
                    "trust_remote_code and would run the archive's Python code; "
                    "only models built into transformers are accepted."
                )
        files = {n.removeprefix(prefix) for n in self.names if n.startswith(prefix)}
        if not any(_HF_WEIGHTS.fullmatch(f) for f in files):
            raise _unsupported(
                "teacher",
                "The archive's config.json has no weights beside it "
                "(model.safetensors or pytorch_model.bin).",
            )
        return Detected("hf_archive", _hf_meta(self.configs[prefix + "config.json"], root, files))


def _parse_config(stream: IO[bytes], size: int, name: str) -> dict:
    if size > MAX_CONFIG_JSON:
        raise UnsupportedFormat(f"'{name}' is larger than {MAX_CONFIG_JSON} bytes.")
    try:
        config = json.loads(stream.read(MAX_CONFIG_JSON))
    except (ValueError, RecursionError) as exc:
        raise UnsupportedFormat(f"'{name}' is not valid JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise UnsupportedFormat(f"'{name}' must hold a JSON object.")
    return config


def _hf_meta(config: dict, root: str, files: set[str]) -> dict:
    labels = config.get("id2label")
    return {
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
        "num_labels": len(labels) if isinstance(labels, dict) else None,
        "has_tokenizer": bool(files & _TOKENIZER_FILES),
        "root": root,
        "weights": "safetensors" if any(f.endswith(".safetensors") for f in files) else "bin",
    }


def _detect_hf_zip(zf: zipfile.ZipFile, files: list[zipfile.ZipInfo]) -> Detected:
    scan = _HfScan(spool_dir=None)  # zip member streams seek cheaply enough
    for info in files:
        with zf.open(info) as member:
            scan.add(info.filename, info.file_size, member)
    return scan.result()


def _detect_tar(path: Path, size: int, purpose: Purpose) -> Detected:
    if purpose != "teacher":
        reason = (
            "This is a gzip or tar archive, which only a teacher (a Hugging Face model "
            "directory) may be; upload data sets uncompressed."
        )
        raise _unsupported(purpose, reason)
    scan = _HfScan(spool_dir=path.parent)
    with _readable(purpose, "tar archive"), tarfile.open(path, "r:*") as tar:
        guard = _ArchiveGuard(size, "tar archive")
        for member in tar:
            special = not (member.isreg() or member.isdir() or member.issym() or member.islnk())
            guard.admit(
                member.name, member.size, link=member.issym() or member.islnk(), special=special
            )
            stream = tar.extractfile(member) if member.isreg() else None
            if stream is not None:
                with stream:
                    scan.add(member.name, member.size, stream)
    return scan.result()


# --- text: csv and jsonl ----------------------------------------------------------------------


def _looks_like_text(head: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _detect_text(path: Path, head: bytes) -> Detected:
    if not _looks_like_text(head):
        raise _unsupported("dataset", "This file is neither a known binary format nor UTF-8 text.")
    first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    if first == b"[":
        raise _unsupported(
            "dataset",
            "This is a JSON array; upload JSON Lines instead: one "
            '{"text": ..., "label": ...} object per line.',
        )
    try:
        return _detect_jsonl(path) if first == b"{" else _detect_csv(path)
    except UnicodeDecodeError as exc:
        reason = f"This text is not UTF-8 (byte {exc.start} of a line cannot be decoded)."
        raise _unsupported("dataset", reason) from exc


def _text_lines(path: Path) -> Iterator[str]:
    """Lines of UTF-8 text, each bounded so that one endless line cannot fill memory."""
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        number = 0
        while line := f.readline(MAX_LINE_CHARS):
            number += 1
            if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
                raise _unsupported(
                    "dataset", f"Line {number} is longer than {MAX_LINE_CHARS} characters."
                )
            yield line


class _Labels:
    """Class labels as they stream past: integer ids if every one parses, else class names."""

    def __init__(self) -> None:
        self.ints_only = True
        self.max_id = -1
        self.negative: tuple[int, int] | None = None  # (line, value) of the first negative id
        self.names: set[str] = set()
        self.too_many_names = False

    def add(self, raw: str, line: int) -> None:
        value = raw.strip()
        if not value:
            raise _unsupported("dataset", f"Line {line} has an empty label.")
        if self.ints_only:
            self._add_id(value, line)
        if len(self.names) < MAX_CLASS_NAMES:
            self.names.add(value)
        elif value not in self.names:
            self.too_many_names = True

    def _add_id(self, value: str, line: int) -> None:
        try:
            number = int(value)
        except ValueError:
            self.ints_only = False
            return
        self.max_id = max(self.max_id, number)
        if number < 0 and self.negative is None:
            self.negative = (line, number)

    def meta(self) -> dict:
        if self.ints_only:
            if self.negative is not None:
                line, value = self.negative
                raise _unsupported(
                    "dataset",
                    f"Line {line} has label {value}; integer labels are "
                    "class ids and must be 0 or more.",
                )
            return {"num_classes": self.max_id + 1, "classes": None}
        if self.too_many_names:
            return {"num_classes": None, "classes": None}
        return {"num_classes": len(self.names), "classes": sorted(self.names)}


def _detect_csv(path: Path) -> Detected:
    reader = csv.reader(_text_lines(path))
    try:
        header = _csv_header(next(reader, None))
        label_at = header.index("label") if "label" in header else None
        labels = _Labels()
        rows = 0
        for row in reader:
            if not row:
                continue  # csv yields [] for a blank line
            rows += 1
            _check_csv_row(row, header, label_at, reader.line_num, typecheck=rows <= TYPECHECK_ROWS)
            if label_at is not None:
                labels.add(row[label_at], reader.line_num)
    except csv.Error as exc:
        raise _unsupported("dataset", f"Line {reader.line_num} is not valid csv ({exc}).") from exc
    if rows == 0:
        raise _unsupported("dataset", "The csv file has a header but no data rows.")
    features = [h for i, h in enumerate(header) if i != label_at]
    meta = {
        "rows": rows,
        "sample_shape": [len(features)],
        "has_labels": label_at is not None,
        "columns": features,
        "num_classes": None,
        "classes": None,
    }
    return Detected("csv", meta | (labels.meta() if label_at is not None else {}))


def _csv_header(row: list[str] | None) -> list[str]:
    if not row:
        raise _unsupported("dataset", "The csv file is empty; it needs a header row.")
    header = [name.strip() for name in row]
    if any(not name for name in header):
        raise _unsupported("dataset", "The csv header has an empty column name.")
    if len(set(header)) != len(header):
        raise _unsupported("dataset", "The csv header names a column twice.")
    if all(_is_number(name) for name in header):
        raise _unsupported(
            "dataset",
            "The first csv row looks like data; add a header row "
            "naming the columns (and 'label' for the class column).",
        )
    if header == ["label"]:
        raise _unsupported("dataset", "The csv file has a label column but no feature columns.")
    return header


def _check_csv_row(
    row: list[str], header: list[str], label_at: int | None, line: int, *, typecheck: bool
) -> None:
    if len(row) != len(header):
        raise _unsupported(
            "dataset", f"Line {line} has {len(row)} columns; the header has {len(header)}."
        )
    if not typecheck:
        return
    for i, value in enumerate(row):
        if i != label_at and not _is_number(value):
            raise _unsupported(
                "dataset",
                f"Line {line}, column '{header[i]}': {value[:50]!r} "
                "is not a finite number; every column but 'label' must be "
                "numeric.",
            )


def _is_number(value: str) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    return number - number == 0  # false for inf and nan


def _detect_jsonl(path: Path) -> Detected:
    rows, labelled, max_label = 0, None, -1
    for number, line in enumerate(_text_lines(path), start=1):
        if not line.strip():
            continue
        record = _jsonl_record(line, number)
        has_label = "label" in record
        if labelled is not None and has_label != labelled:
            raise _unsupported(
                "dataset",
                f"Line {number} {'has' if has_label else 'lacks'} a "
                "label, unlike the lines before it; label all lines or none.",
            )
        labelled = has_label
        max_label = max(max_label, record.get("label", -1))
        rows += 1
    if rows == 0:
        raise _unsupported("dataset", "The jsonl file has no records.")
    return Detected(
        "jsonl",
        {
            "rows": rows,
            "has_labels": bool(labelled),
            "num_classes": max_label + 1 if labelled else None,
        },
    )


def _jsonl_record(line: str, number: int) -> dict:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise _unsupported("dataset", f"Line {number} is not valid JSON ({exc}).") from exc
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise _unsupported("dataset", f'Line {number} must be an object with a string "text".')
    label = record.get("label")
    if "label" in record and (not isinstance(label, int) or isinstance(label, bool) or label < 0):
        raise _unsupported(
            "dataset",
            f'Line {number}: "label" must be a class id, an integer 0 or more (got {label!r}).',
        )
    return record


# --- small helpers ----------------------------------------------------------------------------


def _read_member(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    with zf.open(name) as f:
        return f.read(limit)


def _json_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, purpose: Purpose) -> dict:
    if info.file_size > limit:
        raise _unsupported(purpose, f"'{info.filename}' is larger than {limit} bytes.")
    try:
        with zf.open(info) as f:
            value = json.loads(f.read(limit))
    except (ValueError, RecursionError) as exc:
        raise _unsupported(purpose, f"'{info.filename}' is not valid JSON ({exc}).") from exc
    if not isinstance(value, dict):
        raise _unsupported(purpose, f"'{info.filename}' must hold a JSON object.")
    return value


def _stem(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name))[0]
