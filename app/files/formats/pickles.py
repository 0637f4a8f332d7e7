"""Pickles, bare or inside archives, walked opcode by opcode and refused if loading them would
import anything beyond what the loader allows."""

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from app.files import limits
from app.files.formats.accepted import Purpose
from app.files.formats.archives import files, guard_zip
from app.files.formats.errors import (
    STATE_DICT_ADVICE,
    UnsafeFile,
    UnsupportedFormat,
    unsafe_pickle,
    unsupported,
)
from app.files.formats.streams import peek, spooled, stream_size
from app.files.pickle_scan import PickleMalformed, scan_pickle
from file_rules.pickles import Allowed, weights_only_allowed

MAX_NESTING = 2  # an archive inside an archive (pt2 sample inputs) inside one more

_PICKLE_PROTOCOLS = {2, 3, 4, 5}
_LEGACY_TORCH_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_TORCH_RAW_STORAGE = re.compile(r"(.*/)?data/\d+")


@dataclass(frozen=True)
class ScanRules:
    """Which archive members a loader unpickles (scanned strictly) and which are raw bytes."""

    allowed: Allowed
    loaded: Callable[[str], bool]
    raw: Callable[[str], bool]
    advice: str


def torch_zip_rules(allowed: Allowed, advice: str) -> ScanRules:
    # torch.load / torch.jit.load unpickle data.pkl, constants.pkl, *.debug_pkl and the like;
    # data/<n> records are raw tensor bytes that only look like anything by chance.
    return ScanRules(
        allowed=allowed,
        loaded=lambda name: name.endswith("pkl"),
        raw=lambda name: _TORCH_RAW_STORAGE.fullmatch(name) is not None,
        advice=advice,
    )


def refuse_if_pickle(path: Path, head: bytes, purpose: Purpose) -> None:
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
            raise unsupported(purpose, reason) from exc
    if offenders:
        raise unsafe_pickle(None, offenders, STATE_DICT_ADVICE)
    kind = "a torch.save file in the legacy (pre-1.6) format" if legacy else "a bare pickle"
    raise unsupported(
        purpose,
        f"This is {kind}; re-save it with torch.save's default (zip) format or as safetensors.",
    )


def scan_zip(zf: zipfile.ZipFile, rules: ScanRules, where: str, depth: int) -> None:
    for info in files(zf.infolist()):
        limits.current().check_time()
        if rules.raw(info.filename) or info.file_size == 0:
            continue
        with zf.open(info) as member:
            scan_member(member, f"{where}{info.filename}", rules, info.filename, depth, None)


def scan_member(
    stream: IO[bytes],
    where: str,
    rules: ScanRules,
    name: str,
    depth: int,
    spool_dir: Path | None,
) -> None:
    """Scan one member. Loaded ones must be clean pickles or torch zips; for the rest, anything
    that looks like a pickle is scanned too, since somebody may load it later."""
    head = peek(stream, 16)
    if head.startswith(b"PK\x03\x04"):
        _scan_nested_zip(stream, where, rules, depth, spool_dir)
    elif rules.loaded(name):
        _scan_bare_pickle(stream, head, where, rules, strict=True)
    elif head[:1] == b"\x80" and head[1:2] and head[1] in _PICKLE_PROTOCOLS:
        _scan_bare_pickle(stream, head, where, rules, strict=False)


def _scan_bare_pickle(
    stream: IO[bytes], head: bytes, where: str, rules: ScanRules, *, strict: bool
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
        raise unsafe_pickle(where, offenders, rules.advice)


def _scan_nested_zip(
    stream: IO[bytes], where: str, rules: ScanRules, depth: int, spool_dir: Path | None
) -> None:
    if depth >= MAX_NESTING:
        raise UnsafeFile(f"'{where}' nests archives more than {MAX_NESTING} deep.")
    with spooled(stream, spool_dir) as seekable:
        size = stream_size(seekable)
        with zipfile.ZipFile(seekable) as inner:
            guard_zip(inner, size, f"archive '{where}'")
            nested = torch_zip_rules(rules.allowed, rules.advice)
            scan_zip(inner, nested, f"{where}/", depth + 1)
