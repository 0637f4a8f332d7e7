"""Recognise an upload's format from its bytes, and refuse what would run code when loaded.

``detect`` reads only what it needs (headers, pickles, configs, a bounded sample of text rows)
and never executes anything from the file: pickles are walked by ``pickle_scan`` (opcodes only),
``.npy`` headers are parsed without loading data, JSON is parsed as data. Where a loader the
worker uses would execute strings from the file (torch.export's guards and symbolic shapes), those
strings are checked against the narrow grammar torch itself writes.

This module only dispatches on the first bytes; each format's checks live in its own module.
"""

import zipfile
from pathlib import Path

from app.files import limits
from app.files.formats.accepted import (
    ACCEPTED_FORMATS,
    FORMAT_DESCRIPTIONS,
    Detected,
    Purpose,
    accepted_formats,
)
from app.files.formats.archives import files, guard_zip, single_root
from app.files.formats.errors import (
    OVER_BUDGET_ADVICE,
    UnsafeFile,
    UnsupportedFormat,
    readable,
    unsupported,
    wrong_purpose,
)
from app.files.formats.gguf import detect_gguf, is_gguf
from app.files.formats.hf import detect_hf_tar, detect_hf_zip, hf_root
from app.files.formats.npz import detect_npz
from app.files.formats.pickles import refuse_if_pickle
from app.files.formats.pt2 import detect_torch_export
from app.files.formats.safetensors import detect_safetensors, header_length
from app.files.formats.text import detect_text, looks_like_text
from app.files.formats.torch_formats import detect_torch_zip
from app.files.limits import Limits

__all__ = [
    "ACCEPTED_FORMATS",
    "FORMAT_DESCRIPTIONS",
    "Detected",
    "Limits",
    "Purpose",
    "UnsafeFile",
    "UnsupportedFormat",
    "accepted_formats",
    "detect",
]

HEAD_BYTES = 64 * 1024


def detect(path: Path, purpose: Purpose, bounds: Limits | None = None) -> Detected:
    """The format of the upload at ``path`` and facts about it, from its content alone.

    Raises ``UnsupportedFormat`` for anything not accepted for ``purpose`` and ``UnsafeFile`` for
    anything whose loading would run code, or whose checking takes more than ``bounds`` allow;
    the messages say what to do instead.
    """
    if purpose not in ACCEPTED_FORMATS:
        raise ValueError(f"unknown purpose {purpose!r}")
    size = path.stat().st_size
    if size == 0:
        raise unsupported(purpose, "The file is empty.")
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    try:
        with limits.checking(bounds or Limits()):
            found = _sniff(path, head, size, purpose)
    except limits.OverBudget as exc:
        raise UnsafeFile(f"{exc} {OVER_BUDGET_ADVICE}") from exc
    if found.format not in ACCEPTED_FORMATS[purpose]:
        raise wrong_purpose(found.format, purpose)
    return found


def _sniff(path: Path, head: bytes, size: int, purpose: Purpose) -> Detected:
    if is_gguf(head):
        if purpose != "teacher":
            raise wrong_purpose("gguf", purpose)
        return detect_gguf(path, size)
    if header_length(head, size) is not None:
        return detect_safetensors(path, size, purpose)
    if head.startswith(b"PK\x03\x04"):
        # torch.load and np.load both decide "zip" from these first bytes, so we do too.
        return _detect_zip(path, size, purpose)
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return _detect_tar(path, size, purpose)
    refuse_if_pickle(path, head, purpose)
    if purpose == "dataset":
        return detect_text(path, head)
    if looks_like_text(head):
        raise wrong_purpose("text", purpose)
    raise unsupported(purpose, "This file is not in a format this service recognises.")


def _detect_zip(path: Path, size: int, purpose: Purpose) -> Detected:
    with readable(purpose, "zip archive"), zipfile.ZipFile(path) as zf:
        infos = guard_zip(zf, size, "zip archive")
        names = [i.filename for i in infos]
        root = single_root(names)
        if root is not None and f"{root}/archive_format" in names:
            return detect_torch_export(zf, root, purpose)
        if root is not None and f"{root}/data.pkl" in names:
            return detect_torch_zip(zf, root, names)
        members = files(infos)
        if members and all(i.filename.endswith(".npy") for i in members):
            return detect_npz(zf, members, purpose)
        if hf_root(names) is not None:
            return detect_hf_zip(zf, members)
        raise unsupported(
            purpose,
            "This zip archive is neither a PyTorch file, an npz, nor a "
            "Hugging Face model directory (no config.json).",
        )


def _detect_tar(path: Path, size: int, purpose: Purpose) -> Detected:
    if purpose != "teacher":
        reason = (
            "This is a gzip or tar archive, which only a teacher (a Hugging Face model "
            "directory) may be; upload data sets uncompressed."
        )
        raise unsupported(purpose, reason)
    return detect_hf_tar(path, size)
